"""What crystal graphs were built with, so that a fitted model accepts only graphs built alike."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .exceptions import GraphSettingsError


@dataclass(frozen=True, eq=False)
class GraphSettings:
    """The settings a :class:`~skgnn.CrystalGraphs` was built with.

    A network learns on one atom feature table, one Gaussian expansion of the
    edge lengths and one neighbour graph; graphs built otherwise may even have
    the same widths and still mean something else. A fitted estimator records
    these at ``fit``, as scikit-learn records ``n_features_in_``, and refuses
    other graphs at ``predict``.

    Parameters
    ----------
    atom_features : ndarray of shape (n_elements, n_atom_features)
        The element feature table, indexed by atomic number.
    gaussian_centers : ndarray of shape (n_gaussians,)
        Centres of the Gaussians, Å.
    gaussian_width : float
        Their width, Å.
    cutoff : float
        Neighbour search radius, Å.
    max_neighbors : int
        Neighbours kept per atom.
    """

    atom_features: np.ndarray
    gaussian_centers: np.ndarray
    gaussian_width: float
    cutoff: float
    max_neighbors: int

    @classmethod
    def of(cls, graphs) -> GraphSettings:
        """The settings of a :class:`~skgnn.CrystalGraphs`."""
        return cls(
            atom_features=np.asarray(graphs.atom_feature_values, dtype=np.float32),
            gaussian_centers=np.asarray(graphs.gaussian_centers, dtype=np.float32),
            gaussian_width=float(graphs.gaussian_width),
            cutoff=float(graphs.cutoff),
            max_neighbors=int(graphs.max_neighbors),
        )

    def differences(self, other: GraphSettings) -> list[str]:
        """One phrase per setting in which ``self`` differs from ``other``."""
        found = []
        if not _same_array(self.atom_features, other.atom_features):
            found.append(
                "atom_features: a table of shape "
                f"{self.atom_features.shape} with other values, not the "
                f"{other.atom_features.shape} table"
                if self.atom_features.shape == other.atom_features.shape
                else f"atom_features: a table of shape {self.atom_features.shape}, not "
                f"{other.atom_features.shape}"
            )
        if not _same_array(self.gaussian_centers, other.gaussian_centers):
            found.append(
                f"Gaussian centres: {_describe(self.gaussian_centers)}, not "
                f"{_describe(other.gaussian_centers)}"
            )
        for name in ("gaussian_width", "cutoff", "max_neighbors"):
            mine, theirs = getattr(self, name), getattr(other, name)
            if mine != theirs:
                found.append(f"{name}: {mine:g}, not {theirs:g}")
        return found

    def same_as(self, other: GraphSettings) -> bool:
        return not self.differences(other)

    def check(self, graphs, estimator_name: str) -> None:
        """Raise :class:`GraphSettingsError` unless ``graphs`` were built with these settings."""
        differences = GraphSettings.of(graphs).differences(self)
        if differences:
            raise GraphSettingsError(
                f"{estimator_name} was fitted on crystal graphs built with other settings; "
                f"these graphs have {'; '.join(differences)}. Build them with the "
                "CrystalGraphTransformer settings used at fit (a Pipeline does this for you)."
            )


def _same_array(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and np.array_equal(a, b)


def _describe(centers: np.ndarray) -> str:
    if len(centers) < 2:
        return f"{len(centers)} at {centers.tolist()}"
    step = (centers[-1] - centers[0]) / (len(centers) - 1)
    return f"{len(centers)} from {centers[0]:g} to {centers[-1]:g} Å (step {step:.3g})"
