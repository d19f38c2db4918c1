"""GraphSettings and the Contract carried in a state_dict, against hand-made values."""

import json

import numpy as np
import pytest
import torch

from skgnn.contract import _FORMAT, CONTRACT_NAME, Contract, ContractModule
from skgnn.exceptions import GraphSettingsError, IncompatibleModelError
from skgnn.graphs import CrystalGraphs
from skgnn.settings import GraphSettings, _describe, _same_array

from .test_graph_container import G0, G1, SETTINGS

TABLE = SETTINGS["atom_feature_values"]
CENTERS = SETTINGS["gaussian_centers"]


def settings(**changes) -> GraphSettings:
    values = dict(
        atom_features=TABLE, gaussian_centers=CENTERS, gaussian_width=0.5, cutoff=3.0,
        max_neighbors=12,
    )  # fmt: skip
    return GraphSettings(**{**values, **changes})


# ---- GraphSettings ------------------------------------------------------------------------------


def test_settings_of_graphs():
    graphs = CrystalGraphs.from_graphs(
        [G0, G1], **{**SETTINGS, "atom_feature_values": TABLE.astype(np.float64), "cutoff": 3}
    )
    found = GraphSettings.of(graphs)
    assert found.atom_features.dtype == np.float32 and found.gaussian_centers.dtype == np.float32
    np.testing.assert_array_equal(found.atom_features, TABLE)
    np.testing.assert_array_equal(found.gaussian_centers, CENTERS)
    assert (found.gaussian_width, found.cutoff, found.max_neighbors) == (0.5, 3.0, 12)
    assert type(found.cutoff) is float and type(found.max_neighbors) is int
    assert type(found.gaussian_width) is float
    assert found.same_as(settings())


def test_describe_centres():
    assert _describe(np.array([0.0, 0.5, 1.0])) == "3 from 0 to 1 Å (step 0.5)"
    assert _describe(np.array([1.0, 4.0])) == "2 from 1 to 4 Å (step 3)"
    assert _describe(np.array([2.5])) == "1 at [2.5]"
    assert _describe(np.array([])) == "0 at []"


def test_same_array():
    assert _same_array(np.zeros((2, 3)), np.zeros((2, 3)))
    assert not _same_array(np.zeros((2, 3)), np.zeros((3, 2)))
    assert not _same_array(np.zeros(3), np.array([0, 0, 1]))


@pytest.mark.parametrize(
    "changes, phrases",
    [
        ({}, []),
        (
            {"atom_features": TABLE * 2},
            ["atom_features: a table of shape (4, 3) with other values, not the (4, 3) table"],
        ),
        (
            {"atom_features": TABLE[:, :2]},
            ["atom_features: a table of shape (4, 2), not (4, 3)"],
        ),
        (
            {"gaussian_centers": np.array([0.0, 2.0], dtype=np.float32)},
            ["Gaussian centres: 2 from 0 to 2 Å (step 2), not 3 from 0 to 2 Å (step 1)"],
        ),
        ({"gaussian_width": 0.25}, ["gaussian_width: 0.25, not 0.5"]),
        ({"cutoff": 6.0}, ["cutoff: 6, not 3"]),
        ({"max_neighbors": 8}, ["max_neighbors: 8, not 12"]),
        (
            {"cutoff": 6.0, "max_neighbors": 8, "gaussian_width": 1.0},
            ["gaussian_width: 1, not 0.5", "cutoff: 6, not 3", "max_neighbors: 8, not 12"],
        ),
    ],
    ids=["same", "values", "shape", "centres", "width", "cutoff", "neighbours", "three"],
)
def test_differences_are_named(changes, phrases):
    assert settings(**changes).differences(settings()) == phrases
    assert settings(**changes).same_as(settings()) is (not phrases)


def test_check_refuses_graphs_built_otherwise():
    graphs = CrystalGraphs.from_graphs([G0], **{**SETTINGS, "cutoff": 5.0})
    with pytest.raises(GraphSettingsError) as info:
        settings().check(graphs, "CGCNNRegressor")
    assert str(info.value) == (
        "CGCNNRegressor was fitted on crystal graphs built with other settings; these graphs "
        "have cutoff: 5, not 3. Build them with the CrystalGraphTransformer settings used at "
        "fit (a Pipeline does this for you)."
    )
    settings().check(CrystalGraphs.from_graphs([G0], **SETTINGS), "CGCNNRegressor")


# ---- Contract -----------------------------------------------------------------------------------


def regression_contract() -> Contract:
    return Contract(
        estimator="CGCNNRegressor", graph_settings=settings(), n_out=2,
        target_mean=np.array([1.0, -2.0]), target_scale=np.array([0.5, 3.0]), target_ndim=2,
    )  # fmt: skip


def classification_contract(classes) -> Contract:
    return Contract(
        estimator="CGCNNClassifier", graph_settings=settings(), n_out=len(classes),
        classes=np.asarray(classes),
    )  # fmt: skip


def test_module_sizes():
    assert regression_contract().module_sizes() == {
        "orig_atom_fea_len": 3, "nbr_fea_len": 3, "n_out": 2, "cutoff": 3.0
    }  # fmt: skip


def test_contract_as_tensors():
    tensors = regression_contract().to_tensors()
    assert set(tensors) == {"meta", "atom_features", "gaussian_centers", "target_mean",
                            "target_scale"}  # fmt: skip
    meta = json.loads(bytes(tensors["meta"].numpy()).decode())
    assert meta == {
        "format": 1, "estimator": "CGCNNRegressor", "gaussian_width": 0.5, "cutoff": 3.0,
        "max_neighbors": 12, "n_out": 2, "target_ndim": 2, "classes": None, "module": None,
    }  # fmt: skip
    assert _FORMAT == 1
    np.testing.assert_array_equal(tensors["atom_features"].numpy(), TABLE)
    np.testing.assert_array_equal(tensors["gaussian_centers"].numpy(), CENTERS)
    np.testing.assert_array_equal(tensors["target_mean"].numpy(), [1.0, -2.0])
    np.testing.assert_array_equal(tensors["target_scale"].numpy(), [0.5, 3.0])
    classes = classification_contract(["a", "b"]).to_tensors()
    assert set(classes) == {"meta", "atom_features", "gaussian_centers"}
    assert json.loads(bytes(classes["meta"].numpy()).decode())["classes"] == ["a", "b"]


def test_tensors_do_not_share_memory_with_the_settings():
    contract = regression_contract()
    tensors = contract.to_tensors()
    tensors["atom_features"] += 1
    tensors["gaussian_centers"] += 1
    tensors["target_mean"] += 1
    tensors["target_scale"] += 1
    np.testing.assert_array_equal(contract.graph_settings.atom_features, TABLE)
    np.testing.assert_array_equal(contract.graph_settings.gaussian_centers, CENTERS)
    np.testing.assert_array_equal(contract.target_mean, [1.0, -2.0])
    np.testing.assert_array_equal(contract.target_scale, [0.5, 3.0])


@pytest.mark.parametrize(
    "contract",
    [regression_contract(), classification_contract([False, True]),
     classification_contract([3, 1, 2]), classification_contract(["x", "y"])],
    ids=["regression", "booleans", "integers", "strings"],
)  # fmt: skip
def test_contract_round_trips_through_tensors(contract):
    back = Contract.from_tensors(contract.to_tensors())
    assert back.estimator == contract.estimator and back.n_out == contract.n_out
    assert back.module == contract.module
    assert back.target_ndim == contract.target_ndim
    assert back.graph_settings.same_as(contract.graph_settings)
    for name in ("target_mean", "target_scale", "classes"):
        mine, theirs = getattr(contract, name), getattr(back, name)
        if mine is None:
            assert theirs is None, name
        else:
            np.testing.assert_array_equal(theirs, mine)
            assert theirs.dtype == mine.dtype


def test_other_format_is_refused():
    tensors = regression_contract().to_tensors()
    meta = json.loads(bytes(tensors["meta"].numpy()).decode())
    meta["format"] = 2
    tensors["meta"] = torch.frombuffer(bytearray(json.dumps(meta).encode()), dtype=torch.uint8)
    with pytest.raises(IncompatibleModelError) as info:
        Contract.from_tensors(tensors)
    assert str(info.value) == (
        "The weights hold a contract of format 2; this skgnn reads format 1."
    )


def test_unsavable_labels_are_named():
    with pytest.raises(TypeError) as info:
        classification_contract(np.array([1 + 2j, 3j])).to_tensors()
    assert str(info.value) == (
        "Class labels of type complex128 cannot be saved with the weights (labels must be "
        "strings, numbers or booleans); pickle the estimator instead."
    )


# ---- ContractModule -----------------------------------------------------------------------------


def test_contract_rides_in_the_state_dict():
    assert CONTRACT_NAME == "fitted_contract"
    net = torch.nn.Module()
    net.add_module(CONTRACT_NAME, ContractModule(regression_contract()))
    state = net.state_dict()
    assert sorted(state) == sorted(f"fitted_contract.{k}" for k in
                                   ("meta", "atom_features", "gaussian_centers", "target_mean",
                                    "target_scale"))  # fmt: skip
    empty = torch.nn.Module()
    empty.add_module(CONTRACT_NAME, ContractModule())
    assert empty.state_dict() == {}
    empty.load_state_dict(state)
    back = empty.fitted_contract.contract
    np.testing.assert_array_equal(back.target_mean, [1.0, -2.0])
    assert repr(empty.fitted_contract) == "ContractModule(fitted)"
    assert repr(ContractModule()) == "ContractModule(empty)"


def test_a_state_without_a_contract_is_missing_it():
    holder = ContractModule()
    result = holder.load_state_dict({}, strict=False)
    assert result.missing_keys == ["meta"]
    assert holder.contract is None
    with pytest.raises(RuntimeError, match='Missing key\\(s\\) in state_dict: "meta"'):
        ContractModule().load_state_dict({})


def test_an_unreadable_contract_is_an_error():
    tensors = regression_contract().to_tensors()
    del tensors["atom_features"]
    holder = ContractModule()
    with pytest.raises(RuntimeError, match="the saved contract cannot be read: 'atom_features'"):
        holder.load_state_dict(tensors)
    assert holder.contract is None
    bad = regression_contract().to_tensors()
    bad["meta"] = torch.frombuffer(bytearray(b'{"format": 7}'), dtype=torch.uint8)
    with pytest.raises(RuntimeError, match="the saved contract cannot be read: The weights hold"):
        ContractModule().load_state_dict(bad)


def test_settings_and_contracts_are_frozen_and_compared_by_identity():
    import dataclasses

    contract = regression_contract()
    with pytest.raises(dataclasses.FrozenInstanceError):
        contract.n_out = 3
    with pytest.raises(dataclasses.FrozenInstanceError):
        contract.graph_settings.cutoff = 4.0
    # arrays inside: no field-wise == or hash, which numpy cannot answer
    assert len({contract, regression_contract()}) == 2
    assert len({settings(), settings()}) == 2
    assert contract == contract and contract != regression_contract()


def test_classifier_contract_has_no_target_shape():
    contract = classification_contract(["a", "b"])
    assert contract.target_ndim is None
    assert contract.target_mean is None and contract.target_scale is None
    meta = json.loads(bytes(contract.to_tensors()["meta"].numpy()).decode())
    assert meta["target_ndim"] is None


def test_unsavable_label_type_is_the_first_label():
    labels = np.array([1 + 2j, "a"], dtype=object)
    with pytest.raises(TypeError, match="^Class labels of type complex cannot be saved"):
        classification_contract(labels).to_tensors()


def test_unreadable_contract_message_and_joined_differences():
    tensors = regression_contract().to_tensors()
    del tensors["atom_features"]
    with pytest.raises(RuntimeError) as info:
        ContractModule().load_state_dict(tensors)
    assert str(info.value).endswith(":\n\tthe saved contract cannot be read: 'atom_features'")
    graphs = CrystalGraphs.from_graphs([G0], **{**SETTINGS, "cutoff": 5.0, "max_neighbors": 6})
    with pytest.raises(GraphSettingsError) as info:
        settings().check(graphs, "CGCNNClassifier")
    assert "these graphs have cutoff: 5, not 3; max_neighbors: 6, not 12. Build" in str(info.value)
