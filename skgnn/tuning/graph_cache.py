"""Crystal graphs built once per set of transformer parameters and shared by folds and trials.

The transformer is stateless, so graphing all rows before a CV split fits
nothing on test rows: one graph set serves every fold of every trial that uses
the same transformer parameters.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from sklearn.base import BaseEstimator, clone
from sklearn.pipeline import Pipeline

from ..graphs import CrystalGraphs
from ..transformer import CrystalGraphTransformer

__all__ = ["GraphCache", "split_graph_stage"]


class GraphCache:
    """Crystal graphs of one ``X``, kept per set of transformer parameters.

    Parameters
    ----------
    X : sequence of structures
    max_entries : int, default=4
        Graph sets kept at once; the least recently used goes first.

    Attributes
    ----------
    hits : int
        Requests answered from the cache.
    seconds_saved : float
        Graph construction those requests skipped, in seconds.
    """

    def __init__(self, X: Sequence, max_entries: int = 4) -> None:
        self.X = X
        self.max_entries = max_entries
        self._entries: dict[str, tuple[CrystalGraphs, float]] = {}
        self.hits = 0
        self.seconds_saved = 0.0

    def graphs(self, transformer: CrystalGraphTransformer) -> CrystalGraphs:
        """The graphs of ``X`` under ``transformer``'s parameters, built on first request."""
        key = repr(sorted(transformer.get_params().items()))
        if key in self._entries:
            graphs, seconds = self._entries.pop(key)
            self.hits += 1
            self.seconds_saved += seconds
        else:
            start = time.perf_counter()
            graphs = clone(transformer).fit_transform(self.X)
            seconds = time.perf_counter() - start
            if len(self._entries) >= self.max_entries:
                self._entries.pop(next(iter(self._entries)))
        self._entries[key] = (graphs, seconds)
        return graphs


def split_graph_stage(
    estimator: BaseEstimator,
) -> tuple[CrystalGraphTransformer | None, BaseEstimator]:
    """Split ``Pipeline([CrystalGraphTransformer, *rest])`` into the transformer and the rest.

    Any other estimator comes back whole, with ``None`` for the transformer.
    """
    if isinstance(estimator, Pipeline) and isinstance(
        estimator.steps[0][1], CrystalGraphTransformer
    ):
        rest = estimator.steps[1:]
        return estimator.steps[0][1], rest[0][1] if len(rest) == 1 else Pipeline(rest)
    return None, estimator
