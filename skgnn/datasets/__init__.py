"""Data shipped with skgnn, read with matminer's own loader.

``DATA_HOME`` holds ``matbench_jdft2d.json.gz`` (636 exfoliation energies of
layered materials, meV/atom; JARVIS-DFT via Matbench v0.1), so that
``matminer.datasets.load_dataset("matbench_jdft2d", data_home=DATA_HOME)``
works offline.
"""

from pathlib import Path

DATA_HOME: str = str(Path(__file__).resolve().parent)

__all__ = ["DATA_HOME"]
