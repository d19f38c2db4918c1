"""Optuna studies: in memory, or on a storage URL and bound to what they tune.

A study on a storage (SQLite file, PostgreSQL or any Optuna RDB URL) records
the estimator, search space, data, CV and scoring it tunes as user attributes
the first time :func:`bind_study` sees it; opening it again with anything else
raises :class:`~skgnn.exceptions.StudyMismatchError` naming what differs,
before the study changes.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy.exc
from optuna.distributions import BaseDistribution
from optuna.storages import RDBStorage
from optuna.trial import TrialState
from sklearn.base import BaseEstimator

from ..exceptions import StudyMismatchError, StudyStorageError
from .fingerprint import (
    data_fingerprint,
    describe_cv,
    describe_estimator,
    describe_scoring,
    describe_space,
)

try:  # Optuna >= 4.9 renamed it
    from optuna.storages import RetryHeartbeatStaleTrialCallback as RetryStaleTrial
except ImportError:  # pragma: no cover
    from optuna.storages import RetryFailedTrialCallback as RetryStaleTrial

__all__ = ["FINISHED", "bind_study", "finished_trials", "open_study", "study_record"]

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
#: Seconds a database server may take to accept a connection before the URL counts as unusable.
CONNECT_TIMEOUT = 10
_ATTEMPTS = 5
#: Recorded items, in the order an error names them, with the noun phrase for "another ...".
_RECORDED = {"estimator": "another estimator", "search_space": "another search space",
             "data": "other data", "cv": "another CV", "scoring": "another scoring"}  # fmt: skip


def open_study(
    study_name: str = "skgnn",
    storage: str | None = None,
    *,
    sampler_seed: int | None = None,
    pruner: optuna.pruners.BasePruner | None = None,
    heartbeat_interval: int = 60,
    grace_period: int | None = None,
) -> optuna.Study:
    """Create or load a maximising study, in memory (``storage=None``) or on a storage URL.

    On a storage, a worker that dies leaves its trial RUNNING; the heartbeat
    marks it failed after ``grace_period`` seconds and its parameters are
    tried once more. Workers starting together on a new database may race to
    create its tables; the loser retries.

    Raises
    ------
    StudyStorageError
        The URL cannot be opened (a SQLite file in a folder that does not
        exist, a server that does not answer within :data:`CONNECT_TIMEOUT`
        seconds, a missing driver); the message names the URL.
    """
    for attempt in range(_ATTEMPTS):
        try:
            rdb = None if storage is None else _rdb(storage, heartbeat_interval, grace_period)
            return optuna.create_study(
                study_name=study_name,
                storage=rdb,
                direction="maximize",
                load_if_exists=True,
                sampler=optuna.samplers.TPESampler(seed=sampler_seed),
                pruner=pruner or optuna.pruners.MedianPruner(n_startup_trials=4, n_warmup_steps=0),
            )
        except (sqlalchemy.exc.SQLAlchemyError, ImportError) as error:
            if not _lost_schema_race(error) or attempt == _ATTEMPTS - 1:
                raise StudyStorageError(
                    f"Cannot open the Optuna storage {_shown(storage)!r}: "
                    f"{_reason(error)}. Check the URL, "
                    "that the database server runs and accepts connections, and that its "
                    "driver is installed (psycopg2-binary for postgresql)."
                ) from error
            time.sleep(0.2 * (attempt + 1))


def _rdb(url: str, heartbeat_interval: int, grace_period: int | None) -> RDBStorage:
    parsed = sqlalchemy.engine.make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite" and parsed.database not in (None, "", ":memory:"):
        folder = Path(parsed.database).expanduser().resolve().parent
        if not folder.is_dir():
            raise StudyStorageError(
                f"Cannot open the Optuna storage {url!r}: the folder {folder} does not exist. "
                "Create it, or pass a path in an existing folder."
            )
    engine_kwargs = {}
    if backend in ("postgresql", "mysql"):  # fail fast instead of waiting on a silent host
        engine_kwargs["connect_args"] = {"connect_timeout": CONNECT_TIMEOUT}
    with warnings.catch_warnings():  # heartbeats are "experimental" in Optuna 5
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return RDBStorage(
            url,
            engine_kwargs=engine_kwargs,
            heartbeat_interval=heartbeat_interval,
            grace_period=grace_period,
            heartbeat_stale_trial_callback=RetryStaleTrial(max_retry=1),
        )


def _lost_schema_race(error: Exception) -> bool:
    """Workers creating the tables of a new database together collide; the loser retries."""
    if isinstance(error, sqlalchemy.exc.IntegrityError):  # unique violations
        return True
    message = str(error).lower()
    return isinstance(error, sqlalchemy.exc.DBAPIError) and (
        "already exists" in message or "database is locked" in message
    )


def _reason(error: Exception) -> str:
    """The first line of what the driver said (Optuna wraps a missing driver's ImportError)."""
    cause = getattr(error, "orig", None) or error.__cause__ or error
    return str(cause).splitlines()[0] if str(cause) else type(cause).__name__


def _shown(url: str | None) -> str:
    """The URL with its password masked."""
    try:
        return sqlalchemy.engine.make_url(url).render_as_string(hide_password=True)
    except Exception:  # unparsable: shown as given
        return str(url)


def finished_trials(study: optuna.Study) -> int:
    """Complete and pruned trials of ``study``, whichever worker ran them."""
    return len(study.get_trials(deepcopy=False, states=FINISHED))


def study_record(
    estimator: BaseEstimator,
    X: Sequence,
    y: Sequence,
    space: Mapping[str, BaseDistribution],
    *,
    cv=5,
    scoring: str | Callable | None = "neg_mean_absolute_error",
) -> dict[str, Any]:
    """What a study tunes, as :func:`bind_study` records and compares it.

    Returns
    -------
    dict
        Keys ``estimator``, ``search_space``, ``data``, ``cv``, ``scoring``
        (see :mod:`skgnn.tuning.fingerprint`).
    """
    return {
        "estimator": describe_estimator(estimator, space),
        "search_space": describe_space(space),
        "data": data_fingerprint(X, y),
        "cv": describe_cv(cv, y, estimator),
        "scoring": describe_scoring(scoring, estimator),
    }


def bind_study(study: optuna.Study, record: Mapping[str, Any], storage: str) -> None:
    """Record ``record`` in a new study, or check that an existing study was made for it.

    Items missing from a study's record are written first: workers starting
    together on a new study may each see a record that another is still
    writing, an item at a time.

    Parameters
    ----------
    study : optuna.Study
    record : mapping
        From :func:`study_record`.
    storage : str
        The study's URL, for messages.

    Raises
    ------
    StudyMismatchError
        The study records something else, or holds trials but no record; raised
        before anything is written.
    """
    where = f"study {study.study_name!r} in {_shown(storage)}"
    missing = [key for key in _RECORDED if key not in study.user_attrs]
    if len(missing) == len(_RECORDED) and study.trials:
        raise StudyMismatchError(
            f"{where} holds {len(study.trials)} trials but no record of the estimator, "
            "search space, data, CV and scoring they tuned (made by hand or by an older "
            "skgnn); pass another study_name, or read it with optuna.load_study."
        )
    # items one at a time: a worker starting alongside may have written only some so far
    for key in missing:
        study.set_user_attr(key, record[key])
    # read back: workers creating one study with other inputs at once fail here, the last
    # writer's record (or a mix) standing
    differences = {key: _difference(key, study.user_attrs.get(key), record[key])
                   for key in _RECORDED}  # fmt: skip
    differences = {key: text for key, text in differences.items() if text}
    if differences:
        what = " and ".join(f"{_RECORDED[key]} ({text})" for key, text in differences.items())
        same = " and ".join(_RECORDED[key].split(" ", 1)[1] for key in differences)
        raise StudyMismatchError(
            f"{where} was made for {what}, the study's values first; pass another "
            f"study_name, or the same {same}."
        )


def _difference(key: str, recorded, current) -> str:
    """What differs between a recorded item and the current one, in words; '' if nothing."""
    if recorded == current:
        return ""
    if recorded is None:
        return "nothing recorded"
    if key == "data":
        parts = []
        if recorded.get("n_samples") != current["n_samples"]:
            parts.append(f"{recorded.get('n_samples')} rows vs {current['n_samples']}")
        for name in ("X", "y"):
            if recorded.get(name) != current[name]:
                parts.append(f"{name} fingerprint {str(recorded.get(name))[:12]}.. "
                             f"vs {current[name][:12]}..")  # fmt: skip
        return ", ".join(parts)
    if key == "estimator":
        parts = []
        if recorded.get("class") != current["class"]:
            parts.append(f"class {recorded.get('class')} vs {current['class']}")
        parts.append(_mapping_difference(recorded.get("params", {}), current["params"]))
        return ", ".join(part for part in parts if part)
    if isinstance(current, dict):
        return _mapping_difference(recorded, current)
    return f"{recorded} vs {current}"


def _mapping_difference(recorded: Mapping, current: Mapping, shown: int = 4) -> str:
    parts = []
    for name in sorted(set(recorded) | set(current)):
        if name not in current:
            parts.append(f"{name} only in the study")
        elif name not in recorded:
            parts.append(f"{name} only here")
        elif recorded[name] != current[name]:
            parts.append(f"{name}: {recorded[name]} vs {current[name]}")
    more = f", and {len(parts) - shown} more" if len(parts) > shown else ""
    return ", ".join(parts[:shown]) + more
