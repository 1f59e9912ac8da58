"""The analyses on a Dask cluster: the local executor's results, worker deaths, GPU scheduling.

One real LocalCluster of 2 worker processes (1 thread each) is shared by the module; the
CLI is pointed at it with ``--scheduler``. Workers that die are restarted by their nanny.
"""

from __future__ import annotations

import json
import os
import platform
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dask
import pytest
from distributed import Client, LocalCluster

from test_analyses import cli, states, write_project

ALLOWED_FAILURES = 2


@dataclass
class Cluster:
    address: str
    client: Client

    def workers(self) -> dict[str, dict]:
        return self.client.scheduler_info(n_workers=-1)["workers"]

    def wait_for(self, count: int, timeout: float = 60) -> None:
        """Until exactly ``count`` workers are connected (a killed one is restarted by its nanny)."""
        deadline = time.time() + timeout
        while len(self.workers()) != count:
            assert time.time() < deadline, f"expected {count} workers, have {list(self.workers())}"
            time.sleep(0.2)


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    with dask.config.set({"distributed.scheduler.allowed-failures": ALLOWED_FAILURES}):
        local = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None)
    with local, Client(local) as client:
        yield Cluster(local.scheduler_address, client)


def manifest(root: Path, name: str) -> dict:
    return json.loads((root / "output" / "analyses" / name / "manifest.json").read_text())


def comparable(found: dict) -> dict:
    """A manifest without what records when and where it ran (and the notebook's random cell ids)."""
    kept = {k: v for k, v in found.items() if k not in ("started", "wall_time_s", "executor", "seal")}
    # The executed notebook holds Papermill's timestamps; the figures must be byte-identical.
    kept["files"] = {k: v for k, v in found["files"].items() if not k.endswith(".ipynb")}
    kept["records"] = found["records"]  # cell ids included: they follow the cell's place, not chance
    return kept


def problems(stderr: str) -> str:
    """The error report (title and problems) of a failed run, whitespace-normalised."""
    return " ".join(stderr[stderr.index("error:") :].split())


def test_dask_gives_the_local_executors_results_and_cache(tmp_path: Path, cluster: Cluster):
    root = write_project(tmp_path / "p", names=("demo", "other"), figure=True)
    assert cli(root, "run").returncode == 0
    local = {name: manifest(root, name) for name in ("demo", "other")}
    result = cli(root, "run", "--force", "--scheduler", cluster.address)
    assert result.returncode == 0, result.stderr
    assert re.search(r"demo: ran in [\d.]+ s on tcp://", result.stderr)
    for name in ("demo", "other"):
        remote = manifest(root, name)
        assert comparable(remote) == comparable(local[name])
        assert local[name]["executor"] == {"kind": "local"}
        assert remote["executor"]["kind"] == "dask" and remote["executor"]["worker"] in cluster.workers()
        # Provenance is the worker's: here, the same host as this test.
        assert remote["device"]["host"] == platform.node() and remote["device"]["class"] == "cpu"
        figures = sorted((root / "output" / "analyses" / name / "figures").iterdir())
        assert [f.name for f in figures] == [f"curve_{name}.png", f"curve_{name}.svg"]
    assert not list((root / "output" / "analyses").glob(".staging-*"))
    # The same cache key: a local run and a build take the cluster's results as they are.
    assert states(cli(root, "run")) == {"demo": "cached", "other": "cached"}
    built = cli(root, "build", "--executor", "dask")
    assert built.returncode == 0, built.stderr
    assert ">573.0</a>" in (root / "output" / "manuscript.html").read_text()


def test_error_in_a_notebook_is_reported_as_locally(tmp_path: Path, cluster: Cluster):
    root = write_project(tmp_path / "p", names=("demo", "other"))
    config = root / "manuscript.yaml"
    config.write_text(config.read_text().replace("  other:\n", "  other:\n    parameters: {fail: true}\n", 1))
    local = cli(root, "run")
    assert local.returncode == 5
    partial = root / "output" / "analyses" / "other.failed.ipynb"
    local_partial = json.loads(partial.read_text())
    partial.unlink()
    remote = cli(root, "run", "--force", "--scheduler", cluster.address)
    assert remote.returncode == 5
    assert problems(remote.stderr) == problems(local.stderr)
    assert "analysis 'other' raised RuntimeError: deliberate failure in other" in problems(remote.stderr)
    assert "partial notebook with the traceback: output/analyses/other.failed.ipynb" in problems(remote.stderr)
    remote_partial = json.loads(partial.read_text())
    assert [c["source"] for c in remote_partial["cells"]] == [c["source"] for c in local_partial["cells"]]
    assert "deliberate failure in other" in json.dumps(remote_partial["cells"][-1]["outputs"])
    assert not (root / "output" / "analyses" / "other").exists()
    assert manifest(root, "demo")["executor"]["kind"] == "dask"


def test_a_worker_killed_mid_analysis_is_replaced_by_a_retry(tmp_path: Path, cluster: Cluster):
    root = write_project(tmp_path / "p")
    started = tmp_path / "started"
    notebook = root / "analyses" / "demo.py"
    notebook.write_text(
        notebook.read_text().replace(
            "if fail:", f"import pathlib, time\npathlib.Path({str(started)!r}).touch()\ntime.sleep(3)\nif fail:"
        )
    )
    run = subprocess.Popen(
        [sys.executable, "-m", "livingreview", "-C", str(root), "run", "--scheduler", cluster.address],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 60
    while not started.exists():
        assert time.time() < deadline and run.poll() is None, "the analysis never started"
        time.sleep(0.1)
    started.unlink()
    running = [
        w for w, keys in cluster.client.processing().items() if any(k.startswith("analysis-demo-") for k in keys)
    ]
    assert len(running) == 1
    victim = running[0]
    pid = cluster.client.run(os.getpid, workers=[victim])[victim]
    os.kill(pid, signal.SIGKILL)
    _, stderr = run.communicate(timeout=120)
    assert run.returncode == 0, stderr
    assert started.exists(), "the analysis did not run again"
    result = manifest(root, "demo")
    assert result["executor"]["worker"] != victim
    assert result["records"]["total"]["value"] == 573.0
    cluster.wait_for(2)


def test_an_analysis_that_always_kills_its_worker_fails_clearly(tmp_path: Path):
    # executor from manuscript.yaml, no scheduler: the CLI starts (and stops) its own LocalCluster.
    root = write_project(tmp_path / "p", names=("demo", "other"))
    config = root / "manuscript.yaml"
    config.write_text(config.read_text() + "executor: {kind: dask, retries: 1}\n")
    notebook = root / "analyses" / "demo.py"
    notebook.write_text(
        notebook.read_text().replace(
            "if fail:", "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)  # the Dask worker\nif fail:"
        )
    )
    result = cli(root, "run")
    assert result.returncode == 5, result.stderr
    message = problems(result.stderr)
    assert "error: analysis failed" in message
    assert re.search(
        r"analyses/demo.py: analysis 'demo' failed: its Dask worker died 2 times \(last on tcp://[\d.:]+\)", message
    ), message
    assert "hint: the analysis may exhaust the worker's memory" in message
    analyses = root / "output" / "analyses"
    assert not (analyses / "demo").exists() and not (analyses / "demo.failed.ipynb").exists()
    assert not list(analyses.glob(".staging-*"))
    assert manifest(root, "other")["executor"]["kind"] == "dask"


def _gpu_project(root: Path) -> Path:
    root = write_project(root)
    config = root / "manuscript.yaml"
    config.write_text(
        config.read_text().replace("      full: {n: 1000}\n", "      full: {n: 1000}\n    gpu_profiles: [ci, full]\n")
    )
    return root


def test_a_gpu_analysis_without_a_gpu_worker_fails_before_running(tmp_path: Path, cluster: Cluster):
    root = _gpu_project(tmp_path / "p")
    result = cli(root, "run", "--profile", "full", "--scheduler", cluster.address)
    assert result.returncode == 5
    message = problems(result.stderr)
    assert "error: analyses cannot be scheduled" in message
    assert (
        "manuscript.yaml: analyses.demo.gpu_profiles: analysis 'demo' needs a GPU (profile 'full' is in its "
        "gpu_profiles), but none of the 2 Dask workers advertises the resource 'GPU'"
    ) in message
    assert "hint: start GPU workers with 'dask worker ADDRESS --resources GPU=1', or build with --profile ci" in message
    assert not (root / "output" / "analyses" / "demo").exists()
    # ci runs anywhere, even when listed in gpu_profiles.
    result = cli(root, "run", "--profile", "ci", "--scheduler", cluster.address)
    assert result.returncode == 0, result.stderr
    assert manifest(root, "demo")["profile"] == "ci"


def test_a_gpu_analysis_runs_on_the_worker_that_advertises_a_gpu(tmp_path: Path, cluster: Cluster):
    root = _gpu_project(tmp_path / "p")
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "dask",
            "worker",
            cluster.address,
            "--nthreads",
            "1",
            "--resources",
            "GPU=1",
            "--no-dashboard",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        cluster.wait_for(3)
        gpu = [a for a, info in cluster.workers().items() if info.get("resources", {}).get("GPU")]
        assert len(gpu) == 1
        result = cli(root, "run", "--profile", "full", "--scheduler", cluster.address)
        assert result.returncode == 0, result.stderr
        assert manifest(root, "demo")["executor"]["worker"] == gpu[0]
        assert manifest(root, "demo")["parameters"]["n"] == 1000
    finally:
        worker.terminate()
        worker.wait(timeout=60)
    cluster.wait_for(2)


def test_scheduler_with_the_local_executor_is_a_configuration_error(tmp_path: Path):
    root = write_project(tmp_path / "p")
    result = cli(root, "run", "--executor", "local", "--scheduler", "tcp://127.0.0.1:1")
    assert result.returncode == 2
    assert "--scheduler: a scheduler address needs --executor dask" in problems(result.stderr)
    config = root / "manuscript.yaml"
    config.write_text(config.read_text() + "executor: {scheduler: 'tcp://127.0.0.1:1'}\n")
    result = cli(root, "run")
    assert result.returncode == 2
    assert "executor: a scheduler address needs kind: dask" in problems(result.stderr)


def test_an_unreachable_scheduler_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT", "2s")
    root = write_project(tmp_path / "p")
    result = cli(root, "run", "--scheduler", "tcp://127.0.0.1:1")
    assert result.returncode == 4
    message = problems(result.stderr)
    assert "Dask scheduler: tcp://127.0.0.1:1: cannot be reached: Timed out trying to connect" in message
    assert not (root / "output" / "analyses" / "demo").exists()
