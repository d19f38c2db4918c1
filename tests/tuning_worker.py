"""A tuning worker process for the tests: ``python -m tests.tuning_worker STORAGE STUDY N``."""

import sys

from matminer.datasets import load_dataset
from sklearn.pipeline import make_pipeline

from skgnn import CGCNNRegressor, CrystalGraphTransformer
from skgnn.tuning import tune

from .conftest import MATBENCH


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


if __name__ == "__main__":
    storage, study_name, n_trials = sys.argv[1], sys.argv[2], int(sys.argv[3])
    pipe, X, y, space = tiny_problem()
    tune(pipe, X, y, space, n_trials=n_trials, cv=2, study_name=study_name, storage=storage,
         heartbeat_interval=1, grace_period=3)  # fmt: skip
