"""Learned crystal vectors (transform) and exact per-site contributions (readout="atom")."""

import pickle

import numpy as np
import pandas as pd
import pytest
from pymatgen.core import Lattice, Structure
from sklearn.pipeline import FeatureUnion, make_pipeline
from sklearn.preprocessing import FunctionTransformer

from skgnn import CrystalGraphTransformer

from .conftest import tiny_regressor


@pytest.fixture(scope="module")
def fitted(jdft2d_graphs):
    graphs, y = jdft2d_graphs
    return tiny_regressor(embedding_layer="hidden").fit(graphs[:40], y[:40]), graphs[:40]


def test_prediction_is_the_output_layer_applied_to_the_hidden_embedding(fitted):
    model, graphs = fitted
    vectors = model.transform(graphs)
    layer = model.module_.fc_out
    scaled = vectors @ layer.weight.detach().numpy().T.astype(float) + layer.bias.detach().numpy()
    expected = scaled[:, 0] * model.target_scale_[0] + model.target_mean_[0]
    np.testing.assert_allclose(model.predict(graphs), expected, rtol=1e-5)
    assert model.get_feature_names_out().tolist()[:2] == ["cgcnn_hidden_0", "cgcnn_hidden_1"]
    assert vectors.shape == (40, 16)


def test_pooled_embedding_is_the_mean_of_the_last_atom_vectors(fitted):
    import torch

    model, graphs = fitted
    model.set_params(embedding_layer="pooled")
    try:
        vectors = model.transform(graphs[:3])
        with torch.no_grad():
            atoms = model.module_.atom_vectors(graphs[:3].batch(np.arange(3)))
        first = torch.nn.functional.softplus(atoms[: graphs.n_atoms[0]].mean(dim=0)).numpy()
        np.testing.assert_allclose(vectors[0], first, rtol=1e-5)
    finally:
        model.set_params(embedding_layer="hidden")


def _n_sites(structures) -> np.ndarray:
    return np.array([[len(structure)] for structure in structures])


def _n_sites_name(*_) -> np.ndarray:
    return np.array(["n_sites"])


def test_embeddings_sit_beside_other_features_in_a_pandas_feature_union(jdft2d):
    structures, y = jdft2d
    union = FeatureUnion([
        ("cgcnn", make_pipeline(CrystalGraphTransformer(), tiny_regressor(max_epochs=1))),
        ("n_sites", FunctionTransformer(_n_sites, feature_names_out=_n_sites_name)),
    ]).set_output(transform="pandas")  # fmt: skip
    table = union.fit_transform(structures[:20], y[:20])
    assert isinstance(table, pd.DataFrame) and table.shape == (20, 16 + 1)
    assert table.columns[0] == "cgcnn__cgcnn_pooled_0" and table.columns[-1] == "n_sites__n_sites"
    restored = pickle.loads(pickle.dumps(union))
    pd.testing.assert_frame_equal(
        restored.transform(structures[:5]), union.transform(structures[:5])
    )


@pytest.mark.parametrize("pooling", ["sum", "mean"])
def test_contributions_add_up_to_the_prediction(jdft2d_graphs, pooling):
    graphs, y = jdft2d_graphs
    model = tiny_regressor(module__readout="atom", module__pooling=pooling)
    model.fit(graphs[:40], y[:40])
    table = model.predict_contributions(graphs[:40])
    aggregate = table.groupby("structure")["contribution"].agg(pooling).to_numpy()
    np.testing.assert_allclose(aggregate, model.predict(graphs[:40]), rtol=1e-5)
    assert len(table) == graphs[:40].n_atoms.sum()


def test_contributions_follow_a_permutation_of_the_sites():
    structure = Structure(
        Lattice.cubic(3.9),
        ["Sr", "Ti", "O", "O", "O"],
        [[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]],
    )
    order = [3, 0, 4, 1, 2]
    permuted = Structure.from_sites([structure[i] for i in order])
    transformer = CrystalGraphTransformer()
    train = transformer.transform([structure, structure.copy().scale_lattice(70.0)])
    model = tiny_regressor(module__readout="atom", module__pooling="sum", max_epochs=2)
    model.fit(train, np.array([1.0, 2.0]))
    original = model.predict_contributions(transformer.transform([structure]))
    moved = model.predict_contributions(transformer.transform([permuted]))
    np.testing.assert_allclose(
        moved["contribution"].to_numpy(), original["contribution"].to_numpy()[order], rtol=1e-5
    )
    assert moved["element"].tolist() == [structure[i].specie.symbol for i in order]


def test_contributions_need_the_atom_readout(fitted):
    model, graphs = fitted
    with pytest.raises(ValueError, match="Contributions need module__readout='atom'"):
        model.predict_contributions(graphs)


def test_unknown_embedding_layer_is_refused_by_the_module(fitted):
    model, graphs = fitted
    with pytest.raises(ValueError, match="layer must be 'pooled' or 'hidden'; got 'hiden'"):
        model.module_.embed(graphs.batch(np.arange(2)), "hiden")
