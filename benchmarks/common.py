"""Helpers shared by the benchmark scripts: data paths, machine description, result files."""

from __future__ import annotations

import fcntl
import json
import os
import platform
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.metadata import version
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
DEFAULT_DATA_HOME = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "matbench"


def official_folds(parser, text: str) -> list[int]:
    """``--folds`` as fold numbers; ``parser`` refuses any outside Matbench's official five."""
    from skgnn.model_selection import MatbenchKFold

    try:
        folds = [int(f) for f in text.split(",")]
    except ValueError:
        folds = None
    if folds is None or not set(folds) <= set(range(MatbenchKFold().get_n_splits())):
        parser.error(f"--folds must be among 0,1,2,3,4; got {text!r}")
    return folds


def data_home(option: str | None = None) -> str:
    """The Matbench data folder: the option, else $MATMINER_DATA, else the shared one."""
    return option or os.environ.get("MATMINER_DATA") or str(DEFAULT_DATA_HOME)


def machine() -> dict:
    """What the numbers were measured on."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as handle:
            cpu = next(line.split(":", 1)[1].strip() for line in handle if "model name" in line)
    except (OSError, StopIteration):
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "packages": {
            name: version(name)
            for name in (
                "skgnn",
                "torch",
                "scikit-learn",
                "skorch",
                "pymatgen",
                "matminer",
                "numpy",
            )
        },
    }


def write_json(path: Path, payload: dict, indent: int = 2) -> None:
    """Write then rename: an interrupted run never leaves half a file, and processes sharing
    the folder (each its own temporary name) never write into one another's."""
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(payload, indent=indent, default=str) + "\n")
    tmp.replace(path)


@contextmanager
def taking_turns(path: Path) -> Iterator[dict | None]:
    """Hold ``path``'s lock (a ``.lock`` file beside it) and yield what ``path`` holds now.

    Processes that write one results file side by side (each running other folds or rows)
    take turns through this lock, so each can merge what the others stored before it writes.
    """
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield json.loads(path.read_text()) if path.exists() else None


def take_missing_folds(mine: dict, stored: dict, expected: dict) -> None:
    """Add to ``mine`` the ``stored`` folds it lacks (fold -> record with ``params``).

    A fold listed in ``expected`` (fold -> parameters this process runs it with) is taken
    only with those parameters, so a summary never mixes settings.
    """
    for fold, record in stored.items():
        if fold not in mine and record["params"] == expected.get(fold, record["params"]):
            mine[fold] = record


def write_results(folder: Path, name: str, payload: dict, markdown: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.json").write_text(json.dumps(payload, indent=2, default=str) + "\n")
    (folder / f"{name}.md").write_text(markdown)
