"""The official Matbench v0.1 folds as a scikit-learn CV splitter."""

from __future__ import annotations

from sklearn.model_selection import KFold

#: The seed Matbench v0.1 uses for its 5-fold splits of every task.
MATBENCH_SEED = 18012019


class MatbenchKFold(KFold):
    """Matbench v0.1 cross-validation: 5 shuffled folds seeded with 18012019.

    Over the rows in the order ``matminer.datasets.load_dataset`` returns them,
    these are the folds of the Matbench leaderboard, so scores computed with
    ``cv=MatbenchKFold()`` compare with its entries.

    Examples
    --------
    >>> import numpy as np
    >>> train, test = next(MatbenchKFold().split(np.zeros(10)))
    >>> sorted(test.tolist())
    [1, 9]
    """

    def __init__(self) -> None:
        super().__init__(n_splits=5, shuffle=True, random_state=MATBENCH_SEED)

    def __repr__(self) -> str:
        return "MatbenchKFold()"
