"""CrystalGraphTransformer: structures in, crystal graphs out, inside any sklearn Pipeline."""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Mapping
from numbers import Integral, Real

import numpy as np
from joblib import Parallel, delayed, effective_n_jobs
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils._param_validation import Interval, StrOptions
from tqdm.auto import tqdm

from .atom_features import AtomFeatureTable, resolve_atom_features
from .graphs import CrystalGraphs
from .neighbors import check_elements, structure_to_graph
from .structures import as_sequence, to_structure

_CHUNK = 256  # most structures per joblib task: large enough to amortise pickling
_TASKS_PER_WORKER = 4  # small inputs are cut finer, so every worker of a cluster gets some


def _chunk_size(n_items: int, n_workers: int) -> int:
    """Structures per task: at most :data:`_CHUNK`, and a few tasks for each worker."""
    if n_workers <= 1:
        return _CHUNK
    return max(1, min(_CHUNK, math.ceil(n_items / (_TASKS_PER_WORKER * n_workers))))


def _graphs_of(items, first_index: int, table: AtomFeatureTable, settings: dict) -> dict:
    """The flat arrays (:attr:`CrystalGraphs._ARRAYS`) of one chunk's graphs, built in a worker.

    Only the arrays travel back, as compact as the container holds them; the
    atom feature table, the same object for every chunk, is not sent back
    (and joblib's dask backend scatters it to the workers once).
    """
    graphs = [
        structure_to_graph(
            to_structure(item, first_index + i),
            index=first_index + i,
            cutoff=settings["cutoff"],
            max_neighbors=settings["max_neighbors"],
        )
        for i, item in enumerate(items)
    ]
    check_elements(graphs, table, first_index)
    chunk = CrystalGraphs.from_graphs(graphs, atom_feature_values=table.values, **settings)
    return {name: getattr(chunk, name) for name in chunk.array_names}


class CrystalGraphTransformer(TransformerMixin, BaseEstimator, auto_wrap_output_keys=None):
    """Turn crystal structures into CGCNN crystal graphs.

    Each atom becomes a node carrying its element's feature vector; each atom
    is joined to its ``max_neighbors`` nearest neighbours within ``cutoff``
    under periodic boundary conditions; an edge carries its length, expanded
    per batch on Gaussians centred from ``gaussian_start`` to ``gaussian_stop``
    every ``gaussian_step`` Å (Xie & Grossman, PRL 120, 145301, 2018).
    Each edge also keeps its displacement vector, from which
    ``MessageNet(three_body=True)`` computes bond angles per batch.

    Neighbours are found by pymatgen's compiled ``find_points_in_spheres``,
    first within the radius of a sphere that holds about ``max_neighbors + 1``
    atoms at the cell's mean density, widened up to ``cutoff`` where an atom
    has fewer neighbours strictly inside: the same edges as a search of the
    whole cutoff, several times faster.

    Each item of ``X`` is checked before any search (:mod:`skgnn.crystal`):
    an item that is not a finite, 3-D periodic structure of elements with
    room for its sites raises :class:`~skgnn.exceptions.StructureError`
    naming ``X[i]`` and what is wrong.

    The transformer is stateless: ``fit`` only validates the parameters.

    Parameters
    ----------
    cutoff : float, default=8.0
        Neighbour search radius in Å. If an atom has no neighbour within it,
        the radius grows by half for that structure until every atom has one
        (at the latest at the shortest lattice vector, where every atom has a
        periodic image of itself).
    max_neighbors : int, default=12
        Neighbours kept per atom, nearest first. Equal distances (on a 1e-5 Å
        grid) are ordered by the neighbour's atomic number (the largest on a
        disordered site), then its site index, then its periodic image. No
        padding: an atom with fewer neighbours keeps fewer edges.
    gaussian_start : float, default=0.0
        First Gaussian centre, Å.
    gaussian_stop : float or None, default=None
        Last Gaussian centre, Å; ``None`` means ``cutoff``.
    gaussian_step : float, default=0.2
        Spacing of the centres, Å.
    gaussian_width : float or None, default=None
        Width ``σ`` in ``exp(-(d - μ)² / σ²)``; ``None`` means ``gaussian_step``.
    atom_features : {"cgcnn"}, path, mapping or None, default=None
        Element features: ``None`` or ``"cgcnn"`` for the built-in 92-feature
        CGCNN-style table (elements 1–100), the path of a JSON file keyed by
        atomic number such as CGCNN's ``atom_init.json``, or a mapping from
        atomic number or symbol to vector. A disordered site gets the
        occupancy-weighted sum of its elements' vectors.
    n_jobs : int or None, default=None
        Processes for graph construction (joblib; ``-1`` for all cores).
    verbose : int, default=0
        Show a progress bar when positive.

    Examples
    --------
    >>> from pymatgen.core import Lattice, Structure
    >>> nacl = Structure(Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    >>> graphs = CrystalGraphTransformer().fit_transform([nacl])
    >>> len(graphs), graphs.n_edges.tolist(), graphs.n_edge_features
    (1, [24], 41)
    """

    _parameter_constraints: dict = {
        "cutoff": [Interval(Real, 0, None, closed="neither")],
        "max_neighbors": [Interval(Integral, 1, None, closed="left")],
        "gaussian_start": [Interval(Real, 0, None, closed="left")],
        "gaussian_stop": [Interval(Real, 0, None, closed="neither"), None],
        "gaussian_step": [Interval(Real, 0, None, closed="neither")],
        "gaussian_width": [Interval(Real, 0, None, closed="neither"), None],
        "atom_features": [StrOptions({"cgcnn"}), str, os.PathLike, Mapping, AtomFeatureTable, None],
        "n_jobs": [Integral, None],
        "verbose": ["verbose"],
    }

    def __init__(
        self,
        *,
        cutoff: float = 8.0,
        max_neighbors: int = 12,
        gaussian_start: float = 0.0,
        gaussian_stop: float | None = None,
        gaussian_step: float = 0.2,
        gaussian_width: float | None = None,
        atom_features=None,
        n_jobs: int | None = None,
        verbose: int = 0,
    ) -> None:
        self.cutoff = cutoff
        self.max_neighbors = max_neighbors
        self.gaussian_start = gaussian_start
        self.gaussian_stop = gaussian_stop
        self.gaussian_step = gaussian_step
        self.gaussian_width = gaussian_width
        self.atom_features = atom_features
        self.n_jobs = n_jobs
        self.verbose = verbose

    def fit(self, X=None, y=None) -> CrystalGraphTransformer:
        """Validate the parameters; nothing is learned from ``X``.

        Returns
        -------
        self : CrystalGraphTransformer
        """
        self._validate_params()
        self._gaussian_centers()
        return self

    def _gaussian_centers(self) -> np.ndarray:
        stop = self.cutoff if self.gaussian_stop is None else self.gaussian_stop
        if stop <= self.gaussian_start:
            raise ValueError(
                f"gaussian_stop ({stop}) must be greater than gaussian_start "
                f"({self.gaussian_start})."
            )
        n = int(np.floor((stop - self.gaussian_start) / self.gaussian_step + 1e-9)) + 1
        return (self.gaussian_start + self.gaussian_step * np.arange(n)).astype(np.float32)

    def transform(self, X) -> CrystalGraphs:
        """Build the crystal graph of every structure in ``X``.

        Parameters
        ----------
        X : sequence of structures, structure files or CIF text
            A list, numpy array or pandas Series whose items are pymatgen
            structures of any kind (``Structure``, ``IStructure``, ``Slab``,
            ...), ``Structure.as_dict()`` mappings, paths (``str`` or
            ``os.PathLike``) of files ``Structure.from_file`` reads (CIF,
            compressed CIF, POSCAR, ...), or CIF text.

        Returns
        -------
        CrystalGraphs
            One graph per item of ``X``, in order.

        Raises
        ------
        skgnn.exceptions.StructureError
            For the first item that cannot be read or graphed, naming its
            index and what is wrong.
        """
        self._validate_params()
        items = as_sequence(X)
        if not items:
            raise ValueError("X is empty; pass at least one structure.")
        with tqdm(
            total=len(items), unit="structure", desc="crystal graphs", disable=not self.verbose
        ) as progress:
            parts = []
            for part in self._graph_chunks(items, first_index=0):
                parts.append(part)
                progress.update(len(part))
        return parts[0] if len(parts) == 1 else CrystalGraphs.concatenate(parts)

    def _graph_chunks(self, items: list, first_index: int) -> Iterator[CrystalGraphs]:
        """The graphs of ``items``, in order, one container per joblib task as it finishes.

        ``first_index`` is the position of ``items[0]`` in the user's ``X``,
        named in errors. Each task builds the graphs of one chunk of
        structures (a structure file or CIF text is read there, not here) and
        sends back only its flat arrays. Parameters are checked at the call,
        before any task runs.
        """
        self._validate_params()
        centers = self._gaussian_centers()
        table = resolve_atom_features(self.atom_features)
        width = self.gaussian_step if self.gaussian_width is None else self.gaussian_width
        settings = {
            "gaussian_centers": centers,
            "gaussian_width": float(width),
            "cutoff": float(self.cutoff),
            "max_neighbors": int(self.max_neighbors),
        }
        size = _chunk_size(len(items), effective_n_jobs(self.n_jobs))
        tasks = (
            delayed(_graphs_of)(items[s : s + size], first_index + s, table, settings)
            for s in range(0, len(items), size)
        )
        results = Parallel(n_jobs=self.n_jobs, return_as="generator")(tasks)
        return (CrystalGraphs(**arrays, atom_feature_values=table.values, **settings)
                for arrays in results)  # fmt: skip

    def set_output(self, *, transform=None) -> CrystalGraphTransformer:
        """Accept and ignore an output container: graphs are not a table.

        Lets ``Pipeline.set_output(transform="pandas")`` run on pipelines
        holding this transformer.
        """
        return self

    def __sklearn_is_fitted__(self) -> bool:
        return True  # stateless

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.requires_fit = False
        tags.input_tags.two_d_array = False
        tags.input_tags.string = True  # CIF paths and text
        tags.transformer_tags.preserves_dtype = []
        return tags

    def feature_labels(self) -> list[str]:
        """Names of the edge features, matminer style."""
        return [f"gaussian_{c:.2f}A" for c in self._gaussian_centers()]

    def get_feature_names_out(self, input_features=None) -> np.ndarray:
        """The edge feature names (:meth:`feature_labels`).

        Graphs are not a table; the names let scikit-learn name the columns
        of a fitted network's ``transform`` after this step in a Pipeline or
        ``FeatureUnion`` (the network names its own columns).
        """
        return np.array(self.feature_labels(), dtype=object)

    def citations(self) -> list[str]:
        """BibTeX of the CGCNN paper, matminer style."""
        return [
            "@article{xie2018crystal, title={Crystal Graph Convolutional Neural Networks for "
            "an Accurate and Interpretable Prediction of Material Properties}, author={Xie, "
            "Tian and Grossman, Jeffrey C.}, journal={Physical Review Letters}, volume={120}, "
            "number={14}, pages={145301}, year={2018}, doi={10.1103/PhysRevLett.120.145301}}"
        ]
