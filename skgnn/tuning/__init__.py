"""Optuna tuning of skgnn pipelines: search spaces, fold-wise pruning, studies bound to their data.

:func:`tune` keeps its study in memory by default, as ``OptunaSearchCV``
does. Pass ``storage="sqlite:///study.db"`` (or any Optuna RDB URL, such as
PostgreSQL) to persist it: a killed run then resumes where it stopped, and
many processes on many machines, each running the same script, work on one
study. A persistent study records the estimator, search space, data, CV and
scoring it tunes, and refuses to be resumed with anything else. Crystal graphs
are built once per set of transformer parameters and shared by every fold and
every trial that uses them.

Modules: :mod:`~skgnn.tuning.spaces` (search spaces),
:mod:`~skgnn.tuning.graph_cache`, :mod:`~skgnn.tuning.objective` (the CV
objective), :mod:`~skgnn.tuning.fingerprint` (what a study records),
:mod:`~skgnn.tuning.studies` (opening and binding studies) and
:mod:`~skgnn.tuning.search` (:func:`tune`, :func:`compare`).
"""

from ..exceptions import StudyMismatchError, StudyStorageError
from .fingerprint import data_fingerprint
from .graph_cache import GraphCache
from .objective import CVObjective
from .search import compare, summarize, tune
from .spaces import (
    ArchitectureChoice,
    architecture_space,
    cgcnn_space,
    message_space,
    params_within,
    rf_scm_magpie_space,
    strong_tabular_space,
    suggest,
)
from .studies import bind_study, finished_trials, open_study, study_record

__all__ = [
    "ArchitectureChoice",
    "CVObjective",
    "GraphCache",
    "StudyMismatchError",
    "StudyStorageError",
    "architecture_space",
    "bind_study",
    "cgcnn_space",
    "compare",
    "data_fingerprint",
    "finished_trials",
    "message_space",
    "open_study",
    "params_within",
    "rf_scm_magpie_space",
    "strong_tabular_space",
    "study_record",
    "suggest",
    "summarize",
    "tune",
]
