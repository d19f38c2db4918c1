"""Matbench v0.1 leaderboard figures by task, as the benchmark scripts read them.

The figures ship with skgnn as package data (:func:`skgnn.datasets.matbench_leaderboard`),
beside the jdft2d dataset, so that ``examples/quickstart.py`` prints them without the
benchmarks on its path; this module only arranges them by what the scripts look up.
"""

from __future__ import annotations

from skgnn.datasets import matbench_leaderboard

_TASKS = matbench_leaderboard()

#: Task -> model -> mean MAE over the five official folds, in the task's target units.
LEADERBOARD_MAE: dict[str, dict[str, float]] = {t: v["mae"] for t, v in _TASKS.items()}
#: Task -> unit of its target.
UNITS: dict[str, str] = {t: v["unit"] for t, v in _TASKS.items()}
#: Task -> target column of its matminer dataset.
TARGETS: dict[str, str] = {t: v["target"] for t, v in _TASKS.items()}
