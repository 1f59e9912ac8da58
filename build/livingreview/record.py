"""Record API, imported inside analysis notebooks.

    from livingreview import record
    record.value("max_error", err, fmt="{:.1e}", tolerance=1e-9)
    record.value("n_rows", 211)
    record.table("summary", rows, columns=["group", "k", "d"])
    record.figure("forest", fig, caption="Pooled effects by modality.")

The executor tells the kernel where to write through environment variables. Each
record is appended to ``records.jsonl`` in the staging folder of the run; the executor
assembles the manifest (with provenance) only once the whole notebook has succeeded.
Run outside the executor (e.g. interactively), records go to ``./.livingreview-records``.
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path
from typing import Any

RECORD_DIR_ENV = "LIVINGREVIEW_RECORD_DIR"
_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*$")


def _record_dir() -> Path:
    directory = Path(os.environ.get(RECORD_DIR_ENV, ".livingreview-records"))
    (directory / "figures").mkdir(parents=True, exist_ok=True)
    return directory


def _cell() -> int | None:
    """Execution count of the running cell; the executor maps it to a cell index."""
    try:
        # Here, not at the top: a script may record without IPython installed.
        from IPython import get_ipython

        shell = get_ipython()
        # Not shell.execution_count: IPython has already advanced it to the *next* cell's
        # number while this one runs. The input history holds one entry per executed cell
        # after a leading empty one, so its length minus one is this cell's number.
        return len(shell.history_manager.input_hist_raw) - 1 if shell else None
    except ImportError:
        return None


def _check_key(key: str) -> None:
    if not _KEY.match(key):
        raise ValueError(f"record key {key!r} must be a Python identifier (letters, digits, _)")


def _append(entry: dict[str, Any]) -> None:
    entry["cell_execution_count"] = _cell()
    line = json.dumps(entry, allow_nan=False, ensure_ascii=False)
    with open(_record_dir() / "records.jsonl", "a", encoding="utf-8") as handle:
        handle.write(line + "\n")


def _plain(value: Any) -> Any:
    """numpy / torch scalars to Python numbers, so JSON keeps their type."""
    if hasattr(value, "item") and callable(value.item):
        try:
            return value.item()
        except (ValueError, RuntimeError):
            pass
    return value


def value(
    key: str,
    value: Any,
    *,
    fmt: str | None = None,
    unit: str = "",
    tolerance: float | None = None,
    relative: bool = False,
    description: str = "",
) -> Any:
    """Record a scalar (float, int, bool or str) for injection as ``{{ analysis.key }}``.

    ``fmt`` is a ``str.format`` spec such as ``"{:.3f}"`` or ``"{:,}"``. ``tolerance`` is
    the agreement a reviewer's re-run must reach: absolute, or relative if ``relative``.
    Ints and strings are compared exactly.
    """
    _check_key(key)
    value = _plain(value)
    if isinstance(value, bool):
        kind = "bool"
    elif isinstance(value, int):
        kind = "int"
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"record.value({key!r}): {value} is not a finite number")
        kind = "float"
    elif isinstance(value, str):
        kind = "str"
    else:
        raise TypeError(f"record.value({key!r}): unsupported type {type(value).__name__}; use record.table")
    if fmt is None:
        fmt = "{:.3g}" if kind == "float" else "{}"
    formatted = fmt.format(value)
    _append(
        {
            "kind": "value",
            "key": key,
            "type": kind,
            "value": value,
            "fmt": fmt,
            "formatted": formatted,
            "unit": unit,
            "tolerance": tolerance if kind == "float" else 0,
            "relative": relative,
            "description": description,
        }
    )
    return value


def table(
    key: str,
    rows: list[dict[str, Any]] | Any,
    *,
    columns: list[str] | None = None,
    caption: str = "",
    fmt: dict[str, str] | None = None,
    tolerance: float | None = None,
) -> None:
    """Record a small table (list of dicts, or a pandas DataFrame) for injection as a Markdown table."""
    _check_key(key)
    if hasattr(rows, "to_dict"):
        rows = rows.to_dict(orient="records")
    rows = [{k: _plain(v) for k, v in row.items()} for row in rows]
    columns = columns or (list(rows[0]) if rows else [])
    if len(rows) > 200:
        raise ValueError(f"record.table({key!r}): {len(rows)} rows is not a small table (max 200)")
    _append(
        {
            "kind": "table",
            "key": key,
            "type": "table",
            "value": rows,
            "columns": columns,
            "fmt": fmt or {},
            "caption": caption,
            "tolerance": tolerance,
            "relative": False,
        }
    )


def figure(key: str, fig: Any, *, caption: str, png: bool = True, dpi: int = 150) -> None:
    """Save a matplotlib figure as SVG (and PNG) for ``{{ analysis.key }}`` as a numbered figure."""
    _check_key(key)
    directory = _record_dir() / "figures"
    files = {"svg": f"figures/{key}.svg"}
    # Here, not at the top: an analysis without figures never imports matplotlib (0.4 s).
    import matplotlib

    # Fixed metadata and element ids (matplotlib salts them randomly by default), so the
    # same figure gives the same bytes on every run and a permalink can be reproduced.
    with matplotlib.rc_context({"svg.hashsalt": key}):
        fig.savefig(directory / f"{key}.svg", format="svg", bbox_inches="tight", metadata={"Date": None})
    if png:
        fig.savefig(directory / f"{key}.png", format="png", dpi=dpi, bbox_inches="tight")
        files["png"] = f"figures/{key}.png"
    _append({"kind": "figure", "key": key, "type": "figure", "caption": caption, "files": files})
