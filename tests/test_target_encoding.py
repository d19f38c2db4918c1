"""How each estimator checks, encodes and decodes its targets, against hand-worked values."""

import numpy as np
import pytest
import torch
from skorch.callbacks import EpochScoring

from skgnn import CGCNNClassifier, CGCNNRegressor
from skgnn.classifier import _accuracy_of_codes, _first_unknown, _sorted_labels
from skgnn.graphs import CrystalGraphs

from .test_graph_container import G0, G1, G2, SETTINGS

TINY = dict(
    module__atom_fea_len=4, module__h_fea_len=4, module__n_conv=1, max_epochs=2, random_state=0
)
LABELS = np.array(["b", "a", "c", "a", "b", "c", "a", "b"])


@pytest.fixture
def graphs():
    return CrystalGraphs.from_graphs([G0, G1, G2, G2, G0, G2, G0, G2], **SETTINGS)


def module_output(net, graphs) -> np.ndarray:
    net.module_.eval()
    with torch.no_grad():
        return net.module_(graphs.batch(np.arange(len(graphs)))).numpy().astype(np.float64)


# ---- regression -----------------------------------------------------------------------------


def test_regression_targets_are_standardised_with_the_population_std():
    y = np.array([[1.0, 5.0], [3.0, 5.0], [8.0, 5.0]])
    net = CGCNNRegressor()
    fitted = net._fit_targets(y)
    assert fitted["n_out"] == 2 and fitted["target_ndim"] == 2
    np.testing.assert_allclose(fitted["target_mean"], [4.0, 5.0])
    np.testing.assert_allclose(fitted["target_scale"], [np.sqrt(26 / 3), 1.0])  # constant: 1
    fitted = net._fit_targets(np.array([2.0, 4.0]))
    assert fitted["n_out"] == 1 and fitted["target_ndim"] == 1
    np.testing.assert_allclose(fitted["target_mean"], [3.0])
    np.testing.assert_allclose(fitted["target_scale"], [1.0])


def test_regression_targets_are_encoded_and_predictions_decoded(graphs):
    y = np.arange(8.0) * 4 - 3
    net = CGCNNRegressor(**TINY).fit(graphs, y)
    contract = net.contract_
    np.testing.assert_allclose(net.target_mean_, [y.mean()])
    np.testing.assert_allclose(net.target_scale_, [y.std()])
    encoded = net._encode_targets(contract, y)
    assert encoded.dtype == np.float32 and encoded.shape == (8, 1)
    np.testing.assert_allclose(encoded[:, 0], (y - y.mean()) / y.std(), rtol=1e-6)
    expected = module_output(net, graphs)[:, 0] * y.std() + y.mean()
    prediction = net.predict(graphs)
    assert prediction.shape == (8,)
    np.testing.assert_allclose(prediction, expected, rtol=1e-5)


def test_two_column_targets_decode_per_column(graphs):
    y = np.c_[np.arange(8.0), 100 + 10 * np.arange(8.0)]
    net = CGCNNRegressor(**TINY).fit(graphs, y)
    expected = module_output(net, graphs) * y.std(axis=0) + y.mean(axis=0)
    prediction = net.predict(graphs)
    assert prediction.shape == (8, 2)
    np.testing.assert_allclose(prediction, expected, rtol=1e-5)
    one_column = CGCNNRegressor(**TINY).fit(graphs, y[:, :1])
    assert one_column.predict(graphs).shape == (8, 1)


@pytest.mark.parametrize(
    "y, message",
    [
        (np.zeros((8, 1, 1)), "y must be 1-D or 2-D; got shape (8, 1, 1)."),
        (
            np.array([0, np.nan, 1, np.inf, 2, 3, 4, 5]),
            "y[1] is nan; regression targets must be finite (2 row(s) are not). "
            "Drop or fill those rows first.",
        ),
        (
            np.c_[np.zeros(8), [0, 0, 0, 0, 0, 0, 0, -np.inf]],
            "y[7] is [  0. -inf]; regression targets must be finite (1 row(s) are not). "
            "Drop or fill those rows first.",
        ),
    ],
    ids=["3d", "nan", "inf-in-2d"],
)
def test_bad_regression_targets_are_named(graphs, y, message):
    with pytest.raises(ValueError) as info:
        CGCNNRegressor(**TINY)._check_targets(graphs, y)
    assert str(info.value) == message


def test_non_numeric_regression_targets_are_refused(graphs):
    with pytest.raises(ValueError, match="^y must be numeric for regression: could not convert"):
        CGCNNRegressor(**TINY)._check_targets(graphs, ["a"] * 8)
    checked = CGCNNRegressor(**TINY)._check_targets(graphs, list(range(8)))
    assert checked.dtype == np.float64


@pytest.mark.parametrize(
    "first, then, message",
    [
        ((8,), (8, 1), "y has shape (8, 1); CGCNNRegressor was fitted on 1-D targets."),
        ((8, 1), (8,), "y has shape (8,); CGCNNRegressor was fitted on 1 targets."),
        ((8, 2), (8, 3), "y has shape (8, 3); CGCNNRegressor was fitted on 2 targets."),
    ],
)
def test_partial_fit_refuses_targets_of_another_shape(graphs, first, then, message):
    net = CGCNNRegressor(**TINY).partial_fit(graphs, np.arange(np.prod(first)).reshape(first))
    with pytest.raises(ValueError) as info:
        net.partial_fit(graphs, np.zeros(then))
    assert str(info.value) == message
    net.partial_fit(graphs, np.zeros(first))


# ---- classification ----------------------------------------------------------------------------


class Probabilities:
    def __init__(self, proba):
        self.proba = np.asarray(proba)

    def predict_proba(self, X):
        return self.proba


def test_accuracy_of_codes():
    net = Probabilities([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
    assert _accuracy_of_codes(net, None, [0, 1, 1, 1]) == 0.75
    assert _accuracy_of_codes(net, None, np.array([1, 0, 0, 0])) == 0.25


def test_sorted_labels_and_first_unknown():
    np.testing.assert_array_equal(_sorted_labels(np.array(["b", "a", "b"]), "y"), ["a", "b"])
    with pytest.raises(ValueError) as info:
        _sorted_labels(np.array([1, "a"], dtype=object), "The labels in y")
    assert str(info.value).startswith("The labels in y mix types that cannot be sorted (")
    assert str(info.value).endswith("); use labels of one type.")
    assert _first_unknown(np.array(["a", "b", "z", "y"]), np.array(["a", "b"])) == 2
    assert _first_unknown(np.array(["a", "b"]), np.array(["a", "b"])) is None


def test_validation_accuracy_is_scored_on_codes():
    callbacks = dict(CGCNNClassifier()._default_callbacks)
    scoring = callbacks["valid_acc"]
    assert isinstance(scoring, EpochScoring)
    assert scoring.scoring is _accuracy_of_codes
    assert scoring.name == "valid_acc"
    assert scoring.lower_is_better is False and scoring.use_caching is True
    assert "train_loss" in callbacks and "lr_scheduler" in callbacks


def test_labels_are_encoded_in_sorted_order_and_decoded(graphs):
    net = CGCNNClassifier(**TINY).fit(graphs, LABELS)
    np.testing.assert_array_equal(net.classes_, ["a", "b", "c"])
    assert net.contract_.n_out == 3
    codes = net._encode_targets(net.contract_, LABELS)
    assert codes.dtype == np.int64
    np.testing.assert_array_equal(codes, [1, 0, 2, 0, 1, 2, 0, 1])
    logits = module_output(net, graphs)
    expected = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    proba = net.predict_proba(graphs)
    np.testing.assert_allclose(proba, expected, rtol=1e-5)
    np.testing.assert_array_equal(net.predict(graphs), np.array(["a", "b", "c"])[logits.argmax(1)])


def test_classes_given_set_the_outputs(graphs):
    net = CGCNNClassifier(**TINY, classes=["c", "d", "a", "b"]).fit(graphs, LABELS)
    np.testing.assert_array_equal(net.classes_, ["a", "b", "c", "d"])
    assert net.predict_proba(graphs).shape == (8, 4)
    net = CGCNNClassifier(**TINY, classes=["a", "b", "c", "d"])
    net.partial_fit(graphs, LABELS, classes=["c", "b", "a"])
    np.testing.assert_array_equal(net.classes_, ["a", "b", "c"])


def test_labels_outside_the_classes_are_refused(graphs):
    with pytest.raises(ValueError) as info:
        CGCNNClassifier(**TINY, classes=["a", "b"]).fit(graphs, LABELS)
    assert str(info.value) == (
        "y[2] = 'c' is not one of the classes ['a', 'b']; pass every label in `classes` "
        "(or to the first partial_fit)."
    )
    net = CGCNNClassifier(**TINY).partial_fit(graphs, LABELS)
    with pytest.raises(ValueError, match=r"^y\[1\] = 'z' is not one of the classes"):
        net.partial_fit(graphs, np.array(["a", "z", "b", "a", "b", "c", "a", "b"]))


def test_bad_class_labels_are_named(graphs):
    with pytest.raises(ValueError) as info:
        CGCNNClassifier(**TINY).fit(graphs, np.array(["a"] * 8))
    assert str(info.value) == "y has a single class ('a'); a classifier needs at least two."
    with pytest.raises(ValueError) as info:
        CGCNNClassifier(**TINY).fit(graphs, LABELS.reshape(8, 1))
    assert str(info.value) == "y must be 1-D class labels; got shape (8, 1)."
    y = np.array(["a", "b", None, "a", None, "b", "a", "b"], dtype=object)
    with pytest.raises(ValueError) as info:
        CGCNNClassifier(**TINY).fit(graphs, y)
    assert str(info.value) == (
        "y[2] is None, a missing label (2 row(s)); drop those rows or give them a class."
    )


def test_binary_labels_train(graphs):
    net = CGCNNClassifier(**TINY).fit(graphs, LABELS == "a")
    np.testing.assert_array_equal(net.classes_, [False, True])
    assert net.predict_proba(graphs).shape == (8, 2)


def test_small_spreads_are_kept_and_only_constant_columns_get_unit_scale():
    fitted = CGCNNRegressor()._fit_targets(np.array([[0.0, 2.0], [0.5, 2.0]]))
    np.testing.assert_allclose(fitted["target_scale"], [0.25, 1.0])
    np.testing.assert_allclose(fitted["target_mean"], [0.25, 2.0])


def test_regression_split_is_not_stratified(graphs):
    from skgnn.dataset import CrystalGraphDataset

    y = np.array([0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0])
    dataset = CrystalGraphDataset(graphs, torch.as_tensor(y[:, None], dtype=torch.float32))
    held_out = set()
    for seed in range(8):
        net = CGCNNRegressor(**{**TINY, "random_state": seed}, validation_fraction=0.25)
        _, valid = net.get_split_datasets(dataset, y[:, None])
        held_out.add(tuple(sorted(y[valid.indices])))
    assert (0.0, 0.0) in held_out or (1.0, 1.0) in held_out


def test_estimators_are_documented():
    assert CGCNNRegressor.__doc__.startswith("CGCNN regressor on crystal graphs")
    assert CGCNNClassifier.__doc__.startswith("CGCNN classifier on crystal graphs")
    for cls in (CGCNNRegressor, CGCNNClassifier):
        assert "random_state : int or None, default=None" in cls.__doc__
        assert "contract_ : skgnn.contract.Contract" in cls.__doc__


def test_missing_labels_are_named_by_the_first(graphs):
    y = np.array(["a", "b", None, "a", np.nan, "b", "a", "b"], dtype=object)
    with pytest.raises(ValueError) as info:
        CGCNNClassifier(**TINY).fit(graphs, y)
    assert str(info.value).startswith("y[2] is None, a missing label (2 row(s))")


def test_unsortable_labels_say_where_they_come_from(graphs):
    mixed = np.array([1, "a", 1, "a", 1, "a", 1, "a"], dtype=object)
    with pytest.raises(ValueError, match="^The labels in y mix types that cannot be sorted"):
        CGCNNClassifier(**TINY).fit(graphs, mixed)
    with pytest.raises(ValueError, match="^The classes given mix types that cannot be sorted"):
        CGCNNClassifier(**TINY, classes=np.array([1, "a"], dtype=object)).fit(graphs, LABELS)
