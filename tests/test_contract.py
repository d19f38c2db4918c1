"""The contract of a fitted estimator: no silent wrong answer (issue #11).

Each test names the defect it catches; each failed on main at 3aba85a.
"""

import io

import numpy as np
import pytest
import torch
from pymatgen.core import Lattice, Structure
from sklearn.base import clone
from skorch.callbacks import Callback

from skgnn import CGCNNClassifier, CGCNNRegressor, CrystalGraphTransformer
from skgnn.atom_features import resolve_atom_features
from skgnn.exceptions import GraphSettingsError, IncompatibleModelError

from .conftest import tiny_regressor


def tiny_classifier(**params):
    defaults = dict(
        max_epochs=3, batch_size=32, module__atom_fea_len=16, module__h_fea_len=16,
        module__n_conv=2, random_state=0,
    )  # fmt: skip
    return CGCNNClassifier(**{**defaults, **params})


@pytest.fixture(scope="module")
def graphs_40(jdft2d_graphs):
    graphs, y = jdft2d_graphs
    return graphs[:40], y[:40]


def _codes(y):
    return (y > np.median(y)).astype(int)


# ---- labels are encoded once -----------------------------------------------------------


@pytest.mark.parametrize(
    "labels",
    [np.array(["high", "low"]), np.array([1, 2]), np.array([-1, 1]), np.array([True, False])],
    ids=["strings", "one-two", "minus-plus", "booleans"],
)
def test_classifier_on_labels_equals_the_same_fit_on_codes(graphs_40, labels):
    graphs, y = graphs_40
    codes = _codes(y)
    ordered = np.sort(labels)
    on_codes = tiny_classifier().fit(graphs, codes)
    on_labels = tiny_classifier().fit(graphs, ordered[codes])
    np.testing.assert_array_equal(on_labels.predict_proba(graphs), on_codes.predict_proba(graphs))
    np.testing.assert_array_equal(on_labels.predict(graphs), ordered[on_codes.predict(graphs)])
    assert on_labels.history[:, "train_loss"] == on_codes.history[:, "train_loss"]


def test_classes_given_in_any_order(graphs_40):
    graphs, y = graphs_40
    labels = np.array(["low", "high"])[_codes(y)]
    model = tiny_classifier(classes=["low", "high"]).fit(graphs, labels)
    assert model.classes_.tolist() == ["high", "low"]
    reference = tiny_classifier().fit(graphs, labels)
    np.testing.assert_array_equal(model.predict_proba(graphs), reference.predict_proba(graphs))


def test_classes_lists_labels_missing_from_the_first_partial_fit(graphs_40):
    graphs, y = graphs_40
    model = tiny_classifier(classes=["a", "b", "c"])
    model.partial_fit(graphs[:20], np.array(["a", "b"] * 10))
    assert model.predict_proba(graphs).shape == (40, 3)
    model.partial_fit(graphs[20:], np.array(["c"] * 20))  # a known class, not seen before


def test_unseen_label_in_partial_fit_is_refused_naming_the_row(graphs_40):
    graphs, y = graphs_40
    model = tiny_classifier().partial_fit(graphs, np.array(["a", "b"])[_codes(y)])
    before = model.predict_proba(graphs)
    labels = np.array(["a"] * 40, dtype=object)
    labels[13] = "z"
    with pytest.raises(ValueError, match=r"y\[13\] = 'z' is not one of the classes"):
        model.partial_fit(graphs, labels)
    assert model.predict_proba(graphs).tobytes() == before.tobytes()


def test_nan_label_is_refused_naming_the_row(graphs_40):
    graphs, y = graphs_40
    labels = _codes(y).astype(float)
    labels[5] = np.nan
    with pytest.raises(ValueError, match=r"y\[5\] is nan, a missing label"):
        tiny_classifier().fit(graphs, labels)


def test_labels_given_to_fit_outside_classes_are_refused(graphs_40):
    graphs, y = graphs_40
    with pytest.raises(ValueError, match=r"y\[\d+\] = 'high' is not one of the classes"):
        tiny_classifier(classes=["low", "mid"]).fit(graphs, np.array(["low", "high"])[_codes(y)])


# ---- the input contract -----------------------------------------------------------------


def _table_with_other_values():
    table = resolve_atom_features(None)
    return {int(z): np.roll(table.values[z], 1).tolist() for z in np.flatnonzero(table.covered)}


@pytest.mark.parametrize(
    "settings, named",
    [
        (dict(gaussian_step=0.25), "Gaussian centres: 33"),
        (dict(gaussian_width=0.3), "gaussian_width: 0.3, not 0.2"),
        (dict(cutoff=6.0, gaussian_stop=8.0), "cutoff: 6, not 8"),
        (dict(max_neighbors=8), "max_neighbors: 8, not 12"),
        (dict(atom_features="other-values"), "atom_features: a table of shape"),
    ],
    ids=["gaussian-step", "gaussian-width", "cutoff", "max-neighbors", "atom-table"],
)
def test_predict_refuses_graphs_built_otherwise(jdft2d, graphs_40, settings, named):
    structures, _ = jdft2d
    graphs, y = graphs_40
    model = tiny_regressor(max_epochs=1).fit(graphs, y)
    if settings.get("atom_features") == "other-values":
        settings = {"atom_features": _table_with_other_values()}
    other = CrystalGraphTransformer(**settings).fit_transform(structures[:5])
    with pytest.raises(GraphSettingsError, match=named):
        model.predict(other)


def test_partial_fit_refuses_graphs_built_otherwise(jdft2d, graphs_40):
    structures, _ = jdft2d
    graphs, y = graphs_40
    model = tiny_regressor(max_epochs=1).fit(graphs, y)
    other = CrystalGraphTransformer(max_neighbors=6).fit_transform(structures[:5])
    with pytest.raises(GraphSettingsError, match="max_neighbors: 6, not 12"):
        model.partial_fit(other, y[:5])


# ---- saved weights restore the model ---------------------------------------------------------


def test_saved_weights_restore_the_model_in_a_fresh_estimator(graphs_40, tmp_path):
    graphs, y = graphs_40
    model = tiny_regressor().fit(graphs, 1000 * y + 5)
    model.save_params(f_params=tmp_path / "params.pt")
    fresh = tiny_regressor().initialize()  # skorch's documented path, nothing copied by hand
    fresh.load_params(f_params=tmp_path / "params.pt")
    assert fresh.predict(graphs).tobytes() == model.predict(graphs).tobytes()


def test_loaded_weights_bring_their_units_over_an_earlier_fit(graphs_40, tmp_path):
    graphs, y = graphs_40
    model = tiny_regressor().fit(graphs, y)
    model.save_params(f_params=tmp_path / "params.pt")
    other = tiny_regressor().fit(graphs, 1e6 * y - 3)  # other units
    other.load_params(f_params=tmp_path / "params.pt")
    assert other.predict(graphs).tobytes() == model.predict(graphs).tobytes()


def test_saved_classifier_restores_its_classes(graphs_40):
    graphs, y = graphs_40
    model = tiny_classifier().fit(graphs, np.array(["metal", "insulator"])[_codes(y)])
    buffer = io.BytesIO()
    model.save_params(f_params=buffer)
    buffer.seek(0)
    fresh = tiny_classifier().initialize()
    fresh.load_params(f_params=buffer)
    assert fresh.classes_.tolist() == ["insulator", "metal"]
    np.testing.assert_array_equal(fresh.predict(graphs), model.predict(graphs))


def test_saved_weights_carry_the_input_contract(jdft2d, graphs_40, tmp_path):
    structures, _ = jdft2d
    graphs, y = graphs_40
    model = tiny_regressor(max_epochs=1).fit(graphs, y)
    model.save_params(f_params=tmp_path / "params.pt")
    fresh = tiny_regressor().initialize()
    fresh.load_params(f_params=tmp_path / "params.pt")
    other = CrystalGraphTransformer(gaussian_step=0.5).fit_transform(structures[:3])
    with pytest.raises(GraphSettingsError, match="Gaussian centres"):
        fresh.predict(other)


def test_weights_saved_with_other_sizes_rebuild_the_network(jdft2d, tmp_path):
    structures, y = jdft2d
    graphs = CrystalGraphTransformer(gaussian_step=0.5).fit_transform(structures[:30])
    model = tiny_regressor().fit(graphs, np.stack([y[:30], -y[:30]], axis=1))
    model.save_params(f_params=tmp_path / "params.pt")
    fresh = tiny_regressor().initialize()  # default sizes: 41 Gaussians, one output
    fresh.load_params(f_params=tmp_path / "params.pt")
    np.testing.assert_array_equal(fresh.predict(graphs), model.predict(graphs))


def test_weights_without_a_contract_are_refused(graphs_40, tmp_path):
    graphs, y = graphs_40
    model = tiny_regressor(max_epochs=1).fit(graphs, y)
    state = {k: v for k, v in model.module_.state_dict().items() if "fitted_contract" not in k}
    torch.save(state, tmp_path / "bare.pt")
    fresh = tiny_regressor().initialize()
    with pytest.raises(IncompatibleModelError, match="without skgnn's contract"):
        fresh.load_params(f_params=tmp_path / "bare.pt")


def test_weights_of_a_classifier_are_refused_by_a_regressor(graphs_40, tmp_path):
    graphs, y = graphs_40
    tiny_classifier(max_epochs=1).fit(graphs, _codes(y)).save_params(f_params=tmp_path / "c.pt")
    with pytest.raises(IncompatibleModelError, match="weights of a CGCNNClassifier"):
        tiny_regressor().initialize().load_params(f_params=tmp_path / "c.pt")


def test_weights_of_another_architecture_are_refused(graphs_40, tmp_path):
    graphs, y = graphs_40
    model = tiny_regressor(max_epochs=1).fit(graphs, y)
    before = model.predict(graphs)
    tiny_regressor(max_epochs=1, module__n_conv=3).fit(graphs, y).save_params(
        f_params=tmp_path / "deeper.pt"
    )
    with pytest.raises(IncompatibleModelError, match="does not fit this CGCNNRegressor"):
        model.load_params(f_params=tmp_path / "deeper.pt")
    assert model.predict(graphs).tobytes() == before.tobytes()


def test_initialized_but_unfitted_estimator_does_not_predict(graphs_40):
    graphs, _ = graphs_40
    with pytest.raises(Exception, match="initialized but not fitted"):
        tiny_regressor().initialize().predict(graphs)


# ---- all or nothing ---------------------------------------------------------------------------


class _FailAtEpoch(Callback):
    def __init__(self, epoch=1):
        self.epoch = epoch

    def on_epoch_end(self, net, **kwargs):
        if len(net.history) >= self.epoch:
            raise RuntimeError("disk full")


@pytest.mark.parametrize("how", ["fit", "partial_fit", "warm_start"])
def test_a_fit_that_fails_midway_leaves_the_model_as_it_was(graphs_40, how):
    graphs, y = graphs_40
    model = tiny_regressor().fit(graphs, y)
    before, epochs = model.predict(graphs), len(model.history)
    model.set_params(callbacks=[_FailAtEpoch()], warm_start=how == "warm_start")
    model.initialize_callbacks()  # skorch's set_params leaves a fitted net's callbacks_ as they are
    with pytest.raises(RuntimeError, match="disk full"):
        getattr(model, "partial_fit" if how == "partial_fit" else "fit")(graphs, 3 * y)
    assert model.predict(graphs).tobytes() == before.tobytes()
    assert len(model.history) == epochs


@pytest.mark.parametrize(
    "weight, match",
    [
        (lambda n: -np.ones(n), r"sample_weight\[0\] is -1.0"),
        (lambda n: np.ones(n + 1), r"sample_weight has shape \(41,\)"),
        (lambda n: np.zeros(n), "sums to zero"),
    ],
    ids=["negative", "length", "zero"],
)
def test_bad_sample_weight_is_refused_before_anything_changes(graphs_40, weight, match):
    graphs, y = graphs_40
    model = tiny_regressor(max_epochs=1).fit(graphs, y)
    before = model.predict(graphs)
    with pytest.raises(ValueError, match=match):
        model.fit(graphs, y, sample_weight=weight(len(y)))
    assert model.predict(graphs).tobytes() == before.tobytes()


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("batch_size", [1, 3])
def test_batches_of_one_atom_in_all_train(seed, batch_size):
    cells = [Structure(Lattice.cubic(a), ["Po"], [[0, 0, 0]]) for a in (3.2, 3.3, 3.4, 3.5)] + [
        Structure(Lattice.cubic(4.0), ["Cs", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    ]
    graphs = CrystalGraphTransformer().fit_transform(cells)
    model = tiny_regressor(max_epochs=2, batch_size=batch_size, random_state=seed)
    model.fit(graphs, np.arange(5.0))
    assert np.isfinite(model.predict(graphs)).all()


# ---- sample weights -----------------------------------------------------------------------------


def test_sample_weight_makes_the_loss_a_weighted_mean(graphs_40):
    graphs, y = graphs_40
    model = tiny_regressor(max_epochs=1).fit(graphs, y)
    y_pred, y_true = torch.randn(6, 1), torch.randn(6, 1)
    batch = graphs.batch(np.arange(6))
    batch.sample_weight = torch.tensor([1.0, 0.0, 2.0, 0.5, 0.0, 3.0])
    per_row = torch.nn.functional.smooth_l1_loss(y_pred, y_true, reduction="none")[:, 0]
    expected = (per_row * batch.sample_weight).sum() / batch.sample_weight.sum()
    torch.testing.assert_close(model.get_loss(y_pred, y_true, X=batch, training=True), expected)
    assert model.criterion_.reduction == "mean"


def test_unit_sample_weights_equal_no_weights(graphs_40):
    graphs, y = graphs_40
    plain = tiny_regressor().fit(graphs, y).predict(graphs)
    weighted = tiny_regressor().fit(graphs, y, sample_weight=np.ones(len(y))).predict(graphs)
    np.testing.assert_allclose(weighted, plain, rtol=1e-5)


def test_sample_weight_is_routed_through_a_pipeline(jdft2d):
    from sklearn import config_context
    from sklearn.model_selection import cross_validate
    from sklearn.pipeline import make_pipeline

    structures, y = jdft2d
    structures, y = structures[:30], y[:30]
    weight = np.where(np.arange(30) % 3 == 0, 0.0, 1.0)
    pipe = make_pipeline(CrystalGraphTransformer(), tiny_regressor(max_epochs=2))
    by_prefix = clone(pipe).fit(structures, y, cgcnnregressor__sample_weight=weight)
    assert by_prefix[-1].history[-1, "train_loss"] > 0
    with config_context(enable_metadata_routing=True):
        routed = make_pipeline(
            CrystalGraphTransformer(),
            tiny_regressor(max_epochs=2)
            .set_fit_request(sample_weight=True)
            .set_score_request(sample_weight=True),
        )
        cross_validate(routed, structures, y, cv=2, params={"sample_weight": weight})
        fitted = clone(routed).fit(structures, y, sample_weight=weight)
    np.testing.assert_array_equal(fitted.predict(structures), by_prefix.predict(structures))


# ---- parameters are declared ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "params, message",
    [
        (dict(validation_fraction=1.5),
         "The 'validation_fraction' parameter of CGCNNRegressor must be a float in the range "
         "(0.0, 1.0) or None. Got 1.5 instead."),
        (dict(patience=0), "The 'patience' parameter of CGCNNRegressor must be an int in the "
         "range [1, inf). Got 0 instead."),
        (dict(random_state=-1), "The 'random_state' parameter of CGCNNRegressor must be"),
    ],
    ids=["validation_fraction", "patience", "random_state"],
)  # fmt: skip
def test_parameters_are_validated_at_fit_in_scikit_learns_words(graphs_40, params, message):
    graphs, y = graphs_40
    model = tiny_regressor(max_epochs=1).fit(graphs, y)
    before = model.predict(graphs)
    with pytest.raises(ValueError, match=_literal(message)):
        model.set_params(**params).fit(graphs, y)
    assert model.predict(graphs).tobytes() == before.tobytes()


@pytest.mark.parametrize(
    "params, message",
    [
        (dict(module__pooling="avg"), "The 'module__pooling' parameter of CGCNNRegressor must "
         "be a str among"),
        (dict(module__n_conv=-1), "The 'module__n_conv' parameter of CGCNNRegressor must be "
         "an int in the range [0, inf). Got -1 instead."),
        (dict(module__dropout=1.0), "The 'module__dropout' parameter of CGCNNRegressor must be"),
    ],
    ids=["pooling", "n_conv", "dropout"],
)  # fmt: skip
def test_module_parameters_are_validated_before_the_network_is_built(graphs_40, params, message):
    graphs, y = graphs_40
    model = tiny_regressor(max_epochs=1, **params)
    with pytest.raises(ValueError, match=_literal(message)):
        model.fit(graphs, y)
    assert not model.initialized_


def _literal(text: str) -> str:
    import re

    return re.escape(text)


def test_regressor_is_not_a_classifier():
    assert not hasattr(CGCNNRegressor(), "classes_")
