"""Benchmark: a deep-review-sized manuscript, built by livingreview and by rootstock's chain.

    python bench/scale.py [--sizes 0.25 0.5 1] [--repeat 3] [--no-pdf] [--keep DIR]

For each size it generates a synthetic project (at full size: 50 sections, 100,000
words, 500 CSL references cited throughout with every kind of Manubot key, about 1,900
citations, about 1,300 inline formulas, 30 figures, a numbered equation per section,
10 tables, 300 values injected from a registered analysis, about 280
cross-references), builds it once (running the analysis), then times, alternately and
``--repeat`` times:

* livingreview: a prose edit, then ``livingreview build --format html`` (the whole
  CLI: check, plan with the analysis cached, process, html), per-stage times from the
  CLI's own report; and the html stage's pandoc command alone (pandoc + Lua filters);
* the html stage's floor: pandoc 3 and citeproc alone on the same ``manuscript.md``,
  every citation resolved from the same CSL references (each under the key the text
  cites it by, so that nothing needs renaming), writing the same HTML with MathML, no
  filter of ours; timed just before and just after each build, the mean of the two
  being that run's floor; the html stage must take at most 1.2 times as long;
* rootstock: ``manubot process`` on the same content with the analysis values as
  template variables, and pandoc with rootstock's filter chain (pandoc-fignos,
  pandoc-eqnos, pandoc-tablenos, Manubot's cite filter made offline, citeproc) on the
  ``manuscript.md`` livingreview just wrote (on rootstock's pandoc 2.19.2), whose
  HTML must say the same: same visible text, internal links and numbered targets
  (``tests/equivalence.py``);
* pandoc alone on that file (the build's pandoc reading Markdown and writing HTML:
  the part no filter removes).

Then one full ``livingreview build`` adds the PDF (headless Chromium) and its time.
Each command's CPU time (its process tree's, from getrusage) is reported beside wall
time: on a shared machine it is the steadier of the two. Peak memory is the largest
total memory of each command's process tree, sampled from /proc every 200 ms as the
sum of proportional set sizes (a page shared by several processes, as Chromium's are,
counts once in all). It prints medians, ratios to rootstock, the cost per word at
each size and how it grows, checks the issue's targets, and writes the raw numbers to
``output/bench/scale.json``. A full run takes about five minutes on two cores.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "build"))
# The output comparison lives with the tests (tests/equivalence.py).
sys.path.insert(0, str(REPO / "tests"))

import yaml  # noqa: E402

from equivalence import differences  # noqa: E402
from livingreview.load.project import Project  # noqa: E402
from livingreview.render import citekeys  # noqa: E402
from livingreview.render.html import (  # noqa: E402
    lua_environment,
    pandoc_command,
    pandoc_defaults,
    pandoc_executable,
    tool_env,
)
from livingreview.render.inject import namespaces  # noqa: E402

FULL = {
    "sections": 50,
    "words": 100_000,
    "references": 500,
    "figures": 30,
    "equations": 50,
    "tables": 10,
    "values": 300,
}

# html: against rootstock's html; floor: the html stage against pandoc + citeproc alone.
TARGETS = {"html": 0.25, "floor": 1.2, "rebuild": 0.35, "memory_gb": 1.5}

GIT_ENV = {
    "GIT_AUTHOR_NAME": "Bench",
    "GIT_AUTHOR_EMAIL": "bench@example.org",
    "GIT_COMMITTER_NAME": "Bench",
    "GIT_COMMITTER_EMAIL": "bench@example.org",
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_CONFIG_NOSYSTEM": "1",
}

# --------------------------------------------------------------------------- the manuscript

WORDS = [
    "model",
    "models",
    "domain",
    "general",
    "biomedical",
    "clinical",
    "foundation",
    "pretraining",
    "corpus",
    "corpora",
    "token",
    "tokens",
    "adaptation",
    "fine-tuning",
    "benchmark",
    "benchmarks",
    "evaluation",
    "accuracy",
    "calibration",
    "retrieval",
    "prompt",
    "prompts",
    "context",
    "in-context",
    "kernel",
    "kernels",
    "regression",
    "representation",
    "representations",
    "embedding",
    "embeddings",
    "transfer",
    "task",
    "tasks",
    "dataset",
    "datasets",
    "label",
    "labels",
    "sample",
    "samples",
    "variance",
    "bias",
    "estimate",
    "estimates",
    "effect",
    "effects",
    "trial",
    "trials",
    "cohort",
    "cohorts",
    "patient",
    "patients",
    "record",
    "records",
    "note",
    "notes",
    "imaging",
    "image",
    "images",
    "sequence",
    "sequences",
    "protein",
    "proteins",
    "genome",
    "genomic",
    "expression",
    "cell",
    "cells",
    "assay",
    "assays",
    "structure",
    "structures",
    "language",
    "vision",
    "multimodal",
    "encoder",
    "decoder",
    "transformer",
    "attention",
    "layer",
    "layers",
    "parameter",
    "parameters",
    "scale",
    "scaling",
    "compute",
    "budget",
    "data",
    "quality",
    "noise",
    "shift",
    "distribution",
    "robust",
    "robustness",
    "fairness",
    "subgroup",
    "subgroups",
    "outcome",
    "outcomes",
    "risk",
    "score",
    "scores",
    "prediction",
    "predictions",
    "baseline",
    "baselines",
    "comparison",
    "comparisons",
    "ablation",
    "ablations",
    "study",
    "studies",
    "review",
    "reviews",
    "evidence",
    "result",
    "results",
    "method",
    "methods",
    "approach",
    "approaches",
    "analysis",
    "analyses",
    "signal",
    "signals",
    "feature",
    "features",
    "the",
    "a",
    "an",
    "of",
    "in",
    "on",
    "for",
    "with",
    "across",
    "between",
    "under",
    "over",
    "within",
    "without",
    "through",
    "against",
    "and",
    "or",
    "but",
    "is",
    "are",
    "was",
    "were",
    "be",
    "been",
    "remains",
    "appears",
    "suggests",
    "shows",
    "indicates",
    "supports",
    "depends",
    "varies",
    "improves",
    "reduces",
    "increases",
    "matches",
    "exceeds",
    "trails",
    "often",
    "rarely",
    "consistently",
    "modestly",
    "substantially",
]

# Inline formulas ({i}, {n}: small integers), from single symbols to fractions and sums.
FORMULAS = [
    "x_{{{i}}}",
    "n = {n}",
    "p < 0.05",
    "\\alpha_{{{i}}} + \\beta^{{2}}",
    "\\mathcal{{O}}(n \\log n)",
    "\\hat{{\\theta}} = \\frac{{1}}{{n}} \\sum_{{i=1}}^{{n}} x_{{i}}",
    "R^{{2}} = 0.{n}",
    "\\mathbb{{E}}[y \\mid x] = f(x)",
    "\\lambda_{{{i}}} \\geq 0",
    "k(x, x') = \\exp(-\\|x - x'\\|^{{2}} / 2\\sigma^{{2}})",
    "\\sqrt{{{n}}}",
    "W \\in \\mathbb{{R}}^{{d \\times {n}}}",
]

CONNECTORS = ["However,", "In contrast,", "Moreover,", "Notably,", "As a result,", "In practice,", "Overall,"]


def scaled(size: float) -> dict[str, int]:
    return {key: max(1, round(value * size)) for key, value in FULL.items()}


@dataclass
class Reference:
    item: dict
    cite: str  # the key as the text cites it


def make_references(n: int) -> list[Reference]:
    """CSL items with every kind of Manubot key; some are cited in another spelling."""
    refs = []
    for i in range(n):
        kind = i % 5
        item = {
            "type": "article-journal",
            "title": f"Synthetic study {i} of domain adaptation",
            "author": [{"family": f"Author{i}", "given": "A."}, {"family": f"Coauthor{i % 37}", "given": "B."}],
            "container-title": f"Journal of Examples {i % 11}",
            "issued": {"date-parts": [[1990 + i % 35, 1 + i % 12]]},
            "volume": str(1 + i % 40),
            "page": f"{i}-{i + 9}",
        }
        if kind == 0:
            item["id"] = f"doi:10.{1000 + i}/example.{i}"
            item["DOI"] = f"10.{1000 + i}/example.{i}"
            cite = f"doi:10.{1000 + i}/EXAMPLE.{i}" if i % 2 else item["id"]  # Manubot lower-cases DOIs
        elif kind == 1:
            item["id"] = f"arxiv:{2001 + i % 12:04d}.{10000 + i:05d}"
            cite = item["id"]
        elif kind == 2:
            item["id"] = f"pmid:{30000000 + i}"
            cite = item["id"]
        elif kind == 3:
            item["id"] = f"url:https://example.org/papers/{i}"
            item["URL"] = f"https://example.org/papers/{i}"
            cite = item["id"]
        else:
            item["id"] = f"study{i}"
            cite = item["id"]
        refs.append(Reference(item, cite))
    return refs


class Writer:
    """Deterministic prose with citations, cross-references and injected values."""

    def __init__(self, counts: dict[str, int], refs: list[Reference], seed: int = 0):
        self.rng = random.Random(seed)
        self.counts = counts
        self.refs = refs
        self.queue: list[Reference] = []
        self.values = iter(range(counts["values"]))
        self.words = 0

    def next_ref(self) -> str:
        if not self.queue:
            self.queue = self.refs[:]
            self.rng.shuffle(self.queue)
        return self.queue.pop().cite

    def citation(self) -> str:
        roll = self.rng.random()
        if roll < 0.6:
            return f" [@{self.next_ref()}]"
        if roll < 0.9:
            return f" [@{self.next_ref()}; @{self.next_ref()}]"
        return f" [see @{self.next_ref()}, p. {self.rng.randint(2, 40)}]"

    def formula(self) -> str:
        """An inline formula of the kinds reviews write: symbols, estimates, bounds."""
        template = self.rng.choice(FORMULAS)
        return "$" + template.format(i=self.rng.randint(1, 9), n=self.rng.randint(2, 99)) + "$"

    def sentence(self, extra: str = "") -> str:
        n = self.rng.randint(9, 20)
        words = [self.rng.choice(WORDS) for _ in range(n)]
        self.words += n
        # About one sentence in five holds a formula: some 1,300 at full size.
        if self.rng.random() < 0.19:
            words.insert(self.rng.randint(2, n), self.formula())
        if self.rng.random() < 0.15:
            words.insert(0, self.rng.choice(CONNECTORS))
        else:
            words[0] = words[0].capitalize()
        text = " ".join(words) + extra
        # Three sentences in ten cite: about one citation per 50 words, 1,800 citations
        # at full size (each of the 500 references several times).
        if self.rng.random() < 0.3:
            text += self.citation()
        return text + "."

    def paragraph(self, extras: list[str]) -> str:
        sentences = [self.sentence() for _ in range(self.rng.randint(4, 7))]
        for extra in extras:
            sentences[self.rng.randrange(len(sentences))] = self.sentence(extra)
        # One sentence per line, as Manubot authors write.
        return "\n".join(sentences)


def _spread(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def write_manuscript(root: Path, size: float) -> dict[str, int]:
    """Write the synthetic project into ``root`` (a git repository); return its counts."""
    counts = scaled(size)
    content = root / "content"
    (content / "images").mkdir(parents=True)
    (root / "analyses").mkdir()
    refs = make_references(counts["references"])
    writer = Writer(counts, refs)
    n = counts["sections"]
    figures, equations, tables = (_spread(counts[k], n) for k in ("figures", "equations", "tables"))
    values = _spread(counts["values"], n)
    words_per_section = counts["words"] / n
    fig = eq = tbl = 0
    for s in range(n):
        blocks = [f"## Section {s + 1}: {writer.rng.choice(WORDS)} and {writer.rng.choice(WORDS)}"]
        section_start = writer.words
        own: list[str] = []
        for _ in range(figures[s]):
            fig += 1
            label = f"fig:f{fig:02d}"
            (content / "images" / f"f{fig:02d}.svg").write_text(
                '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 120 60" width="360" height="180">'
                f'<rect x="5" y="{5 + fig % 30}" width="40" height="30" fill="#1a5fb4"/>'
                f'<rect x="60" y="10" width="40" height="{20 + fig % 30}" fill="#26a269"/></svg>\n'
            )
            own.append(f"![{writer.sentence()[:-1]}{writer.citation()}.](images/f{fig:02d}.svg){{#{label}}}")
        for _ in range(equations[s]):
            eq += 1
            own.append(f"$$ y_{{{eq}}} = \\sum_{{i=1}}^{{n}} w_{{i}} x_{{i}}^{{2}} + b_{{{eq}}} $$ {{#eq:e{eq:02d}}}")
        for _ in range(tables[s]):
            tbl += 1
            rows = "\n".join(
                f"| {writer.rng.choice(WORDS)} | {writer.rng.random():.2f} | {writer.rng.random():.2f} | "
                f"{writer.rng.randint(10, 999)} |"
                for _ in range(6)
            )
            own.append(
                "| Setting | Domain | General | n |\n|---|---:|---:|---:|\n"
                + rows
                + f"\n\nTable: {writer.sentence()[:-1]}{writer.citation()}. {{#tbl:t{tbl:02d}}}"
            )
        value_keys = [f"{{{{ synth.v{next(writer.values):03d} }}}}" for _ in range(values[s])]
        paragraphs = 0
        while writer.words - section_start < words_per_section or own or value_keys:
            extras = [f" at {value_keys.pop()}" for _ in range(min(2, len(value_keys)))]
            # About one paragraph in four refers to a figure, table or equation (each
            # target is referred to two to three times), one in ten has inline math.
            roll = writer.rng.random()
            if roll < 0.12:
                extras.append(f" (Figure @fig:f{writer.rng.randint(1, counts['figures']):02d})")
            elif roll < 0.16:
                extras.append(f", as in +@tbl:t{writer.rng.randint(1, counts['tables']):02d}")
            elif roll < 0.25:
                extras.append(f" by equation @eq:e{writer.rng.randint(1, counts['equations']):02d}")
            blocks.append(writer.paragraph(extras))
            paragraphs += 1
            if own and paragraphs % 2 == 0:
                blocks.append(own.pop(0))
            if paragraphs % 6 == 0:
                blocks.append(f"### Part {paragraphs // 6}")
        (content / f"{s + 1:02d}.section-{s + 1}.md").write_text("\n\n".join(blocks) + "\n", encoding="utf-8")
    (content / "99.back-matter.md").write_text(
        '## References {.page_break_before}\n\n<div id="refs"></div>\n', encoding="utf-8"
    )
    (content / "metadata.yaml").write_text(
        '---\ntitle: "A Synthetic Living Review at Scale"\nlang: en-US\nauthors:\n'
        "  - name: Bench Author\n    affiliations:\n      - Example University\n",
        encoding="utf-8",
    )
    (content / "manual-references.json").write_text(json.dumps([r.item for r in refs], indent=2) + "\n")
    (root / "analyses" / "synth.py").write_text(
        "# %% [markdown]\n# Values for the scaling benchmark.\n\n"
        '# %% tags=["parameters"]\n'
        f"n_values: int = {counts['values']}  # how many values to record\n\n"
        "# %%\nfrom livingreview import record\n\n"
        "for i in range(n_values):\n"
        '    record.value(f"v{i:03d}", (i * 0.6180339887) % 1, fmt="{:.3f}")\n'
    )
    (root / "manuscript.yaml").write_text(
        "repository: bench/scale\nsite_url: https://bench.example.org/scale/\nformats: [html, pdf]\n"
        "pdf:\n  timeout: 900\nanalyses:\n  synth:\n    notebook: analyses/synth.py\n"
    )
    (root / ".gitignore").write_text("/output/\n/webpage/\n")
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-q", "--no-gpg-sign", "-m", "synthetic"]):
        subprocess.run(["git", "-C", str(root), *args], check=True, env={**os.environ, **GIT_ENV}, capture_output=True)
    counts["words_written"] = writer.words
    return counts


# --------------------------------------------------------------------------- measuring


def _proportional(pid: int, rss_pages: int, page: int) -> int:
    """Proportional set size of ``pid`` (shared pages divided among their users), or RSS."""
    try:
        with open(f"/proc/{pid}/smaps_rollup", "rb") as handle:
            for line in handle:
                if line.startswith(b"Pss:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return rss_pages * page


def _tree_memory(root: int) -> int:
    """Memory of process ``root`` and all its descendants: the sum of their proportional
    set sizes, so that pages Chromium's processes share are counted once."""
    parents: dict[int, int] = {}
    rss: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as handle:
                stat = handle.read()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2 :].split()
        pid = int(entry.name)
        parents[pid] = int(fields[1])
        rss[pid] = int(fields[21])
    page = os.sysconf("SC_PAGE_SIZE")
    children: dict[int, list[int]] = {}
    for pid, ppid in parents.items():
        children.setdefault(ppid, []).append(pid)
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        total += _proportional(pid, rss.get(pid, 0), page)
        todo.extend(children.get(pid, []))
    return total


@dataclass
class Run:
    seconds: float
    peak: int
    stderr: str
    cpu: float = 0.0  # user + system seconds of the whole process tree
    marks: list[tuple[float, str]] = field(default_factory=list)
    samples: list[tuple[float, int]] = field(default_factory=list)


def measure(command: list[str], cwd: Path, env: dict[str, str] | None = None, interval: float = 0.2) -> Run:
    """Run ``command``; wall time, CPU time, peak tree memory, stderr (each line time-stamped).

    CPU time is what the tree used, waited-for grandchildren included: on a shared
    machine it varies less than wall time, which other work stretches.
    """
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    marks: list[tuple[float, str]] = []
    samples: list[tuple[float, int]] = []

    def read() -> None:
        for line in proc.stderr:
            marks.append((time.perf_counter() - start, line))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    while proc.poll() is None:
        samples.append((time.perf_counter() - start, _tree_memory(proc.pid)))
        time.sleep(interval)
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    reader.join()
    stderr = "".join(line for _, line in marks)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(command[:4])} ... failed ({proc.returncode}):\n{stderr[-3000:]}")
    return Run(seconds, max((s for _, s in samples), default=0), stderr, cpu, marks, samples)


STAGES = ("check", "plan", "execute", "process", "html", "pdf", "publish")


def stage_times(run: Run) -> dict[str, float]:
    """Per-stage seconds from the CLI's summary table."""
    times = {}
    for line in run.stderr.splitlines():
        parts = line.replace("│", " ").split()
        if len(parts) == 2 and parts[0] in STAGES + ("total",):
            times[parts[0]] = float(parts[1])
    return times


def stage_peaks(run: Run) -> dict[str, int]:
    """Peak tree memory during each stage: samples up to the line announcing its end."""
    ends = []
    for at, line in run.marks:
        words = line.replace("✓", " ").split()
        if words and words[0] in STAGES and "(" in line:
            ends.append((at, words[0]))
    peaks: dict[str, int] = {}
    previous = 0.0
    for end, stage in ends:
        inside = [rss for at, rss in run.samples if previous <= at <= end]
        peaks[stage] = max(inside, default=0)
        previous = end
    return peaks


def livingreview(root: Path, *args: str) -> Run:
    env = {**os.environ, **GIT_ENV, "NO_COLOR": "1", "TERM": "dumb", "COLUMNS": "200"}
    return measure(
        [sys.executable, "-m", "livingreview", "-C", str(root), "build", "--renderer", "lua", *args], root, env
    )


def prose_edit(root: Path, n: int) -> None:
    """What an author does between two builds: change a sentence."""
    section = sorted((root / "content").glob("[0-9]*.section-*.md"))[n % 3]
    with section.open("a", encoding="utf-8") as handle:
        handle.write(f"\nAn added sentence, edit number {n}, changes the prose and nothing else.\n")


def rootstock_process(project: Project, out: Path) -> Run:
    """``manubot process``, with the analysis values as template variables (as bench/build_overhead.py)."""
    variables = []
    for name, namespace in namespaces(project).items():
        path = out / f"{name}.json"
        recorded = namespace.keys()  # a namespace is not a mapping: it only lists its keys
        path.write_text(json.dumps({key: str(getattr(namespace, key)) for key in recorded}))
        variables.append(f"--template-variables-path={name}={path}")
    manubot = Path(sys.executable).parent / "manubot"
    return measure(
        [
            str(manubot),
            "process",
            f"--content-directory={project.content_dir}",
            f"--output-directory={out}",
            "--skip-citations",
            "--skip-remote",
            "--log-level=ERROR",
            *variables,
        ],
        project.root,
        tool_env(),
    )


def _resolver(project: Project, markdown: Path) -> citekeys.Resolver:
    text = markdown.read_text(encoding="utf-8")
    metadata = yaml.safe_load(text.split("\n...\n", 1)[0])
    return citekeys.resolver_for(project.root, metadata, text, project.output_dir / ".cache" / "manual-references.json")


def lua_html(project: Project, markdown: Path, html: Path, scratch: Path) -> Run:
    """Pandoc with the build's Lua filters, prepared as the html stage prepares them: the
    same comparison as rootstock_html, pandoc command against pandoc command."""
    resolver = _resolver(project, markdown)
    # As the html stage writes it for its page (which it renames after pandoc).
    resolver.write_data(scratch / "citekeys.json", resolver.as_cited())
    env = lua_environment(markdown.read_text(encoding="utf-8"), scratch / "citekeys.json", scratch / "citations.json")
    return measure(pandoc_command(project, markdown, html, "lua"), project.root, env)


def resolved_references(project: Project, markdown: Path, path: Path) -> int:
    """The manuscript's references as CSL JSON with every key already resolved: one item
    per key the text cites (as the build resolves it), under that key as its id, so that
    citeproc finds each citation as written. Returns how many items."""
    resolver = _resolver(project, markdown)
    by_id = {item["id"]: item for item in resolver.references.values()}
    items, seen = [], set()
    for key in sorted(resolver.keys):
        item_id = None if key.split(":", 1)[0] in ("fig", "tbl", "eq", "sec") else resolver.item_id(key)
        if item_id:
            items.append({**by_id[item_id], "id": key})
            seen.add(item_id)
    # Two spellings of one reference would be two items here (and two entries in the list).
    if len(seen) != len(items):
        raise RuntimeError(f"{len(items)} keys cite {len(seen)} references: the floor would list some twice")
    path.write_text(json.dumps(items, ensure_ascii=False), encoding="utf-8")
    return len(items)


def floor_html(project: Project, markdown: Path, html: Path, references: Path) -> Run:
    """The floor of the html stage: pandoc 3 reading the same manuscript.md, citeproc
    resolving every citation from the same CSL references (keys already resolved, see
    resolved_references) and writing the same HTML (the same defaults: MathML,
    standalone, section divs; the same CSL style and theme), with no filter of ours."""
    # The html stage's defaults files but the one with the filters (lua.yaml), whose
    # other options are given here.
    defaults = [path for path in pandoc_defaults(project, "lua") if path.name != "lua.yaml"]
    command = [
        str(pandoc_executable()),
        *(f"--defaults={path}" for path in defaults),
        "--from=markdown",
        "--wrap=preserve",
        "--metadata=link-citations:true",
        "--citeproc",
        f"--bibliography={references}",
        f"--csl={project.csl}",
        f"--include-after-body={project.html_theme}",
        f"--include-after-body={project.html_plugins}",
        f"--output={html}",
        str(markdown),
    ]
    return measure(command, project.root, tool_env())


def pandoc_alone(project: Project, markdown: Path, html: Path) -> Run:
    """Pandoc reading manuscript.md and writing HTML, nothing else: the part of either
    chain that no filter can remove, and that grows a little faster than linearly."""
    command = [
        str(pandoc_executable()),
        "--from=markdown",
        "--to=html5",
        "--standalone",
        "--mathml",
        "--section-divs",
        "--wrap=preserve",
        f"--output={html}",
        str(markdown),
    ]
    return measure(command, project.root, tool_env())


def rootstock_html(project: Project, markdown: Path, html: Path) -> Run:
    """Pandoc with rootstock's filter chain, on livingreview's manuscript.md."""
    return measure(pandoc_command(project, markdown, html, "rootstock"), project.root, tool_env())


# --------------------------------------------------------------------------- one size


def bench_size(size: float, repeat: int, pdf: bool, keep: Path | None) -> dict:
    scratch = Path(tempfile.mkdtemp(prefix=f"lr-scale-{size}-"))
    root = scratch / "project"
    root.mkdir()
    started = time.perf_counter()
    counts = write_manuscript(root, size)
    print(
        f"\n== size {size:g}: {counts['sections']} sections, {counts['words_written']:,} words, "
        f"{counts['references']} references, {counts['figures']} figures, {counts['equations']} equations, "
        f"{counts['tables']} tables, {counts['values']} injected values",
        flush=True,
    )
    cold = livingreview(root, "--format", "html")  # runs the analysis once
    project = Project.load(root)
    out = scratch / "rootstock"
    out.mkdir()
    ours, theirs, identical = [], [], []
    for n in range(repeat):
        prose_edit(root, n)
        # The floor just before and just after the build (on the manuscript.md it replaces,
        # one sentence shorter, and on the new one): on a shared machine, whatever else
        # runs then weighs on both sides of the comparison alike.
        markdown = project.output_dir / "manuscript.md"
        resolved_references(project, markdown, out / "resolved.json")
        before = floor_html(project, markdown, out / "floor.html", out / "resolved.json")
        run = livingreview(root, "--format", "html")
        resolved_references(project, markdown, out / "resolved.json")
        after = floor_html(project, markdown, out / "floor.html", out / "resolved.json")
        bare = lua_html(project, markdown, out / "lua.html", out)
        alone = pandoc_alone(project, project.output_dir / "manuscript.md", out / "alone.html")
        ours.append(
            {
                "wall": run.seconds,
                "cpu": run.cpu,
                "peak": run.peak,
                "stages": stage_times(run),
                "peaks": stage_peaks(run),
                "bare_html": bare.seconds,
                "bare_html_cpu": bare.cpu,
                "pandoc_alone_cpu": alone.cpu,
                "floor": (before.seconds + after.seconds) / 2,
                "floor_cpu": (before.cpu + after.cpu) / 2,
                "floors": [before.seconds, after.seconds],
            }
        )
        process = rootstock_process(project, out)
        html = rootstock_html(project, project.output_dir / "manuscript.md", out / "manuscript.html")
        theirs.append(
            {
                "process": process.seconds,
                "html": html.seconds,
                "process_cpu": process.cpu,
                "html_cpu": html.cpu,
                "process_peak": process.peak,
                "html_peak": html.peak,
            }
        )
        found = differences(
            (out / "manuscript.html").read_text(encoding="utf-8"),
            (project.output_dir / "manuscript.html").read_text(encoding="utf-8"),
        )
        for line in found:
            print(f"  differs from rootstock: {line}", flush=True)
        identical.append(not found)
        print(
            f"  run {n + 1}: livingreview rebuild {run.seconds:.2f} s, rootstock {process.seconds + html.seconds:.2f} s",
            flush=True,
        )
    result = {
        "size": size,
        "counts": counts,
        "cold": stage_times(cold),
        "livingreview": ours,
        "rootstock": theirs,
        "identical": identical,
        "pandoc_alone_cpu": [r["pandoc_alone_cpu"] for r in ours],
    }
    if pdf:
        prose_edit(root, repeat)
        full = livingreview(root)
        result["pdf"] = {
            "wall": full.seconds,
            "peak": full.peak,
            "stages": stage_times(full),
            "peaks": stage_peaks(full),
            "bytes": (project.output_dir / "manuscript.pdf").stat().st_size,
        }
    result["seconds"] = time.perf_counter() - started
    if keep:
        shutil.copytree(root, keep / f"size-{size:g}", dirs_exist_ok=True)
    shutil.rmtree(scratch, ignore_errors=True)
    return result


# --------------------------------------------------------------------------- report


def _median(values) -> float:
    values = list(values)
    return statistics.median(values) if values else 0.0


def _mb(n: float) -> str:
    return f"{n / 2**20:,.0f} MB"


def summarise(result: dict) -> dict:
    ours, theirs = result["livingreview"], result["rootstock"]
    s = {
        "process": _median(r["stages"].get("process", 0) for r in ours),
        "html": _median(r["stages"].get("html", 0) for r in ours),
        "rebuild": _median(r["wall"] for r in ours),
        "rs_process": _median(r["process"] for r in theirs),
        "rs_html": _median(r["html"] for r in theirs),
        "peak_html": max(r["peaks"].get("html", 0) for r in ours),
        "peak_rebuild": max(r["peak"] for r in ours),
        "rs_peak_process": max(r["process_peak"] for r in theirs),
        "rs_peak_html": max(r["html_peak"] for r in theirs),
        "words": result["counts"]["words_written"],
    }
    s["rs_rebuild"] = _median(r["process"] + r["html"] for r in theirs)
    s["bare_html"] = _median(r["bare_html"] for r in ours)
    s["cpu_html"] = _median(r["bare_html_cpu"] for r in ours)
    s["cpu_rebuild"] = _median(r["cpu"] for r in ours)
    s["rs_cpu_html"] = _median(r["html_cpu"] for r in theirs)
    s["rs_cpu_rebuild"] = _median(r["process_cpu"] + r["html_cpu"] for r in theirs)
    s["cpu_alone"] = _median(result["pandoc_alone_cpu"])
    s["floor"] = _median(r["floor"] for r in ours)
    s["cpu_floor"] = _median(r["floor_cpu"] for r in ours)
    s["floor_ratios"] = [r["stages"].get("html", 0) / r["floor"] for r in ours]
    if "pdf" in result:
        s["pdf"] = result["pdf"]["stages"].get("pdf", 0.0)
        s["peak_pdf"] = result["pdf"]["peaks"].get("pdf", 0)
        s["peak_full"] = result["pdf"]["peak"]
    return s


def print_size(result: dict, s: dict, repeat: int) -> None:
    print(f"\nsize {result['size']:g} ({s['words']:,} words), medians of {repeat} runs")
    print(f"{'stage':<28} {'livingreview':>13} {'rootstock':>10} {'ratio':>7}   {'peak memory (lr / rootstock)':>30}")
    rows = [
        ("process (manubot process)", s["process"], s["rs_process"], "", _mb(s["rs_peak_process"])),
        ("html (pandoc + filters)", s["html"], s["rs_html"], _mb(s["peak_html"]), _mb(s["rs_peak_html"])),
        ("prose-edit rebuild, whole", s["rebuild"], s["rs_rebuild"], _mb(s["peak_rebuild"]), ""),
    ]
    for name, ours, theirs, peak_ours, peak_theirs in rows:
        ratio = f"{ours / theirs:.2f}x" if theirs else ""
        memory = f"{peak_ours or '-'} / {peak_theirs or '-'}"
        print(f"{name:<28} {ours:>12.2f}s {theirs:>9.2f}s {ratio:>7}   {memory:>30}")
    print(
        f"{'pandoc + filters, bare':<28} {s['bare_html']:>12.2f}s {s['rs_html']:>9.2f}s "
        f"{s['bare_html'] / s['rs_html']:>6.2f}x   (the commands alone, same manuscript.md)"
    )
    print(
        f"{'  CPU time':<28} {s['cpu_html']:>12.2f}s {s['rs_cpu_html']:>9.2f}s {s['cpu_html'] / s['rs_cpu_html']:>6.2f}x"
    )
    print(
        f"{'rebuild, CPU time':<28} {s['cpu_rebuild']:>12.2f}s {s['rs_cpu_rebuild']:>9.2f}s "
        f"{s['cpu_rebuild'] / s['rs_cpu_rebuild']:>6.2f}x"
    )
    if "pdf" in s:
        print(f"{'pdf (Chromium)':<28} {s['pdf']:>12.2f}s {'':>10} {'':>7}   {_mb(s['peak_pdf']) + ' / -':>30}")
    print(
        f"html stage against its floor (pandoc 3 + citeproc alone, keys already resolved): "
        f"floor {s['floor']:.2f}s, html stage {s['html']:.2f}s, {s['html'] / s['floor']:.2f}x "
        f"(each run: {', '.join(f'{r:.2f}x' for r in s['floor_ratios'])}; CPU: floor {s['cpu_floor']:.2f}s, "
        f"pandoc + filters {s['cpu_html']:.2f}s, {s['cpu_html'] / s['cpu_floor']:.2f}x)"
    )
    print(
        f"same numbers, references, citations and text from both chains: {'yes' if all(result['identical']) else 'NO'}"
        f" ({sum(result['identical'])}/{len(result['identical'])} runs)"
    )


def growth(summaries: list[dict]) -> tuple[list[str], bool]:
    """Cost per 1,000 words at each size, and the marginal cost of each step up.

    Measured in CPU time, which other work on the machine disturbs less than wall time.
    Pandoc's own reading and writing is not quite linear (it is the same in both
    chains), so linearity is judged on what the build adds to it (its filters,
    citeproc, the Python around pandoc): the last step up may cost at most 25% more
    per word than the first.
    """
    lines = [
        f"{'size':>6} {'words':>9} {'html wall':>10} {'html CPU':>9} {'pandoc alone':>13} "
        f"{'added':>7} {'rootstock CPU':>14}   (ms per 1,000 words)"
    ]
    for s in summaries:
        k = s["words"] / 1000
        added = s["cpu_html"] - s["cpu_alone"]
        lines.append(
            f"{s['size']:>6g} {s['words']:>9,} {1000 * s['html'] / k:>10.1f} {1000 * s['cpu_html'] / k:>9.1f} "
            f"{1000 * s['cpu_alone'] / k:>13.1f} {1000 * added / k:>7.1f} {1000 * s['rs_cpu_html'] / k:>14.1f}"
        )
    linear = True
    if len(summaries) >= 3:

        def steps(value) -> list[float]:
            return [
                (value(b) - value(a)) / ((b["words"] - a["words"]) / 1000)
                for a, b in zip(summaries, summaries[1:], strict=False)
            ]

        added = steps(lambda s: s["cpu_html"] - s["cpu_alone"])
        alone = steps(lambda s: s["cpu_alone"])
        lines.append(
            "marginal CPU per 1,000 words between sizes: added by livingreview "
            + ", ".join(f"{1000 * x:.1f} ms" for x in added)
            + "; pandoc alone "
            + ", ".join(f"{1000 * x:.1f} ms" for x in alone)
        )
        linear = added[-1] <= 1.25 * added[0] + 0.002
    return lines, linear


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=float, nargs="+", default=[0.25, 0.5, 1.0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-pdf", dest="pdf", action="store_false", help="skip the PDF build")
    parser.add_argument("--keep", type=Path, help="copy each generated project into this folder")
    parser.add_argument("--output", type=Path, default=REPO / "output" / "bench" / "scale.json")
    args = parser.parse_args(argv)
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)

    started = time.perf_counter()
    results, summaries = [], []
    for size in sorted(args.sizes):
        result = bench_size(size, args.repeat, args.pdf, args.keep)
        summary = summarise(result) | {"size": size}
        print_size(result, summary, args.repeat)
        results.append(result)
        summaries.append(summary)

    print("\nGrowth with size")
    lines, linear = growth(summaries)
    print("\n".join(lines))
    full = summaries[-1]
    html_ratio = full["html"] / full["rs_html"]
    floor_ratio = full["html"] / full["floor"]
    rebuild_ratio = full["rebuild"] / full["rs_rebuild"]
    peaks = [s["peak_rebuild"] for s in summaries] + [s.get("peak_full", 0) for s in summaries]
    print(
        f"\nCPU time at size {full['size']:g}: pandoc + Lua filters {full['cpu_html'] / full['rs_cpu_html']:.2f}x "
        f"pandoc + rootstock's filters; prose-edit rebuild {full['cpu_rebuild'] / full['rs_cpu_rebuild']:.2f}x"
    )
    checks = [
        (
            f"html stage {html_ratio:.2f}x rootstock's filter chain (target <= {TARGETS['html']}x)",
            html_ratio <= TARGETS["html"],
        ),
        (
            f"html stage {full['html']:.2f} s, {floor_ratio:.2f}x its floor, pandoc + citeproc alone "
            f"({full['floor']:.2f} s; target <= {TARGETS['floor']}x)",
            floor_ratio <= TARGETS["floor"],
        ),
        (
            f"prose-edit rebuild {rebuild_ratio:.2f}x rootstock's process + html (target <= {TARGETS['rebuild']}x)",
            rebuild_ratio <= TARGETS["rebuild"],
        ),
        (
            "what the build adds to pandoc grows linearly with size"
            if linear
            else "what the build adds to pandoc grows faster than linearly",
            linear,
        ),
        (
            f"peak memory {max(peaks) / 2**30:.2f} GB, PDF build included (target <= {TARGETS['memory_gb']} GB)",
            max(peaks) <= TARGETS["memory_gb"] * 2**30,
        ),
        ("same output as rootstock's chain", all(all(r["identical"]) for r in results)),
    ]
    if args.pdf:
        checks.append(
            (f"PDF of the size-{full['size']:g} manuscript built in {full.get('pdf', 0):.1f} s", full.get("pdf", 0) > 0)
        )
    print(f"\nTargets (at size {full['size']:g})")
    for text, ok in checks:
        print(f"  [{'ok' if ok else 'MISSED'}] {text}")
    print(f"\nbenchmark wall time: {time.perf_counter() - started:.0f} s")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps({"summaries": summaries, "results": results}, indent=2, default=str))
    print(f"raw numbers: {args.output}")
    return 0 if all(ok for _, ok in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
