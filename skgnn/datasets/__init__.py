"""Data shipped with skgnn, read with matminer's own loader.

``DATA_HOME`` holds ``matbench_jdft2d.json.gz`` (636 exfoliation energies of
layered materials, meV/atom; JARVIS-DFT via Matbench v0.1), so that
``matminer.datasets.load_dataset("matbench_jdft2d", data_home=DATA_HOME)``
works offline, and ``matbench_leaderboard.json``, the published scores that
results on such tasks are read against (:func:`matbench_leaderboard`).
"""

import json
from pathlib import Path

DATA_HOME: str = str(Path(__file__).resolve().parent)

__all__ = ["DATA_HOME", "matbench_leaderboard"]


def matbench_leaderboard() -> dict[str, dict]:
    """Matbench v0.1 leaderboard figures of the tasks skgnn's examples and benchmarks run.

    Returns
    -------
    dict
        Task name to ``{"target": column, "unit": str, "mae": {model: mean MAE}}``;
        the MAE is the mean over the five official folds, in the target's unit.

    Examples
    --------
    >>> matbench_leaderboard()["matbench_jdft2d"]["mae"]["CGCNN"]
    49.244
    """
    return json.loads((Path(DATA_HOME) / "matbench_leaderboard.json").read_text())["tasks"]
