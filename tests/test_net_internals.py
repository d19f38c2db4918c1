"""The shared skorch plumbing of both estimators, on tiny hand-made graphs: input checks,
declared parameters, seeding, restore-on-error, weights loading, the weighted loss and callbacks."""

import io
import pickle

import numpy as np
import pytest
import torch
from sklearn.utils._param_validation import InvalidParameterError
from skorch.callbacks import Callback, EarlyStopping, LRScheduler
from skorch.dataset import ValidSplit
from skorch.exceptions import NotInitializedError

from skgnn import CGCNNClassifier, CGCNNRegressor
from skgnn._net import check_graphs, check_sample_weight, check_target_length
from skgnn.dataset import CrystalGraphDataset
from skgnn.exceptions import GraphSettingsError, IncompatibleModelError
from skgnn.graphs import CrystalGraphs

from .test_graph_container import G0, G1, G2, SETTINGS

Y = np.array([0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0])
TINY = dict(
    module__atom_fea_len=4, module__h_fea_len=4, module__n_conv=1, max_epochs=2, random_state=0
)


@pytest.fixture
def graphs():
    return CrystalGraphs.from_graphs([G0, G1, G2, G2, G0, G2, G0, G2], **SETTINGS)


def regressor(**params):
    return CGCNNRegressor(**{**TINY, **params})


def flat_weights(net) -> torch.Tensor:
    return torch.cat([p.detach().ravel() for p in net.module_.parameters()])


# ---- input checks -------------------------------------------------------------------------


def test_check_graphs_passes_a_container_and_joins_a_list(graphs):
    assert check_graphs(graphs, "Net") is graphs
    joined = check_graphs([graphs[:2], graphs[2:]], "Net")
    np.testing.assert_array_equal(joined.edge_length, graphs.edge_length)
    assert len(check_graphs((graphs[:1],), "Net")) == 1


@pytest.mark.parametrize("bad", [[], "abc", [1, 2]], ids=["empty", "str", "ints"])
def test_check_graphs_says_how_to_make_graphs(bad):
    with pytest.raises(TypeError) as info:
        check_graphs(bad, "CGCNNRegressor")
    assert str(info.value) == (
        f"CGCNNRegressor takes the crystal graphs made by CrystalGraphTransformer; got "
        f"{type(bad).__name__}. Put the transformer first: "
        "make_pipeline(CrystalGraphTransformer(), CGCNNRegressor())."
    )


def test_check_target_length(graphs):
    with pytest.raises(ValueError) as info:
        check_target_length(graphs, None)
    assert str(info.value) == "y is required to fit."
    with pytest.raises(ValueError) as info:
        check_target_length(graphs, [1.0, 2.0])
    assert str(info.value) == "X has 8 structures but y has 2 values; they must match."
    np.testing.assert_array_equal(check_target_length(graphs, list(Y)), Y)


def test_check_sample_weight_values():
    assert check_sample_weight(None, 3) is None
    weight = check_sample_weight([0.25, 0.0, 0.5], 3)
    assert weight.dtype == np.float32
    np.testing.assert_array_equal(weight, [0.25, 0.0, 0.5])  # sums to 0.75: fine
    np.testing.assert_array_equal(check_sample_weight(2, 3), [2.0, 2.0, 2.0])
    np.testing.assert_array_equal(check_sample_weight(np.float64(0.5), 2), [0.5, 0.5])


@pytest.mark.parametrize(
    "weight, message",
    [
        ([1.0, 1.0], "sample_weight has shape (2,); expected (3,), one per row."),
        ([[1.0, 1.0, 1.0]], "sample_weight has shape (1, 3); expected (3,), one per row."),
        ([1.0, -0.5, 1.0], "sample_weight[1] is -0.5; weights must be finite and >= 0."),
        ([1.0, 1.0, np.nan], "sample_weight[2] is nan; weights must be finite and >= 0."),
        ([np.inf, 1.0, 1.0], "sample_weight[0] is inf; weights must be finite and >= 0."),
        ([0.0, 0.0, 0.0], "sample_weight sums to zero; at least one row must weigh."),
        (0, "sample_weight sums to zero; at least one row must weigh."),
    ],
)
def test_check_sample_weight_names_the_problem(weight, message):
    with pytest.raises(ValueError) as info:
        check_sample_weight(weight, 3)
    assert str(info.value) == message


# ---- declared parameters --------------------------------------------------------------------


def test_default_parameters_are_the_documented_ones():
    for cls in (CGCNNRegressor, CGCNNClassifier):
        params = cls().get_params()
        assert params["optimizer"] is torch.optim.AdamW
        assert params["lr"] == 2e-3
        assert params["max_epochs"] == 100
        assert params["batch_size"] == 128
        assert params["train_split"] is None
        assert params["iterator_train__shuffle"] is True
        assert params["verbose"] == 0
        assert params["validation_fraction"] is None
        assert params["patience"] == 20
        assert params["random_state"] is None
        assert params["device"] == "cpu"
    assert CGCNNRegressor().criterion is torch.nn.SmoothL1Loss
    assert CGCNNClassifier().criterion is torch.nn.CrossEntropyLoss
    assert CGCNNClassifier().classes is None


@pytest.mark.parametrize(
    "params",
    [
        dict(validation_fraction=1e-9),
        dict(validation_fraction=0.999),
        dict(patience=1),
        dict(random_state=0),
        dict(random_state=2**32 - 1),
        dict(max_epochs=1),
        dict(lr=0.0),
        dict(module__n_conv=0),
    ],
    ids=lambda p: "-".join(f"{k}={v}" for k, v in p.items()),
)
def test_parameter_bounds_are_accepted(graphs, params):
    regressor(**params)._check_fit_input(graphs, Y, None)


@pytest.mark.parametrize(
    "params",
    [
        dict(validation_fraction=0.0),
        dict(validation_fraction=1.0),
        dict(validation_fraction=1.5),
        dict(patience=0),
        dict(random_state=-1),
        dict(random_state=2**32),
        dict(max_epochs=0),
        dict(lr=-1e-9),
        dict(module__n_conv=-1),
    ],
    ids=lambda p: "-".join(f"{k}={v}" for k, v in p.items()),
)
def test_parameters_beyond_the_bounds_are_refused(graphs, params):
    (name,) = params
    with pytest.raises(InvalidParameterError, match=f"The '{name}' parameter of CGCNNRegressor"):
        regressor(**params)._check_fit_input(graphs, Y, None)


# ---- fitting, seeding and restoring -------------------------------------------------------------


def test_refit_without_warm_start_fits_a_new_contract(graphs):
    net = regressor().fit(graphs, Y)
    np.testing.assert_allclose(net.target_mean_, [3.5])
    net.fit(graphs, Y + 100)
    np.testing.assert_allclose(net.target_mean_, [103.5])
    net.set_params(warm_start=True).fit(graphs, Y + 200)
    np.testing.assert_allclose(net.target_mean_, [103.5])  # kept: same network, same units


def test_partial_fit_keeps_the_contract_and_continues(graphs):
    net = regressor(max_epochs=1)
    net.partial_fit(graphs, Y)
    np.testing.assert_allclose(net.target_mean_, [3.5])
    net.partial_fit(graphs, Y + 50)
    np.testing.assert_allclose(net.target_mean_, [3.5])
    assert len(net.history_) == 2


def test_same_seed_gives_the_same_network_and_leaves_the_global_rng(graphs):
    torch.manual_seed(123)
    state = torch.random.get_rng_state()
    first = regressor().fit(graphs, Y)
    assert torch.equal(torch.random.get_rng_state(), state)
    torch.manual_seed(999)
    second = regressor().fit(graphs, Y)
    assert torch.equal(flat_weights(first), flat_weights(second))
    other = regressor(random_state=1).fit(graphs, Y)
    assert not torch.equal(flat_weights(first), flat_weights(other))


def test_unseeded_fit_draws_from_the_global_rng(graphs):
    torch.manual_seed(5)
    state = torch.random.get_rng_state()
    first = regressor(random_state=None).fit(graphs, Y)
    assert not torch.equal(torch.random.get_rng_state(), state)
    torch.manual_seed(5)
    second = regressor(random_state=None).fit(graphs, Y)
    assert torch.equal(flat_weights(first), flat_weights(second))


class Boom(Callback):
    def __init__(self, at="on_epoch_end"):
        self.at = at

    def on_epoch_end(self, net, **kwargs):
        if self.at == "on_epoch_end":
            raise RuntimeError("boom")

    def on_train_begin(self, net, **kwargs):
        if self.at == "on_train_begin":
            raise RuntimeError("boom")


@pytest.mark.parametrize("at", ["on_epoch_end", "on_train_begin"])
@pytest.mark.parametrize("how", ["fit", "partial_fit", "warm_start"])
def test_a_failed_fit_restores_the_fitted_model(graphs, how, at):
    net = regressor().fit(graphs, Y)
    weights = flat_weights(net).clone()
    prediction = net.predict(graphs)
    history_len = len(net.history_)
    net.set_params(callbacks=[("boom", Boom(at))], warm_start=how == "warm_start")
    net.initialize_callbacks()
    with pytest.raises(RuntimeError, match="boom"):
        getattr(net, "partial_fit" if how == "partial_fit" else "fit")(graphs, Y + 10)
    assert torch.equal(flat_weights(net), weights)
    assert len(net.history_) == history_len
    np.testing.assert_array_equal(net.predict(graphs), prediction)
    np.testing.assert_allclose(net.target_mean_, [3.5])
    assert "_pending_contract" not in net.__dict__
    # the restored optimizer steps the restored weights, not a copy left behind
    parameters = {id(p) for p in net.module_.parameters()}
    optimised = {id(p) for group in net.optimizer_.param_groups for p in group["params"]}
    assert optimised == parameters


def test_ctrl_c_while_building_leaves_no_pending_contract(graphs):
    class Interrupt(Callback):
        def initialize(self):
            raise KeyboardInterrupt

    net = regressor(callbacks=[("interrupt", Interrupt())])
    with pytest.raises(KeyboardInterrupt):
        net.fit(graphs, Y)
    assert "_pending_contract" not in net.__dict__


def test_fit_and_partial_fit_under_metadata_routing(graphs):
    from sklearn import config_context

    with config_context(enable_metadata_routing=True):
        net = regressor(max_epochs=1).fit(graphs, Y)
        net.partial_fit(graphs, Y)
    assert len(net.history_) == 2


def test_fit_is_documented():
    for cls in (CGCNNRegressor, CGCNNClassifier):
        doc = cls.fit.__doc__
        assert doc.startswith("Train on crystal graphs ``X`` and targets ``y``, from scratch")
        assert "sample_weight : array-like of shape (n_samples,) or None" in doc
        assert doc.rstrip().endswith("self")


def test_a_failed_first_fit_leaves_the_estimator_unfitted(graphs):
    net = regressor(callbacks=[("boom", Boom())])
    with pytest.raises(RuntimeError, match="boom"):
        net.fit(graphs, Y)
    assert not net.initialized_
    assert "_pending_contract" not in net.__dict__
    assert "module_" not in net.__dict__


def test_keyboard_interrupt_keeps_what_was_learned(graphs):
    class Stop(Callback):
        def on_epoch_end(self, net, **kwargs):
            raise KeyboardInterrupt

    net = regressor(max_epochs=5, callbacks=[("stop", Stop())]).fit(graphs, Y)
    assert len(net.history_) == 1
    assert net.predict(graphs).shape == (8,)


# ---- the contract -------------------------------------------------------------------------------


def test_contract_of_an_unfitted_estimator():
    net = regressor()
    assert net._contract is None
    with pytest.raises(AttributeError) as info:
        net.contract_  # noqa: B018 (the property raises)
    assert str(info.value) == "CGCNNRegressor is not fitted; it has no contract_."
    net.initialize()
    assert net._contract is None
    with pytest.raises(NotInitializedError) as info:
        net.predict(CrystalGraphs.from_graphs([G0, G2], **SETTINGS))
    assert str(info.value) == (
        "CGCNNRegressor is initialized but not fitted; call fit, or load_params with the "
        "weights of a fitted one."
    )


def test_fitted_module_has_the_contract_sizes(graphs):
    net = regressor().fit(graphs, np.c_[Y, -Y])
    assert net.module_.embedding.in_features == 3
    assert net.module_.convs[0].nbr_fea_len == 3
    assert net.module_.fc_out.out_features == 2
    assert net.contract_.graph_settings.same_as(graphs.settings)


def test_predict_refuses_other_graph_settings(graphs):
    net = regressor().fit(graphs, Y)
    other = CrystalGraphs.from_graphs([G0, G2], **{**SETTINGS, "max_neighbors": 6})
    with pytest.raises(GraphSettingsError, match="max_neighbors: 6, not 12"):
        net.predict(other)
    with pytest.raises(GraphSettingsError, match="max_neighbors: 6, not 12"):
        net.partial_fit(other, [1.0, 2.0])
    with pytest.raises(TypeError, match="takes the crystal graphs"):
        net.predict([1, 2])


def save(net, **kwargs) -> io.BytesIO:
    buffer = io.BytesIO()
    net.save_params(f_params=buffer, **kwargs)
    buffer.seek(0)
    return buffer


def test_loaded_weights_predict_alike_and_train_on(graphs):
    net = regressor().fit(graphs, Y * 3 + 10)
    fresh = regressor()
    fresh.load_params(f_params=save(net))
    np.testing.assert_allclose(fresh.predict(graphs), net.predict(graphs), rtol=1e-6)
    np.testing.assert_allclose(fresh.target_mean_, net.target_mean_)
    parameters = {id(p) for p in fresh.module_.parameters()}
    optimised = {id(p) for group in fresh.optimizer_.param_groups for p in group["params"]}
    assert optimised == parameters
    before = flat_weights(fresh).clone()
    fresh.partial_fit(graphs, Y)
    assert not torch.equal(before, flat_weights(fresh))


def test_load_params_without_weights_loads_the_rest(graphs, tmp_path):
    net = regressor().fit(graphs, Y)
    net.save_params(f_history=str(tmp_path / "history.json"))
    fresh = regressor()
    fresh.initialize()
    fresh.load_params(f_history=str(tmp_path / "history.json"))
    assert len(fresh.history_) == 2
    assert fresh._contract is None


def test_weights_without_a_contract_are_refused(graphs):
    net = regressor().fit(graphs, Y)
    state = {k: v for k, v in net.module_.state_dict().items() if not k.startswith("fitted")}
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    fresh = regressor()
    with pytest.raises(IncompatibleModelError) as info:
        fresh.load_params(f_params=buffer)
    assert str(info.value) == (
        f"{buffer!r} holds weights without skgnn's contract (graph settings and target "
        "scaling), so CGCNNRegressor cannot know their units: it was not saved from a "
        "fitted skgnn estimator."
    )
    assert fresh._contract is None


def test_weights_of_the_other_estimator_are_refused(graphs):
    classifier = CGCNNClassifier(**TINY).fit(graphs, Y > 3)
    buffer = save(classifier)
    with pytest.raises(IncompatibleModelError) as info:
        regressor().load_params(f_params=buffer)
    assert str(info.value) == (
        f"{buffer!r} holds the weights of a CGCNNClassifier, not of a CGCNNRegressor."
    )


def test_weights_of_another_network_are_refused_and_the_fit_is_kept(graphs):
    net = regressor().fit(graphs, Y)
    prediction = net.predict(graphs)
    other = regressor(module__n_h=2).fit(graphs, Y + 1)
    target = regressor(module__n_h=1)
    target.load_params(f_params=save(net))
    buffer = save(other)
    with pytest.raises(IncompatibleModelError) as info:
        target.load_params(f_params=buffer)
    assert str(info.value).startswith(
        f"{buffer!r} does not fit this CGCNNRegressor's network (different module "
        "parameters?): Error(s) in loading state_dict for CGCNN:"
    )
    assert str(info.value).endswith('"hidden.1.weight", "hidden.1.bias". ')
    np.testing.assert_array_equal(target.predict(graphs), prediction)


def test_loading_weights_refuses_pickled_code(graphs):
    buffer = io.BytesIO()
    torch.save({"code": pickle.loads(pickle.dumps(Boom()))}, buffer)
    buffer.seek(0)
    with pytest.raises(pickle.UnpicklingError):
        regressor().load_params(f_params=buffer)


# ---- skorch hooks -------------------------------------------------------------------------------


def test_cosine_schedule_spans_max_epochs():
    callbacks = dict(regressor(max_epochs=7)._default_callbacks)
    assert isinstance(callbacks["lr_scheduler"], LRScheduler)
    assert callbacks["lr_scheduler"].policy is torch.optim.lr_scheduler.CosineAnnealingLR
    assert callbacks["lr_scheduler"].kwargs == {"T_max": 7}
    assert "early_stopping" not in callbacks


def test_learning_rate_anneals_to_zero_over_max_epochs(graphs):
    net = regressor(max_epochs=4, lr=0.01, callbacks__print_log=None).fit(graphs, Y)
    lrs = [group["lr"] for group in net.optimizer_.param_groups]
    assert lrs == [pytest.approx(0.0, abs=1e-12)]


@pytest.mark.parametrize(
    "params",
    [dict(validation_fraction=0.25), dict(train_split=ValidSplit(4))],
    ids=["share", "split"],
)
def test_early_stopping_when_something_is_held_out(params):
    net = regressor(patience=3, **params)
    stopping = dict(net._default_callbacks)["early_stopping"]
    assert isinstance(stopping, EarlyStopping)
    assert stopping.patience == 3 and stopping.load_best is True


def test_validation_share_holds_out_that_share(graphs):
    net = regressor(validation_fraction=0.25)
    dataset = CrystalGraphDataset(graphs, torch.as_tensor(Y[:, None], dtype=torch.float32))
    train, valid = net.get_split_datasets(dataset, Y[:, None])
    assert (len(train), len(valid)) == (6, 2)
    again = regressor(validation_fraction=0.25).get_split_datasets(dataset, Y[:, None])
    assert list(valid.indices) == list(again[1].indices)
    train, valid = regressor(train_split=ValidSplit(4)).get_split_datasets(dataset, Y[:, None])
    assert (len(train), len(valid)) == (6, 2)
    train, valid = regressor().get_split_datasets(dataset, Y[:, None])
    assert len(train) == 8 and valid is None


def test_classifier_split_is_stratified(graphs):
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    dataset = CrystalGraphDataset(graphs, torch.as_tensor(labels))
    for seed in range(6):
        net = CGCNNClassifier(**{**TINY, "random_state": seed}, validation_fraction=0.25)
        _, valid = net.get_split_datasets(dataset, labels)
        assert sorted(labels[valid.indices]) == [0, 1]


def test_early_stopping_keeps_the_best_epoch(graphs):
    net = regressor(validation_fraction=0.25, max_epochs=12, patience=2, lr=0.5).fit(graphs, Y)
    assert "valid_loss" in net.history_[-1]
    assert len(net.history_) < 12


def test_get_dataset_takes_graphs_only(graphs):
    net = regressor()
    dataset = net.get_dataset(graphs)
    assert isinstance(dataset, CrystalGraphDataset) and dataset.graphs is graphs
    assert dataset.y is None
    assert net.get_dataset(dataset) is dataset
    with pytest.raises(TypeError) as info:
        net.get_dataset(graphs, Y)
    assert str(info.value) == (
        "CGCNNRegressor.get_dataset takes graphs only; targets are encoded in fit."
    )


def test_weighted_loss_is_the_weighted_mean_of_the_row_losses(graphs):
    net = regressor(criterion=torch.nn.MSELoss).initialize()
    batch = graphs.batch(np.arange(3))
    y_pred = torch.tensor([[1.0, 2.0], [3.0, 4.0], [0.0, 0.0]])
    y_true = torch.tensor([[0.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    assert net.get_loss(y_pred, y_true, X=batch).item() == pytest.approx(
        (1 + 4 + 9 + 4 + 1 + 1) / 6
    )
    batch.sample_weight = torch.tensor([1.0, 3.0, 0.0])
    # row losses (mean over the two targets): 2.5, 6.5, 1
    loss = net.get_loss(y_pred, y_true, X=batch)
    assert loss.item() == pytest.approx((2.5 + 3 * 6.5) / 4)
    assert net.criterion_.reduction == "mean"
    batch.sample_weight = torch.tensor([0.5, 0.0, 0.0])
    assert net.get_loss(y_pred, y_true, X=batch).item() == pytest.approx(2.5)


def test_sample_weight_steers_the_fit(graphs):
    heavy = np.where(np.arange(8) < 4, 1.0, 1e-6)
    weighted = regressor(max_epochs=3, lr=0.02).fit(graphs, Y, sample_weight=heavy)
    plain = regressor(max_epochs=3, lr=0.02).fit(graphs, Y)
    assert not np.allclose(weighted.predict(graphs), plain.predict(graphs))
    unit = regressor(max_epochs=3, lr=0.02).fit(graphs, Y, sample_weight=np.ones(8))
    np.testing.assert_allclose(unit.predict(graphs), plain.predict(graphs), rtol=1e-4, atol=1e-5)


def test_tags():
    tags = regressor().__sklearn_tags__()
    assert tags.input_tags.two_d_array is False
    assert tags.non_deterministic is False
    assert regressor(random_state=None).__sklearn_tags__().non_deterministic is True
