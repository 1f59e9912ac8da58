"""Reading analysis notebooks: text formats via Jupytext, and the parameters cell.

Planning needs only a notebook's *summary* (code digest, parameters, imports). It is
cached under the hash of the notebook's bytes, so a build whose notebooks did not
change neither parses them nor imports Jupytext (a quarter of a second).
"""

from __future__ import annotations

import ast
import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from livingreview.load.config import CONFIG_NAME
from livingreview.util import atomic
from livingreview.util.errors import AnalysisError, Location, Problem

if TYPE_CHECKING:
    import nbformat

SUMMARY_VERSION = "1"  # bump when Summary or the code digest changes

TYPES = {"int": int, "float": float, "str": str, "bool": bool, "list": list, "dict": dict}


@dataclass(frozen=True)
class Parameter:
    name: str
    type: str
    default: Any
    help: str
    line: int


def read(path: Path) -> nbformat.NotebookNode:
    # Imported only when a notebook changed: a plan from cached summaries never pays for Jupytext.
    import jupytext

    try:
        notebook = jupytext.read(path)
    except FileNotFoundError:
        raise AnalysisError(
            Problem(Location(path), "notebook not found", f"check 'notebook:' in {CONFIG_NAME}")
        ) from None
    except Exception as exc:  # jupytext raises many kinds for malformed input
        raise AnalysisError(Problem(Location(path), f"cannot read notebook: {exc}")) from None
    notebook.metadata.setdefault("kernelspec", {"name": "python3", "display_name": "Python 3", "language": "python"})
    return notebook


def parameters_cell(notebook: nbformat.NotebookNode) -> int | None:
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type == "code" and "parameters" in cell.metadata.get("tags", []):
            return index
    return None


def _type_of(annotation: ast.expr | None, default: Any) -> str:
    if isinstance(annotation, ast.Name) and annotation.id in TYPES:
        return annotation.id
    return type(default).__name__ if type(default).__name__ in TYPES else "any"


def parameters(notebook: nbformat.NotebookNode, path: Path) -> dict[str, Parameter]:
    """Parameters declared in the cell tagged 'parameters', with types and defaults."""
    index = parameters_cell(notebook)
    if index is None:
        raise AnalysisError(
            Problem(
                Location(path), "no cell tagged 'parameters'", "tag the cell of defaults: '# %% tags=[\"parameters\"]'"
            )
        )
    source = notebook.cells[index].source
    try:
        tree = ast.parse(source)
    except SyntaxError as exc:
        raise AnalysisError(Problem(Location(path), f"parameters cell: {exc.msg} (cell line {exc.lineno})")) from None
    lines = source.splitlines()
    found = {}
    for node in tree.body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
            name, annotation, value_node = node.target.id, node.annotation, node.value
        elif isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            name, annotation, value_node = node.targets[0].id, None, node.value
        else:
            continue
        try:
            default = ast.literal_eval(value_node)
        except ValueError:
            raise AnalysisError(
                Problem(Location(path), f"parameter {name!r}: default must be a literal (number, string, list, ...)")
            ) from None
        text = lines[node.lineno - 1]
        comment = text.split("#", 1)[1].strip() if "#" in text else ""
        found[name] = Parameter(name, _type_of(annotation, default), default, comment, node.lineno)
    return found


def code_digest(notebook: nbformat.NotebookNode) -> str:
    """Hash of the code cells' sources: prose, outputs and metadata do not matter."""
    sources = [cell.source.strip() for cell in notebook.cells if cell.cell_type == "code"]
    return hashlib.sha256(json.dumps(sources).encode()).hexdigest()


def imported_modules(notebook: nbformat.NotebookNode) -> set[str]:
    """Top-level names of modules imported by the code cells."""
    names: set[str] = set()
    for cell in notebook.cells:
        if cell.cell_type != "code":
            continue
        try:
            tree = ast.parse(
                "\n".join(line for line in cell.source.splitlines() if not line.lstrip().startswith(("%", "!")))
            )
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module.split(".")[0])
    return names


@dataclass(frozen=True)
class Summary:
    """What planning needs from a notebook."""

    code_digest: str
    parameters: dict[str, Parameter]
    imports: frozenset[str]


def summarize(path: Path, cache_dir: Path) -> Summary:
    """The notebook's summary, from ``cache_dir`` when its bytes were summarised before."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise AnalysisError(
            Problem(Location(path), "notebook not found", f"check 'notebook:' in {CONFIG_NAME}")
        ) from None
    cached = cache_dir / f"{hashlib.sha256(SUMMARY_VERSION.encode() + data).hexdigest()}.json"
    try:
        raw = json.loads(cached.read_text(encoding="utf-8"))
        return Summary(
            raw["code_digest"],
            {name: Parameter(**fields) for name, fields in raw["parameters"].items()},
            frozenset(raw["imports"]),
        )
    except (OSError, ValueError, KeyError, TypeError):
        pass  # absent or unreadable: summarise again
    notebook = read(path)
    summary = Summary(code_digest(notebook), parameters(notebook, path), frozenset(imported_modules(notebook)))
    record = {
        "code_digest": summary.code_digest,
        "parameters": {name: asdict(p) for name, p in summary.parameters.items()},
        "imports": sorted(summary.imports),
    }
    cached.parent.mkdir(parents=True, exist_ok=True)
    atomic.write_text(cached, json.dumps(record))
    return summary
