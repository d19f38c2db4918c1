"""A tuning worker with a tiny objective, for the tests of studies shared by several processes.

    python -m tests.study_worker STORAGE STUDY N_TRIALS BARRIER N_WORKERS NAME [HANG_IN]

Workers wait for each other at ``BARRIER`` (a folder: each writes ``NAME``
there and waits for ``N_WORKERS`` names) so that none runs the whole study
while another is still importing. With ``HANG_IN`` the worker stops in its own
``HANG_IN``-th trial, once its parameters are drawn, writes that trial's
number to ``BARRIER/NAME.hung`` and sleeps, for the test to kill it there.
Each trial takes at least :data:`PAUSE` seconds per fold, so that a study
outlives a dead worker's heartbeat grace period.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import optuna
from optuna.distributions import FloatDistribution
from sklearn.linear_model import Ridge

from skgnn.tuning import CVObjective, suggest, tune

PAUSE = 0.15
HEARTBEAT_INTERVAL, GRACE_PERIOD = 1, 2


class PausedRidge(Ridge):
    """``Ridge`` whose ``fit`` takes at least :data:`PAUSE` seconds."""

    def fit(self, X, y, sample_weight=None):
        time.sleep(PAUSE)
        return super().fit(X, y, sample_weight=sample_weight)


def tiny_problem():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 4))
    y = X @ np.array([1.0, -2.0, 0.5, 0.0]) + 0.1 * rng.normal(size=60)
    return PausedRidge(alpha=1.0), X, y, {"alpha": FloatDistribution(1e-3, 10.0, log=True)}


def wait_for_each_other(barrier: Path, n_workers: int, name: str) -> None:
    (barrier / name).touch()
    deadline = time.time() + 300
    while len([p for p in barrier.iterdir() if "." not in p.name]) < n_workers:
        if time.time() > deadline:
            raise TimeoutError(f"{name}: the other workers never came to {barrier}")
        time.sleep(0.05)


def hang_in_own_trial(count: int, marker: Path) -> None:
    """Stop in this process's ``count``-th trial with its parameters drawn, for a test to kill."""
    run = CVObjective.__call__
    calls = []

    def call(self, trial):
        calls.append(trial.number)
        if len(calls) == count:
            suggest(trial, self.space)
            marker.write_text(str(trial.number))
            time.sleep(600)
        return run(self, trial)

    CVObjective.__call__ = call


if __name__ == "__main__":
    storage, study_name, n_trials, barrier, n_workers, name = sys.argv[1:7]
    barrier = Path(barrier)
    if len(sys.argv) > 7:
        hang_in_own_trial(int(sys.argv[7]), barrier / f"{name}.hung")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    estimator, X, y, space = tiny_problem()
    wait_for_each_other(barrier, int(n_workers), name)
    tune(estimator, X, y, space, n_trials=int(n_trials), cv=2, study_name=study_name,
         storage=storage, heartbeat_interval=HEARTBEAT_INTERVAL, grace_period=GRACE_PERIOD,
         pruner=optuna.pruners.NopPruner())  # fmt: skip
