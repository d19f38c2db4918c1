"""Matminer tabular baselines that take the same ``X`` (structures) as the graph models.

matminer featurizers are built inside ``fit`` from plain names, so the estimators here survive
``sklearn.clone`` and run inside ``cross_val_score`` and ``GridSearchCV``; matminer's own objects
do not always (``StructureToComposition``, some ``SiteStatsFingerprint`` presets, and ``n_jobs``
reset to all cores by ``clone``).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from numbers import Integral, Real

import numpy as np
from joblib import effective_n_jobs
from matminer.featurizers import composition as cf
from matminer.featurizers import site as sf
from matminer.featurizers import structure as stf
from matminer.featurizers.base import BaseFeaturizer, MultipleFeaturizer
from sklearn.base import BaseEstimator, TransformerMixin, _fit_context
from sklearn.ensemble import HistGradientBoostingRegressor, RandomForestRegressor
from sklearn.feature_selection import SelectorMixin
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.utils._param_validation import Interval
from sklearn.utils.validation import check_is_fitted, validate_data

from .structures import to_structures

#: Featurizers of ``structure.composition``, by name; each builds a fresh matminer object.
COMPOSITION_FEATURIZERS: dict[str, Callable[[], BaseFeaturizer]] = {
    "magpie": lambda: cf.ElementProperty.from_preset("magpie"),
    "deml": lambda: cf.ElementProperty.from_preset("deml"),
    "megnet_el": lambda: cf.ElementProperty.from_preset("megnet_el"),
    "matscholar_el": lambda: cf.ElementProperty.from_preset("matscholar_el"),
    "stoichiometry": cf.Stoichiometry,
    "valence_orbital": cf.ValenceOrbital,
    "ion_property": lambda: cf.IonProperty(fast=True),
    "band_center": cf.BandCenter,
    "transition_metal_fraction": cf.TMetalFraction,
}

#: Featurizers of the structure, by name. Voronoi- and CrystalNN-based ones (the last five)
#: cost 60-400 ms per structure, about a hundred times the others.
STRUCTURE_FEATURIZERS: dict[str, Callable[[], BaseFeaturizer]] = {
    "sine_coulomb": lambda: stf.SineCoulombMatrix(flatten=True),
    "density": stf.DensityFeatures,
    # crystal_system is a string; its integer code carries the same information
    "global_symmetry": lambda: stf.GlobalSymmetryFeatures(
        ["spacegroup_num", "crystal_system_int", "is_centrosymmetric", "n_symmetry_ops"]
    ),
    "structural_complexity": stf.StructuralComplexity,
    "agni_stats": lambda: stf.SiteStatsFingerprint(
        sf.AGNIFingerprints(directions=(None,)), stats=("mean", "std_dev", "minimum", "maximum")
    ),
    "rdf": stf.RadialDistributionFunction,
    "structural_heterogeneity": stf.StructuralHeterogeneity,
    "maximum_packing_efficiency": stf.MaximumPackingEfficiency,
    "chemical_ordering": stf.ChemicalOrdering,
    "dimensionality": stf.Dimensionality,
    "crystalnn_stats": lambda: stf.SiteStatsFingerprint.from_preset("CrystalNNFingerprint_ops"),
}


def _names(value, registry: dict, param: str) -> list[str]:
    names = [] if value is None else [value] if isinstance(value, str) else list(value)
    for name in names:
        if name not in registry:
            raise ValueError(
                f"Unknown featurizer {name!r} in {param}; choose from {sorted(registry)}."
            )
    if len(set(names)) < len(names):
        raise ValueError(f"{param} names a featurizer twice: {names}.")
    return names


class StructureFeaturizer(TransformerMixin, BaseEstimator):
    """Turn crystal structures into a table of matminer features.

    Composition featurizers see ``structure.composition``; structure featurizers
    see the structure. The matminer objects are built, and fitted where they
    need it (``SineCoulombMatrix`` pads to the largest structure seen), in
    ``fit``, on the training structures only.

    Parameters
    ----------
    composition_featurizers : str, sequence of str or None, default=("magpie",)
        Names from :data:`COMPOSITION_FEATURIZERS`.
    structure_featurizers : str, sequence of str or None, default=("sine_coulomb",)
        Names from :data:`STRUCTURE_FEATURIZERS`.
    n_jobs : int or None, default=1
        Processes matminer featurizes with (its ``set_n_jobs``; ``-1`` for all
        cores). The default, 1, avoids oversubscribing inside parallel searches.
    ignore_errors : bool, default=True
        Give NaN features to a structure a featurizer fails on (for example a
        test structure with more sites than any ``SineCoulombMatrix`` saw in
        ``fit``), instead of raising.

    Attributes
    ----------
    composition_featurizer_ : matminer MultipleFeaturizer or None
    structure_featurizer_ : matminer MultipleFeaturizer or None
    feature_names_out_ : ndarray of str
        Column names, composition features first.

    Examples
    --------
    >>> from pymatgen.core import Lattice, Structure
    >>> nacl = Structure(Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    >>> featurizer = StructureFeaturizer(composition_featurizers="stoichiometry",
    ...                                  structure_featurizers="density")
    >>> featurizer.fit_transform([nacl]).shape
    (1, 9)
    >>> featurizer.get_feature_names_out()[-3:].tolist()
    ['density', 'vpa', 'packing fraction']
    """

    _parameter_constraints: dict = {
        "composition_featurizers": [str, list, tuple, None],
        "structure_featurizers": [str, list, tuple, None],
        "n_jobs": [Integral, None],
        "ignore_errors": ["boolean"],
    }

    def __init__(
        self,
        *,
        composition_featurizers=("magpie",),
        structure_featurizers=("sine_coulomb",),
        n_jobs: int | None = 1,
        ignore_errors: bool = True,
    ) -> None:
        self.composition_featurizers = composition_featurizers
        self.structure_featurizers = structure_featurizers
        self.n_jobs = n_jobs
        self.ignore_errors = ignore_errors

    def _build(self) -> tuple[MultipleFeaturizer | None, MultipleFeaturizer | None]:
        comp = _names(self.composition_featurizers, COMPOSITION_FEATURIZERS,
                      "composition_featurizers")  # fmt: skip
        struct = _names(self.structure_featurizers, STRUCTURE_FEATURIZERS, "structure_featurizers")
        if not comp and not struct:
            raise ValueError("StructureFeaturizer needs at least one featurizer; both are empty.")
        comp_f = [COMPOSITION_FEATURIZERS[name]() for name in comp]
        struct_f = [STRUCTURE_FEATURIZERS[name]() for name in struct]
        return (MultipleFeaturizer(comp_f) if comp_f else None,
                MultipleFeaturizer(struct_f) if struct_f else None)  # fmt: skip

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None) -> StructureFeaturizer:
        """Build the featurizers and fit those that learn from the training structures.

        Parameters
        ----------
        X : sequence of Structure, CIF path or CIF text
            A list, numpy array or pandas Series.
        y : ignored

        Returns
        -------
        self : StructureFeaturizer
        """
        structures = to_structures(X)
        self.composition_featurizer_, self.structure_featurizer_ = self._build()
        if self.composition_featurizer_ is not None:
            self.composition_featurizer_.fit([s.composition for s in structures])
        if self.structure_featurizer_ is not None:
            self.structure_featurizer_.fit(structures)
        self.feature_names_out_ = np.asarray(self.feature_labels(), dtype=object)
        return self

    def transform(self, X) -> np.ndarray:
        """Featurize ``X``.

        Returns
        -------
        ndarray of shape (n_structures, n_features), float
            NaN where a featurizer failed and ``ignore_errors`` is true.
        """
        check_is_fitted(self)
        structures = to_structures(X)
        blocks = [np.empty((len(structures), 0))]
        if self.composition_featurizer_ is not None:
            compositions = [s.composition for s in structures]
            blocks.append(self._featurize(self.composition_featurizer_, compositions))
        if self.structure_featurizer_ is not None:
            blocks.append(self._featurize(self.structure_featurizer_, structures))
        return np.hstack(blocks)

    def _featurize(self, featurizer: MultipleFeaturizer, entries: list) -> np.ndarray:
        # set at each call, not in fit, so that set_params(n_jobs=...) on a fitted model counts
        n_jobs = effective_n_jobs(self.n_jobs)
        featurizer.set_n_jobs(n_jobs)
        # matminer's pool starts a fresh process per chunk (10 by default): one chunk per worker
        featurizer.set_chunksize(max(1, -(-len(entries) // n_jobs)))
        with warnings.catch_warnings():
            # matminer (np.matrix) and spglib warn about their own internals once per structure
            warnings.simplefilter("ignore", PendingDeprecationWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            rows = featurizer.featurize_many(entries, ignore_errors=self.ignore_errors, pbar=False)
        return np.asarray(rows, dtype=float).reshape(len(entries), -1)

    def get_feature_names_out(self, input_features=None) -> np.ndarray:
        """Feature names, for ``set_output(transform="pandas")``."""
        check_is_fitted(self)
        return self.feature_names_out_.copy()

    def feature_labels(self) -> list[str]:
        """Feature names, matminer style."""
        check_is_fitted(self, ["composition_featurizer_", "structure_featurizer_"])
        fitted = (self.composition_featurizer_, self.structure_featurizer_)
        return [label for f in fitted if f is not None for label in f.feature_labels()]

    def citations(self) -> list[str]:
        """BibTeX of the papers behind the chosen featurizers, matminer style."""
        cited = [c for f in self._build() if f is not None for g in f.featurizers
                 for c in g.citations()]  # fmt: skip
        return list(dict.fromkeys(cited))

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False
        tags.input_tags.string = True  # CIF paths and text
        tags.transformer_tags.preserves_dtype = []
        return tags


class DropNaNColumns(SelectorMixin, BaseEstimator):
    """Drop the columns whose NaN fraction in the training data exceeds a threshold.

    The choice is made in ``fit`` only, so test rows never decide which features
    a model sees. Follow it with an imputer for the NaN that remain.

    Parameters
    ----------
    max_nan_fraction : float, default=0.01
        Keep a column if at most this fraction of its training values is NaN.

    Attributes
    ----------
    nan_fraction_ : ndarray of shape (n_features_in_,)
        NaN fraction of each column in the training data.
    support_ : ndarray of bool
        Kept columns.
    """

    _parameter_constraints: dict = {"max_nan_fraction": [Interval(Real, 0, 1, closed="both")]}

    def __init__(self, *, max_nan_fraction: float = 0.01) -> None:
        self.max_nan_fraction = max_nan_fraction

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None) -> DropNaNColumns:
        """Measure each column's NaN fraction in ``X`` and choose the columns to keep."""
        X = validate_data(self, X, dtype=float, ensure_all_finite="allow-nan")
        self.nan_fraction_ = np.isnan(X).mean(axis=0)
        self.support_ = self.nan_fraction_ <= self.max_nan_fraction
        return self

    def _get_support_mask(self) -> np.ndarray:
        check_is_fitted(self)
        return self.support_

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        return tags


class RandomForestWithStd(RandomForestRegressor):
    """A random forest whose ``predict(X, return_std=True)`` also gives the spread of its trees.

    The standard deviation of the trees' predictions is the forest's natural
    uncertainty (as in Matbench's RF-SCM/Magpie, and lolo's jackknife without
    its bias correction); use :class:`~skgnn.calibration.RecalibratedRegressor`
    to calibrate it. Predictions are those of ``RandomForestRegressor``.
    """

    def predict(self, X, return_std: bool = False):
        """The forest's prediction and, with ``return_std``, the standard deviation over trees."""
        if not return_std:
            return super().predict(X)
        X = self._validate_X_predict(X)
        trees = np.stack([tree.predict(X) for tree in self.estimators_])
        return trees.mean(axis=0), trees.std(axis=0)


def make_rf_scm_magpie(
    n_estimators: int = 500, random_state: int | None = None, n_jobs: int | None = 1
) -> Pipeline:
    """Matbench's RF-SCM/Magpie baseline as a Pipeline on structures.

    Magpie ``ElementProperty`` statistics of the composition plus the flattened
    ``SineCoulombMatrix`` eigenvalues; columns more than 1% NaN in the training
    data dropped, the rest mean-imputed; a random forest of ``n_estimators`` trees
    (:class:`RandomForestWithStd`, so ``predict(X, return_std=True)`` works).
    ``n_jobs`` is given to both featurization and the forest.
    """
    return Pipeline([
        ("featurize", StructureFeaturizer(composition_featurizers=("magpie",),
                                          structure_featurizers=("sine_coulomb",), n_jobs=n_jobs)),
        ("drop_nan", DropNaNColumns(max_nan_fraction=0.01)),
        ("impute", SimpleImputer(strategy="mean")),
        ("model", RandomForestWithStd(n_estimators=n_estimators, random_state=random_state,
                                      n_jobs=n_jobs)),
    ])  # fmt: skip


STRONG_COMPOSITION = ("magpie", "stoichiometry", "valence_orbital", "ion_property")
STRONG_STRUCTURE = ("density", "global_symmetry", "structural_complexity", "agni_stats")


def make_strong_tabular(
    max_iter: int = 500,
    learning_rate: float = 0.05,
    loss: str = "absolute_error",
    random_state: int | None = None,
    n_jobs: int | None = 1,
) -> Pipeline:
    """A stronger tabular model: cheap structural features and gradient boosting.

    Magpie and other composition features plus density, symmetry, structural
    complexity and AGNI site-fingerprint statistics (:data:`STRONG_COMPOSITION`,
    :data:`STRONG_STRUCTURE`; about 15 ms per structure on one core), fed to a
    ``HistGradientBoostingRegressor``, which handles NaN itself. The absolute-error
    loss matches Matbench's MAE and resists heavy-tailed targets (jdft2d's).
    ``n_jobs`` is for featurization; the booster's OpenMP threads follow
    ``OMP_NUM_THREADS`` or ``threadpoolctl``.
    """
    return Pipeline([
        ("featurize", StructureFeaturizer(composition_featurizers=STRONG_COMPOSITION,
                                          structure_featurizers=STRONG_STRUCTURE, n_jobs=n_jobs)),
        ("model", HistGradientBoostingRegressor(loss=loss, max_iter=max_iter,
                                                learning_rate=learning_rate, min_samples_leaf=10,
                                                random_state=random_state)),
    ])  # fmt: skip
