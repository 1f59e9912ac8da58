"""Stage-by-stage progress on the terminal, and the per-stage timing summary."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from rich.console import Console
from rich.markup import escape
from rich.status import Status


@dataclass
class Progress:
    console: Console
    timings: dict[str, float] = field(default_factory=dict)
    _status: Status | None = field(default=None, init=False, repr=False)
    _heading: str = field(default="", init=False, repr=False)

    @contextlib.contextmanager
    def stage(self, name: str, description: str) -> Iterator[None]:
        start = time.perf_counter()
        heading = f"[bold]{name}[/]: {description}"
        # Rich draws the status line only on an interactive terminal: piped or in CI, a
        # stage prints its one closing line and nothing else.
        with self.console.status(heading) as status:
            outer = self._status, self._heading
            self._status, self._heading = status, heading
            try:
                yield
            except BaseException:
                self.console.print(f"[red]✗[/] {name:<8} {description}")
                raise
            finally:
                self._status, self._heading = outer
        elapsed = time.perf_counter() - start
        self.timings[name] = elapsed
        self.console.print(f"[green]✓[/] {name:<8} {description} [dim]({elapsed:.2f} s)[/]")

    def step(self, text: str) -> None:
        """What the running stage is doing now, on its status line: a long stage is not a frozen screen.

        Off a terminal nothing is printed (a CI log gets each stage's closing line only);
        outside a stage a step is ignored, so that library calls may report steps always.
        """
        if self._status is not None:
            self._status.update(f"{self._heading} [dim]· {escape(text)}[/]")
            # Drawn now, not at the next tick of the spinner: a step that ends within a
            # tick would otherwise never be seen.
            self._status._live.refresh()

    def summary(self) -> None:
        # Imported here: a no-op build prints no table, and starts 10 ms sooner.
        from rich.table import Table

        table = Table(title="Stage timings", title_justify="left", show_edge=False)
        table.add_column("stage")
        table.add_column("seconds", justify="right")
        for name, seconds in self.timings.items():
            table.add_row(name, f"{seconds:.2f}")
        table.add_row("[bold]total[/]", f"[bold]{sum(self.timings.values()):.2f}[/]")
        self.console.print(table)
