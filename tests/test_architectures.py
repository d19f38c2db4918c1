"""Both networks through the same estimators: module="cgcnn" | "message" (issue #14)."""

import io
import json
import pickle

import numpy as np
import pytest
import torch
from optuna.distributions import IntDistribution
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline

from skgnn import CGCNN, CGCNNClassifier, CrystalGraphTransformer, MessageNet
from skgnn.architectures import accepted_arguments, qualified_name, resolve_module
from skgnn.exceptions import IncompatibleModelError
from skgnn.tuning import ArchitectureChoice, architecture_space, params_within, tune

from .conftest import tiny_regressor

MESSAGE = dict(module="message", module__edge_width=16)


@pytest.fixture(scope="module")
def graphs_40(jdft2d_graphs):
    graphs, y = jdft2d_graphs
    return graphs[:40], y[:40]


@pytest.fixture(scope="module")
def message_model(graphs_40):
    graphs, y = graphs_40
    return tiny_regressor(**MESSAGE).fit(graphs, y)


def save(net) -> io.BytesIO:
    buffer = io.BytesIO()
    net.save_params(f_params=buffer)
    buffer.seek(0)
    return buffer


def test_a_name_and_a_class_train_the_same_network(graphs_40, message_model):
    graphs, y = graphs_40
    by_class = tiny_regressor(**{**MESSAGE, "module": MessageNet}).fit(graphs, y)
    assert type(message_model.module_) is MessageNet
    np.testing.assert_array_equal(by_class.predict(graphs), message_model.predict(graphs))
    assert message_model.contract_.module == "skgnn.message.MessageNet"
    assert tiny_regressor().fit(graphs, y).contract_.module == "skgnn.module.CGCNN"


def test_message_net_learns(jdft2d_graphs):
    graphs, y = jdft2d_graphs
    baseline = np.abs(y - y.mean()).mean()
    model = tiny_regressor(**MESSAGE, max_epochs=40, lr=3e-3).fit(graphs, y)
    assert np.abs(model.predict(graphs) - y).mean() < 0.8 * baseline


def test_the_radial_basis_ends_at_the_graphs_cutoff(jdft2d):
    structures, y = jdft2d
    graphs = CrystalGraphTransformer(cutoff=6.0).fit_transform(structures[:20])
    model = tiny_regressor(**MESSAGE, module__edge_basis="radial", max_epochs=1)
    model.fit(graphs, y[:20])
    assert model.module_.radial.cutoff == 6.0 and model.module_.radial.n_basis == 16
    assert model.module_.convs[0].edge_fea_len == 16


def test_pickle_and_saved_weights_predict_identically(graphs_40, message_model):
    graphs, _ = graphs_40
    before = message_model.predict(graphs)
    restored = pickle.loads(pickle.dumps(message_model))
    assert restored.predict(graphs).tobytes() == before.tobytes()
    fresh = tiny_regressor(**MESSAGE).initialize()
    fresh.load_params(f_params=save(message_model))
    assert fresh.predict(graphs).tobytes() == before.tobytes()


@pytest.mark.parametrize("saved", ["message", "cgcnn"])
def test_weights_of_the_other_network_are_refused_and_the_fit_is_kept(graphs_40, saved):
    graphs, y = graphs_40
    other = {"message": MESSAGE, "cgcnn": {}}
    target = tiny_regressor(**other["cgcnn" if saved == "message" else "message"]).fit(graphs, y)
    before = target.predict(graphs)
    buffer = save(tiny_regressor(**other[saved]).fit(graphs, y))
    saved_class, target_class = ("MessageNet", "CGCNN")[:: 1 if saved == "message" else -1]
    with pytest.raises(IncompatibleModelError) as info:
        target.load_params(f_params=buffer)
    assert str(info.value).startswith(f"{buffer!r} holds the weights of a {saved_class} network ")
    assert f"this CGCNNRegressor builds a {target_class}; set module" in str(info.value)
    assert target.predict(graphs).tobytes() == before.tobytes()


def test_weights_saved_before_the_network_was_recorded_still_load(graphs_40):
    graphs, y = graphs_40
    model = tiny_regressor(max_epochs=1).fit(graphs, y)
    state = model.module_.state_dict()
    meta = json.loads(bytes(state["fitted_contract.meta"].numpy()).decode())
    del meta["module"]  # as skgnn wrote contracts before issue #14
    state["fitted_contract.meta"] = torch.frombuffer(
        bytearray(json.dumps(meta).encode()), dtype=torch.uint8
    )
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    fresh = tiny_regressor().initialize()
    fresh.load_params(f_params=buffer)
    assert fresh.contract_.module is None
    assert fresh.predict(graphs).tobytes() == model.predict(graphs).tobytes()


def test_a_parameter_the_network_does_not_take_is_refused_before_any_change(graphs_40):
    graphs, y = graphs_40
    model = tiny_regressor(max_epochs=1).fit(graphs, y)
    before = model.predict(graphs)
    other = tiny_regressor(max_epochs=1, module__edge_layers=2)
    with pytest.raises(ValueError) as info:
        other.fit(graphs, y)
    assert str(info.value).startswith(
        "module__edge_layers is not a parameter of CGCNN, the network of this CGCNNRegressor; "
        "it takes ['atom_fea_len', 'dropout', 'h_fea_len', "
    )
    assert not hasattr(other, "module_")
    # a fitted one re-initialises its network on set_params (skorch): refused there, kept
    with pytest.raises(ValueError, match="module__edge_layers is not a parameter of CGCNN"):
        model.set_params(module__edge_layers=2)
    assert model.module_.fitted_contract.contract is not None
    assert model.predict(graphs).tobytes() == before.tobytes()


def test_an_unknown_network_name_is_refused(graphs_40):
    graphs, y = graphs_40
    with pytest.raises(ValueError) as info:
        tiny_regressor(module="alignn").fit(graphs, y)
    assert str(info.value) == (
        "The 'module' parameter of CGCNNRegressor must be one of ['cgcnn', 'message'] or a "
        "torch module class. Got 'alignn' instead."
    )


def test_classifier_trains_the_message_net(graphs_40):
    graphs, y = graphs_40
    labels = np.where(y > np.median(y), "high", "low")
    model = CGCNNClassifier(
        module="message", module__atom_fea_len=16, module__edge_width=16, module__n_conv=2,
        max_epochs=2, random_state=0,
    ).fit(graphs, labels)  # fmt: skip
    proba = model.predict_proba(graphs)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-5)
    assert type(model.module_) is MessageNet and model.module_.fc_out.out_features == 2


def test_embeddings_and_contributions_of_the_message_net(graphs_40):
    graphs, y = graphs_40
    model = tiny_regressor(
        **MESSAGE, module__readout="atom", module__pooling="sum", embedding_layer="pooled"
    ).fit(graphs, y)
    vectors = model.transform(graphs)
    names = model.get_feature_names_out()
    assert vectors.shape == (40, 16) and names[0] == "messagenet_pooled_0"
    contributions = model.predict_contributions(graphs)
    total = contributions.groupby("structure")["contribution"].sum().to_numpy()
    np.testing.assert_allclose(total, model.predict(graphs), rtol=1e-4)


def test_pooling_all_layers_reaches_the_network(graphs_40):
    graphs, y = graphs_40
    for extra in ({}, MESSAGE):
        model = tiny_regressor(**extra, module__pool_layers="all", max_epochs=1).fit(graphs, y)
        assert model.module_.pool_layers == "all"
        batch = graphs.batch(np.arange(3))
        with torch.no_grad():
            layers = model.module_.eval().layer_vectors(batch)
            np.testing.assert_allclose(
                model.module_.atom_vectors(batch).numpy(),
                torch.stack(layers).mean(0).numpy(),
                rtol=1e-6,
            )


# ---- searches over architectures --------------------------------------------------------


def test_grid_search_over_both_networks(jdft2d):
    structures, y = jdft2d
    pipe = make_pipeline(CrystalGraphTransformer(), tiny_regressor(max_epochs=1))
    grid = GridSearchCV(
        pipe,
        [
            {"cgcnnregressor__module": ["cgcnn"], "cgcnnregressor__module__n_conv": [1, 2]},
            {"cgcnnregressor__module": ["message"], "cgcnnregressor__module__edge_layers": [1, 2]},
        ],
        cv=2,
        scoring="neg_mean_absolute_error",
    ).fit(structures[:40], y[:40])
    assert len(grid.cv_results_["params"]) == 4
    assert all(np.isfinite(grid.cv_results_["mean_test_score"]))
    best = grid.best_estimator_[-1]
    expected = {"cgcnn": CGCNN, "message": MessageNet}[grid.best_params_["cgcnnregressor__module"]]
    assert type(best.module_) is expected


def test_optuna_search_draws_each_network_with_its_own_parameters(jdft2d):
    structures, y = jdft2d
    net = "cgcnnregressor"
    space = {
        f"{net}__module": ArchitectureChoice(
            {
                "cgcnn": {f"{net}__module__n_conv": IntDistribution(1, 2)},
                "message": {f"{net}__module__edge_layers": IntDistribution(1, 2)},
            }
        )
    }
    pipe = make_pipeline(CrystalGraphTransformer(), tiny_regressor(max_epochs=1))
    assert params_within(space, pipe) == {
        f"{net}__module": "cgcnn",
        f"cgcnn:{net}__module__n_conv": 2,
    }
    study = tune(pipe, structures[:30], y[:30], space, n_trials=6, cv=2, sampler_seed=0)
    drawn = [trial.params for trial in study.trials]
    assert {p[f"{net}__module"] for p in drawn} == {"cgcnn", "message"}
    for params in drawn:
        branch = params[f"{net}__module"]
        assert all(key == f"{net}__module" or key.startswith(f"{branch}:") for key in params)


def test_the_architecture_space_starts_from_the_estimator():
    pipe = make_pipeline(CrystalGraphTransformer(), tiny_regressor(module="message"))
    start = params_within(architecture_space(), pipe)
    assert start["cgcnnregressor__module"] == "message"
    assert start["message:cgcnnregressor__module__edge_layers"] == 2  # MessageNet's default
    assert not any(key.startswith("cgcnn:") for key in start)


def test_module_values_resolve_to_network_classes():
    assert resolve_module("cgcnn", "X") is CGCNN and resolve_module(MessageNet, "X") is MessageNet
    assert resolve_module(MessageNet(n_conv=1), "X") is MessageNet  # skorch rebuilds instances
    with pytest.raises(ValueError, match=r"Got <class 'int'> instead"):
        resolve_module(int, "CGCNNRegressor")
    assert qualified_name(MessageNet) == "skgnn.message.MessageNet"
    assert accepted_arguments(CGCNN) >= {"n_conv", "pool_layers", "nbr_fea_len"}
    assert "cutoff" not in accepted_arguments(CGCNN) and "cutoff" in accepted_arguments(MessageNet)
