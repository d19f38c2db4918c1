"""A tuning worker process for the tests.

    python -m tests.tuning_worker STORAGE STUDY N_TRIALS [DIE_IN_TRIAL]

With ``DIE_IN_TRIAL`` the process dies (``os._exit(3)``, no cleanup, as a
killed worker) in that trial once its parameters are drawn, leaving it RUNNING
with a heartbeat, so a test can kill a worker at a known point instead of a
random one.
"""

import os
import sys

from matminer.datasets import load_dataset
from sklearn.pipeline import make_pipeline

from skgnn import CGCNNRegressor, CrystalGraphTransformer
from skgnn.tuning import CVObjective, suggest, tune

from .conftest import MATBENCH

DIED = 3


def tiny_problem():
    from optuna.distributions import FloatDistribution

    df = load_dataset("matbench_jdft2d", data_home=str(MATBENCH))
    pipe = make_pipeline(
        CrystalGraphTransformer(),
        CGCNNRegressor(max_epochs=1, module__atom_fea_len=8, module__h_fea_len=8,
                       module__n_conv=1, random_state=0),
    )  # fmt: skip
    space = {"cgcnnregressor__lr": FloatDistribution(1e-4, 1e-1, log=True)}
    return pipe, df["structure"].iloc[:40], df["exfoliation_en"].to_numpy()[:40], space


def die_in_trial(number: int) -> None:
    """Make the objective end this process in trial ``number``, once its parameters are drawn."""
    run = CVObjective.__call__

    def call(self, trial):
        if trial.number == number:
            suggest(trial, self.space)
            # the heartbeat thread records one when the trial starts; record it here so the
            # trial is surely one a later worker can find stale, then die without cleanup
            trial.study._storage.record_heartbeat(trial._trial_id)
            os._exit(DIED)
        return run(self, trial)

    CVObjective.__call__ = call


if __name__ == "__main__":
    storage, study_name, n_trials = sys.argv[1], sys.argv[2], int(sys.argv[3])
    if len(sys.argv) > 4:
        die_in_trial(int(sys.argv[4]))
    pipe, X, y, space = tiny_problem()
    tune(pipe, X, y, space, n_trials=n_trials, cv=2, study_name=study_name, storage=storage,
         heartbeat_interval=1, grace_period=1)  # fmt: skip
