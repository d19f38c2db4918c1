import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState
from optuna_integration.sklearn import OptunaSearchCV
from sklearn.base import clone
from sklearn.pipeline import make_pipeline

from skgnn import CGCNNRegressor, CrystalGraphTransformer
from skgnn.baselines import make_rf_scm_magpie
from skgnn.tuning import (
    GraphCache,
    cgcnn_space,
    compare,
    data_fingerprint,
    finished_trials,
    params_within,
    suggest,
    tune,
)

from .tuning_worker import DIED, tiny_problem

optuna.logging.set_verbosity(optuna.logging.WARNING)
ROOT = Path(__file__).resolve().parents[1]


def worker(
    storage: str, study: str, n_trials: int, *die_in_trial: int, **popen
) -> subprocess.Popen:
    """A ``tests.tuning_worker`` process on ``study``, run from the repository root."""
    command = [sys.executable, "-m", "tests.tuning_worker", storage, study, str(n_trials)]
    return subprocess.Popen([*command, *map(str, die_in_trial)], cwd=ROOT, **popen)


@pytest.fixture(scope="module")
def problem():
    return tiny_problem()


def test_optuna_search_cv_over_the_cgcnn_pipeline(problem):
    pipe, X, y, _ = problem
    space = {
        "crystalgraphtransformer__max_neighbors": IntDistribution(6, 12),
        "cgcnnregressor__lr": FloatDistribution(1e-3, 1e-2, log=True),
    }
    search = OptunaSearchCV(pipe, space, n_trials=2, cv=2, random_state=0,
                            scoring="neg_mean_absolute_error")  # fmt: skip
    search.fit(X, y)
    assert len(search.trials_) == 2
    assert search.predict(X).shape == (len(y),)


def test_optuna_search_cv_over_a_tabular_baseline(problem):
    _, X, y, _ = problem
    space = {"model__max_features": CategoricalDistribution([0.3, 1.0])}
    search = OptunaSearchCV(make_rf_scm_magpie(n_estimators=10, random_state=0), space,
                            n_trials=2, cv=2, random_state=0)  # fmt: skip
    search.fit(X, y)
    assert len(search.trials_) == 2 and np.isfinite(search.best_score_)


def test_search_spaces_name_real_pipeline_parameters(problem):
    pipe = clone(problem[0])
    params = suggest(optuna.create_study().ask(), cgcnn_space())
    pipe.set_params(**params)
    assert {k: pipe.get_params()[k] for k in params} == params


def test_tune_persists_and_reuses_graphs(problem, tmp_path):
    pipe, X, y, space = problem
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    cache = GraphCache(X)
    study = tune(pipe, X, y, space, n_trials=3, cv=2, storage=storage, graph_cache=cache)
    assert finished_trials(study) == 3
    assert cache.hits == 2  # the transformer parameters never change: graphed once
    reloaded = optuna.load_study(study_name="skgnn", storage=storage)
    assert len(reloaded.trials) == 3
    assert all(len(t.user_attrs["fold_scores"]) == 2 for t in reloaded.trials)
    assert reloaded.user_attrs["data"] == data_fingerprint(X, y)  # bound to its data


def test_worker_killed_in_a_trial_resumes_from_sqlite(problem, tmp_path):
    """Deterministic: the worker dies in trial 2, after trials 0 and 1 finished."""
    pipe, X, y, space = problem
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    dying = worker(storage, "resume", 50, 2, stderr=subprocess.PIPE, text=True)
    _, stderr = dying.communicate(timeout=300)
    assert dying.returncode == DIED, stderr[-3000:]
    before = optuna.load_study(study_name="resume", storage=storage)
    assert [t.state for t in before.trials] == [TrialState.COMPLETE] * 2 + [TrialState.RUNNING]
    kept = {t.number: t.value for t in before.trials[:2]}
    assert set(before.trials[2].params) == set(space)  # it died with its parameters drawn

    time.sleep(2.5)  # the dead trial's heartbeat is older than the grace period (1 s)
    study = tune(pipe, X, y, space, n_trials=4, cv=2, study_name="resume", storage=storage,
                 heartbeat_interval=1, grace_period=1)  # fmt: skip
    states = [t.state for t in study.trials]
    assert states == [TrialState.COMPLETE] * 2 + [TrialState.FAIL] + [TrialState.COMPLETE] * 2
    assert {n: study.trials[n].value for n in kept} == kept  # nothing finished was lost
    retry = study.trials[3]  # the stale trial's parameters, tried once more
    assert retry.system_attrs["failed_trial"] == 2 and retry.params == before.trials[2].params
    assert finished_trials(study) == 4


@pytest.mark.slow
def test_worker_killed_at_any_moment_resumes_from_sqlite(problem, tmp_path):
    """The real race: killed from outside whenever it has finished two trials."""
    pipe, X, y, space = problem
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    running = worker(storage, "resume", 200, stdout=subprocess.DEVNULL,
                     stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.time() + 120
    while time.time() < deadline:
        time.sleep(0.5)
        try:
            done = finished_trials(optuna.load_study(study_name="resume", storage=storage))
        except KeyError:  # study not created yet
            continue
        if done >= 2:
            break
    running.kill()
    running.wait()
    before = optuna.load_study(study_name="resume", storage=storage)
    kept = {t.number: t.value for t in before.get_trials(states=(TrialState.COMPLETE,))}
    assert len(kept) >= 2
    target = finished_trials(before) + 3  # finished = complete + pruned before the kill

    time.sleep(3)  # past the heartbeat grace period: the killed trial is stale
    study = tune(pipe, X, y, space, n_trials=target, cv=2, study_name="resume",
                 storage=storage, heartbeat_interval=1, grace_period=1)  # fmt: skip
    complete = {t.number: t.value for t in study.get_trials(states=(TrialState.COMPLETE,))}
    assert {n: complete[n] for n in kept} == kept  # nothing finished was lost
    assert finished_trials(study) == target


@pytest.mark.slow
def test_two_workers_share_one_study(tmp_path):
    """Timing-dependent: each worker must get a trial before the other finishes all six."""
    storage = f"sqlite:///{tmp_path / 'shared.db'}"
    workers = [worker(storage, "shared", 6) for _ in range(2)]
    assert [w.wait(timeout=300) for w in workers] == [0, 0]
    study = optuna.load_study(study_name="shared", storage=storage)
    assert finished_trials(study) >= 6
    assert len({t.user_attrs["worker"] for t in study.trials}) == 2


def test_pruned_trials_stop_early_and_are_counted(problem, tmp_path):
    pipe, X, y, space = problem
    study = tune(pipe, X, y, space, n_trials=3, cv=3, storage=None,
                 pruner=optuna.pruners.ThresholdPruner(lower=0.0))  # fmt: skip
    pruned = study.get_trials(states=(TrialState.PRUNED,))
    assert len(pruned) == 3
    assert all(len(t.user_attrs["fold_scores"]) == 1 for t in pruned)


def test_compare_gives_each_line_the_same_budget(problem):
    pipe, X, y, space = problem
    table = compare(
        {
            "cgcnn": (pipe, space),
            "rf": (make_rf_scm_magpie(n_estimators=10, random_state=0),
                   {"model__max_features": CategoricalDistribution([0.3, 1.0])}),
        },
        X, y, n_trials=2, cv=2, storage=None,
    )  # fmt: skip
    assert list(table["model"]) == ["cgcnn", "rf"]
    assert list(table["complete"] + table["pruned"]) == [2, 2]
    assert (table["cv_score"] < 0).all()


def test_graph_cache_keys_on_transformer_parameters(problem):
    _, X, _, _ = problem
    cache = GraphCache(X[:5])
    first = cache.graphs(CrystalGraphTransformer())
    assert cache.graphs(CrystalGraphTransformer()) is first
    assert cache.graphs(CrystalGraphTransformer(max_neighbors=6)) is not first
    assert cache.hits == 1


@pytest.mark.slow
def test_workers_racing_to_create_a_new_study_all_succeed(tmp_path):
    """The real race; test_tuning_studies checks the retry deterministically."""
    storage = f"sqlite:///{tmp_path / 'race.db'}"
    code = f"from skgnn.tuning import open_study; open_study('race', {storage!r})"
    workers = [subprocess.Popen([sys.executable, "-c", code], cwd=ROOT) for _ in range(4)]
    assert [w.wait(timeout=120) for w in workers] == [0, 0, 0, 0]
    assert optuna.load_study(study_name="race", storage=storage).study_name == "race"


def test_first_trial_is_the_estimators_own_settings():
    estimator = make_rf_scm_magpie(n_estimators=10, random_state=0).set_params(
        model__max_features=0.3, model__min_samples_leaf=2
    )
    space = {
        "model__max_features": CategoricalDistribution([0.1, 0.3, 1.0]),
        "model__min_samples_leaf": IntDistribution(1, 8),
        "model__n_estimators": IntDistribution(100, 500, step=100),  # 10 cannot be drawn
    }
    assert params_within(space, estimator) == {
        "model__max_features": 0.3,
        "model__min_samples_leaf": 2,
    }
    study = optuna.create_study()
    study.enqueue_trial(params_within(space, estimator), skip_if_exists=True)
    first = study.ask()
    params = suggest(first, space)
    assert params["model__max_features"] == 0.3 and params["model__min_samples_leaf"] == 2


def test_tune_queues_the_estimator_once_across_resumes(problem, tmp_path):
    pipe, X, y, space = problem
    storage = f"sqlite:///{tmp_path / 'start.db'}"
    own = params_within(space, pipe)
    assert own, "the tiny pipeline's settings should lie in its space"
    tune(pipe, X, y, space, n_trials=1, cv=2, storage=storage, study_name="start")
    study = tune(pipe, X, y, space, n_trials=2, cv=2, storage=storage, study_name="start")
    starts = [t for t in study.trials if all(t.params.get(k) == v for k, v in own.items())]
    assert study.trials[0] in starts and len(starts) == 1


def test_cgcnn_defaults_are_read_from_the_module_and_optimizer():
    pipe = make_pipeline(CrystalGraphTransformer(), CGCNNRegressor(module__n_conv=4))
    own = params_within(cgcnn_space(), pipe)
    assert set(own) == set(cgcnn_space())  # every CGCNN default lies in the space
    assert own["cgcnnregressor__module__n_conv"] == 4  # set: from get_params
    assert own["cgcnnregressor__module__atom_fea_len"] == 64  # unset: the module's default
    assert own["cgcnnregressor__optimizer__weight_decay"] == 0.01  # AdamW's default
