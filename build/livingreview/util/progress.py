"""Stage-by-stage progress on the terminal, and the per-stage timing summary."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from rich.console import Console
from rich.table import Table


@dataclass
class Progress:
    console: Console
    timings: dict[str, float] = field(default_factory=dict)

    @contextlib.contextmanager
    def stage(self, name: str, description: str) -> Iterator[None]:
        start = time.perf_counter()
        with self.console.status(f"[bold]{name}[/]: {description}"):
            try:
                yield
            except BaseException:
                self.console.print(f"[red]✗[/] {name:<8} {description}")
                raise
        elapsed = time.perf_counter() - start
        self.timings[name] = elapsed
        self.console.print(f"[green]✓[/] {name:<8} {description} [dim]({elapsed:.2f} s)[/]")

    def summary(self) -> None:
        table = Table(title="Stage timings", title_justify="left", show_edge=False)
        table.add_column("stage")
        table.add_column("seconds", justify="right")
        for name, seconds in self.timings.items():
            table.add_row(name, f"{seconds:.2f}")
        table.add_row("[bold]total[/]", f"[bold]{sum(self.timings.values()):.2f}[/]")
        self.console.print(table)
