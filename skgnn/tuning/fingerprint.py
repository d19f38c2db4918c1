"""Stable, printable descriptions of what a study tunes: estimator, data, CV, scoring.

Each description is plain JSON (strings, numbers, dicts), the same in every
process and on every machine for the same inputs, so a persistent study can
record it as user attributes and a later worker can compare.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import json
import os
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    distribution_to_json,
)
from pymatgen.core import IStructure
from sklearn.base import BaseEstimator, clone, is_classifier
from sklearn.metrics import check_scoring
from sklearn.model_selection import check_cv

from ..graphs import CrystalGraphs

__all__ = [
    "data_fingerprint",
    "describe_cv",
    "describe_estimator",
    "describe_scoring",
    "describe_space",
]

#: Parameters that say how to compute, not what: a study resumed with other values is the same.
HOW_NOT_WHAT = frozenset({"n_jobs", "verbose", "device"})
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


def describe_estimator(
    estimator: BaseEstimator, space: Mapping[str, BaseDistribution]
) -> dict[str, Any]:
    """The estimator's class and its parameters outside ``space``, as stable strings.

    Parameters of nested estimators appear under their ``get_params(deep=True)``
    keys, a nested estimator itself by its class. Private keys and
    :data:`HOW_NOT_WHAT` (``n_jobs``, ``verbose``, ``device``) are left out.
    Parameters derived from those of ``space`` are read with the space's
    parameters set to its lowest values (first choices), so they do not count.

    Returns
    -------
    dict
        ``{"class": "module.Class", "params": {name: printable value}}``.
    """
    # parameters derived from those of the space (skorch's scheduler T_max from max_epochs)
    # must not tell apart estimators that differ only inside the space: fix the space's values
    anchored = clone(estimator).set_params(**{name: _anchor(dist) for name, dist in space.items()})
    params = anchored.get_params(deep=True)
    flattened = {id(value) for value in params.values() if _is_estimator(value)}
    described = {}
    for name, value in sorted(params.items()):
        last = name.split("__")[-1]
        if name in space or last in HOW_NOT_WHAT or last.startswith("_"):
            continue
        described[name] = _qualname(type(value)) if _is_estimator(value) else _stable(
            value, flattened
        )  # fmt: skip
    return {"class": _qualname(type(estimator)), "params": described}


def _anchor(dist: BaseDistribution):
    return dist.choices[0] if isinstance(dist, CategoricalDistribution) else dist.low


def describe_space(space: Mapping[str, BaseDistribution]) -> dict[str, str]:
    """Each distribution of ``space`` in Optuna's JSON form."""
    return {name: distribution_to_json(dist) for name, dist in sorted(space.items())}


def describe_cv(cv, y: Sequence, estimator: BaseEstimator) -> str:
    """The CV splitter as ``cross_val_score`` would build it, e.g. ``KFold(n_splits=5, ...)``."""
    y = np.asarray(y)
    splitter = check_cv(cv, y, classifier=is_classifier(estimator))
    folds = f"{splitter.get_n_splits(np.zeros(len(y)), y)} splits"
    if type(splitter).__name__ == "_CVIterableWrapper":  # explicit (train, test) index pairs
        digest = hashlib.sha256()
        for train, test in splitter.split(np.zeros(len(y)), y):
            _update_array(digest, np.asarray(train, dtype=np.int64))
            _update_array(digest, np.asarray(test, dtype=np.int64))
        return f"explicit folds, {folds}, sha256 {digest.hexdigest()[:16]}"
    return f"{_ADDRESS.sub('', repr(splitter))}, {folds}"


def describe_scoring(scoring: str | Callable | None, estimator: BaseEstimator) -> str:
    """The scorer ``scoring`` names, e.g. ``make_scorer(mean_absolute_error, ...)``."""
    return _stable(check_scoring(estimator, scoring=scoring), set())


def data_fingerprint(X: Sequence, y: Sequence) -> dict[str, Any]:
    """Number of rows and SHA-256 hashes of ``X`` and ``y``.

    ``X`` may be structures (hashed through ``as_dict()``), CIF text or paths
    (hashed as text), a :class:`~skgnn.CrystalGraphs` (its arrays and
    settings), or a numeric array or table. A list, an array or a pandas
    Series of the same structures hash alike; the index of a Series does not
    count. Numeric ``y`` is hashed as float64, so ``[1, 2]`` and ``[1.0, 2.0]``
    hash alike.

    Returns
    -------
    dict
        ``{"n_samples": int, "X": hex digest, "y": hex digest}``.
    """
    return {"n_samples": len(y), "X": _hash_inputs(X), "y": _hash_targets(y)}


def _hash_inputs(X) -> str:
    digest = hashlib.sha256()
    if isinstance(X, CrystalGraphs):
        digest.update(b"CrystalGraphs")
        for name, value in sorted(vars(X).items()):
            if isinstance(value, np.ndarray):
                digest.update(name.encode())
                _update_array(digest, value)
            elif isinstance(value, (int, float, str, np.generic)) or value is None:
                digest.update(f"{name}={_stable(value, set())}".encode())
        return digest.hexdigest()
    if isinstance(X, pd.DataFrame):
        for column in X.columns:
            digest.update(f"column {column!r}".encode())
            _update_items(digest, X[column].to_numpy())
        return digest.hexdigest()
    _update_items(digest, X.to_numpy() if isinstance(X, pd.Series) else X)
    return digest.hexdigest()


def _update_items(digest, values) -> None:
    if isinstance(values, np.ndarray) and values.dtype.kind in "biufc":
        _update_array(digest, values)
        return
    for item in values:
        digest.update(b"\x1e" + _item_bytes(item))


def _item_bytes(item) -> bytes:
    if isinstance(item, IStructure):
        described = item.as_dict()
        described.pop("@version", None)
        return json.dumps(described, sort_keys=True, default=str).encode()
    if isinstance(item, str):
        return b"str:" + item.encode()
    if isinstance(item, bytes):
        return b"bytes:" + item
    if isinstance(item, os.PathLike):
        return b"path:" + os.fsencode(item)
    if isinstance(item, np.ndarray):
        return item.dtype.str.encode() + repr(item.shape).encode() + item.tobytes()
    return _stable(item, set()).encode()


def _hash_targets(y) -> str:
    values = np.asarray(y)
    digest = hashlib.sha256()
    if values.dtype.kind in "biuf":
        _update_array(digest, values.astype(np.float64))
    else:
        _update_items(digest, values.ravel())
    return digest.hexdigest()


def _update_array(digest, array: np.ndarray) -> None:
    array = np.ascontiguousarray(array)
    digest.update(f"{array.dtype.str}{array.shape}".encode())
    digest.update(array.tobytes())


def _is_estimator(value) -> bool:
    return hasattr(value, "get_params") and not isinstance(value, type)


def _qualname(obj) -> str:
    module = getattr(obj, "__module__", None) or ""
    name = getattr(obj, "__qualname__", None) or getattr(obj, "__name__", None) or repr(obj)
    return f"{module}.{name}" if module and module != "builtins" else name


def _stable(value, flattened: set[int]) -> str:
    """A printable form of a parameter value without memory addresses or set order."""
    if value is None or isinstance(value, (bool, int, float, str, bytes)):
        return repr(value)
    if isinstance(value, np.generic):
        return repr(value.item())
    if isinstance(value, type) or inspect.isroutine(value):
        return _qualname(value)
    if isinstance(value, functools.partial):
        arguments = [_stable(a, flattened) for a in value.args]
        arguments += [f"{k}={_stable(v, flattened)}" for k, v in sorted(value.keywords.items())]
        return f"partial({_stable(value.func, flattened)}, {', '.join(arguments)})"
    if _is_estimator(value):
        if id(value) in flattened:  # its parameters are listed under their own keys
            return _qualname(type(value))
        inner = sorted(value.get_params(deep=False).items())
        arguments = ", ".join(f"{k}={_stable(v, flattened)}" for k, v in inner)
        return f"{_qualname(type(value))}({arguments})"
    if isinstance(value, np.ndarray):
        digest = hashlib.sha256()
        _update_array(digest, value)
        return f"array(shape={value.shape}, dtype={value.dtype}, sha256={digest.hexdigest()[:16]})"
    if isinstance(value, Mapping):
        items = sorted((_stable(k, flattened), _stable(v, flattened)) for k, v in value.items())
        return "{" + ", ".join(f"{k}: {v}" for k, v in items) + "}"
    if isinstance(value, (set, frozenset)):
        return "{" + ", ".join(sorted(_stable(v, flattened) for v in value)) + "}"
    if isinstance(value, (list, tuple)):
        items = ", ".join(_stable(v, flattened) for v in value)
        return f"[{items}]" if isinstance(value, list) else f"({items})"
    return _ADDRESS.sub("", repr(value))
