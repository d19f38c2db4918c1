"""Where tune() keeps its study, and what a persistent study is bound to (fast: Ridge, 30 rows)."""

import re
import time

import numpy as np
import optuna
import pytest
import sqlalchemy.exc
from optuna.distributions import FloatDistribution, IntDistribution
from sklearn.dummy import DummyClassifier
from sklearn.linear_model import Ridge
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.neighbors import KNeighborsRegressor

from skgnn.exceptions import SkgnnError, StudyMismatchError, StudyStorageError
from skgnn.tuning import CVObjective, data_fingerprint, open_study, tune
from skgnn.tuning import studies as studies_module

optuna.logging.set_verbosity(optuna.logging.WARNING)

SPACE = {"alpha": FloatDistribution(1e-3, 10.0, log=True)}


def make_data(seed: int, n: int = 30):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 3))
    return X, X @ np.array([1.0, -2.0, 0.5]) + rng.normal(scale=0.3, size=n)


def cv_mae(alpha: float, X, y, cv=2) -> float:
    return float(np.mean(cross_val_score(Ridge(alpha=alpha), X, y, cv=cv,
                                         scoring="neg_mean_absolute_error")))  # fmt: skip


def test_default_study_is_in_memory_and_new_for_each_call(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (X1, y1), (X2, y2) = make_data(1), make_data(2)
    first = tune(Ridge(), X1, y1, SPACE, n_trials=2, cv=2, sampler_seed=0)
    second = tune(Ridge(), X2, y2, SPACE, n_trials=2, cv=2, sampler_seed=0)
    assert len(second.trials) == 2
    for trial in second.trials:  # every value was computed on the second data set
        assert trial.value == pytest.approx(cv_mae(trial.params["alpha"], X2, y2))
    assert first.trials[0].value != pytest.approx(second.trials[0].value)
    assert list(tmp_path.iterdir()) == []  # nothing written to the working directory


def test_persistent_study_records_what_it_tunes(tmp_path):
    X, y = make_data(1)
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    tune(Ridge(), X, y, SPACE, n_trials=1, cv=2, storage=storage, study_name="ridge")
    attrs = optuna.load_study(study_name="ridge", storage=storage).user_attrs
    assert attrs["estimator"]["class"] == "sklearn.linear_model._ridge.Ridge"
    assert attrs["estimator"]["params"]["fit_intercept"] == "True"
    assert "alpha" not in attrs["estimator"]["params"]  # in the space: drawn, not fixed
    assert attrs["search_space"] == {"alpha": optuna.distributions.distribution_to_json(
        SPACE["alpha"])}  # fmt: skip
    assert attrs["data"] == data_fingerprint(X, y) and attrs["data"]["n_samples"] == 30
    assert attrs["cv"] == "KFold(n_splits=2, random_state=None, shuffle=False), 2 splits"
    assert attrs["scoring"] == (
        "make_scorer(mean_absolute_error, greater_is_better=False, response_method='predict')"
    )


X_, Y_ = make_data(1)
CHANGES = {  # id: (changed tune() arguments, what the message must say)
    "estimator": ({"estimator": Ridge(fit_intercept=False)},
                  r"another estimator \(fit_intercept: True vs False\)"),
    "space": ({"space": {"alpha": FloatDistribution(1e-2, 10.0, log=True)}},
              r"another search space \(alpha: .*0\.001.* vs .*0\.01"),
    "X": ({"X": X_ + 1.0}, r"other data \(X fingerprint [0-9a-f]{12}\.\. vs [0-9a-f]{12}\.\.\)"),
    "y": ({"y": Y_ + 1.0}, r"other data \(y fingerprint [0-9a-f]{12}\.\. vs [0-9a-f]{12}\.\.\)"),
    "rows": ({"X": X_[:20], "y": Y_[:20]}, r"other data \(30 rows vs 20, X fingerprint"),
    "cv": ({"cv": 3}, r"another CV \(KFold\(n_splits=2.* vs KFold\(n_splits=3"),
    "scoring": ({"scoring": "neg_mean_squared_error"},
                r"another scoring \(make_scorer\(mean_absolute_error.* vs "
                r"make_scorer\(mean_squared_error"),
}  # fmt: skip


@pytest.mark.parametrize("change", CHANGES, ids=list(CHANGES))
def test_resuming_with_something_else_is_refused_before_the_study_changes(change, tmp_path):
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    inputs = {"estimator": Ridge(), "X": X_, "y": Y_, "space": SPACE, "cv": 2,
              "scoring": "neg_mean_absolute_error"}  # fmt: skip
    tune(**inputs, n_trials=2, storage=storage, study_name="ridge")
    before = optuna.load_study(study_name="ridge", storage=storage)
    changed, message = CHANGES[change]
    with pytest.raises(StudyMismatchError, match=message) as error:
        tune(**{**inputs, **changed}, n_trials=4, storage=storage, study_name="ridge")
    assert isinstance(error.value, ValueError) and isinstance(error.value, SkgnnError)
    assert str(error.value).startswith(f"study 'ridge' in {storage} was made for ")
    assert "pass another study_name, or the same" in str(error.value)
    after = optuna.load_study(study_name="ridge", storage=storage)
    assert [(t.number, t.state, t.value) for t in after.trials] == [
        (t.number, t.state, t.value) for t in before.trials
    ]  # nothing queued, nothing run
    assert after.user_attrs == before.user_attrs


def test_resuming_with_the_same_inputs_adds_trials(tmp_path):
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    X, y = make_data(1)
    space = {"n_neighbors": IntDistribution(1, 8)}
    first = tune(KNeighborsRegressor(n_jobs=1), X, y, space, n_trials=2, cv=2, storage=storage)
    kept = [(t.number, t.value) for t in first.trials]
    # n_jobs says how to compute, not what: another value resumes the same study
    study = tune(KNeighborsRegressor(n_jobs=2), X, y, space, n_trials=4, cv=2, storage=storage)
    assert [(t.number, t.value) for t in study.trials][:2] == kept
    assert len(study.trials) == 4


def test_a_study_with_trials_but_no_record_is_refused(tmp_path):
    storage = f"sqlite:///{tmp_path / 'old.db'}"
    old = optuna.create_study(study_name="skgnn", storage=storage, direction="maximize")
    old.add_trial(optuna.trial.create_trial(params={"alpha": 1.0}, distributions=SPACE,
                                            value=-1.0))  # fmt: skip
    with pytest.raises(StudyMismatchError, match="holds 1 trials but no record"):
        tune(Ridge(), *make_data(1), SPACE, n_trials=2, cv=2, storage=storage)
    assert len(optuna.load_study(study_name="skgnn", storage=storage).trials) == 1


def test_a_study_created_empty_beforehand_is_bound_by_its_first_tune(tmp_path):
    storage = f"sqlite:///{tmp_path / 'made.db'}"
    open_study("shared", storage)  # as benchmarks/tune_postgres.sh does before its workers
    X, y = make_data(1)
    study = tune(Ridge(), X, y, SPACE, n_trials=1, cv=2, storage=storage, study_name="shared")
    assert study.user_attrs["data"] == data_fingerprint(X, y)
    with pytest.raises(StudyMismatchError, match="other data"):
        tune(Ridge(), *make_data(2), SPACE, n_trials=2, cv=2, storage=storage, study_name="shared")


def test_a_record_half_written_by_a_worker_starting_alongside_is_completed(tmp_path):
    """Two workers binding a new study at once: one reads the other's record mid-write.

    Found by tests/test_tuning_postgres.py: the second worker saw some items
    and not 'scoring' yet, and refused the study as made for "nothing recorded".
    """
    storage = f"sqlite:///{tmp_path / 'race.db'}"
    X, y = make_data(1)
    record = studies_module.study_record(Ridge(), X, y, SPACE, cv=2)
    study = open_study("race", storage)
    for key in ("estimator", "search_space"):  # the first worker is this far
        study.set_user_attr(key, record[key])
    tune(Ridge(), X, y, SPACE, n_trials=1, cv=2, storage=storage, study_name="race")
    assert {k: study.user_attrs[k] for k in record} == record
    with pytest.raises(StudyMismatchError, match="other data"):  # still bound
        tune(Ridge(), *make_data(2), SPACE, n_trials=2, cv=2, storage=storage, study_name="race")


def test_sqlite_file_in_a_missing_folder_names_the_url(tmp_path):
    storage = f"sqlite:///{tmp_path / 'missing' / 'study.db'}"
    with pytest.raises(StudyStorageError, match=re.escape(storage) + ".*does not exist"):
        tune(Ridge(), *make_data(1), SPACE, n_trials=1, cv=2, storage=storage)
    assert not (tmp_path / "missing").exists()


def test_server_with_nothing_listening_fails_fast_naming_the_url():
    storage = "postgresql+psycopg2://skgnn:secret@127.0.0.1:9/skgnn"  # port 9: discard
    start = time.perf_counter()
    with pytest.raises(StudyStorageError) as error:
        tune(Ridge(), *make_data(1), SPACE, n_trials=1, cv=2, storage=storage)
    assert time.perf_counter() - start < studies_module.CONNECT_TIMEOUT
    assert "'postgresql+psycopg2://skgnn:***@127.0.0.1:9/skgnn'" in str(error.value)
    assert "secret" not in str(error.value) and isinstance(error.value, OSError)


def test_unparsable_url_names_it():
    with pytest.raises(StudyStorageError, match="'not a url'"):
        open_study("x", "not a url")


def test_a_lost_race_to_create_the_tables_is_retried_other_errors_are_not(monkeypatch, tmp_path):
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    create, calls = optuna.create_study, []

    def collide_once(**kwargs):
        calls.append(kwargs["study_name"])
        if len(calls) == 1:
            raise sqlalchemy.exc.IntegrityError("INSERT", {}, Exception("UNIQUE constraint"))
        return create(**kwargs)

    monkeypatch.setattr(studies_module.optuna, "create_study", collide_once)
    assert open_study("race", storage).study_name == "race" and len(calls) == 2

    def refuse(**kwargs):
        calls.append(kwargs["study_name"])
        raise sqlalchemy.exc.OperationalError("CONNECT", {}, Exception("password refused"))

    monkeypatch.setattr(studies_module.optuna, "create_study", refuse)
    with pytest.raises(StudyStorageError, match="password refused"):
        open_study("other", storage)
    assert calls[2:] == ["other"]  # not retried


def test_cv_of_a_classifier_is_stratified_as_in_cross_val_score():
    X, y = np.zeros((20, 1)), np.repeat([0, 1], 10)  # sorted labels: plain KFold splits by class
    objective = CVObjective(DummyClassifier(), X, y, {}, cv=2, scoring="accuracy")
    assert isinstance(objective.cv, StratifiedKFold)
    value = objective(optuna.create_study(direction="maximize").ask())
    assert value == pytest.approx(cross_val_score(DummyClassifier(), X, y, cv=2).mean()) == 0.5
