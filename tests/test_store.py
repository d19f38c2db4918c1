"""Graph stores: graphs written to disk a chunk at a time, read back memory-mapped."""

import json
import pickle

import numpy as np
import pytest

from skgnn import CrystalGraphs, CrystalGraphTransformer, GraphStore, write_graph_store
from skgnn.exceptions import GraphSettingsError, StructureError
from skgnn.store import _NpyAppender
from skgnn.transformer import CrystalGraphTransformer as Transformer

from .conftest import tiny_regressor


def assert_same_graphs(actual: CrystalGraphs, expected: CrystalGraphs) -> None:
    """Every array of the container (whatever fields it has), and every setting, equal."""
    assert actual.array_names == expected.array_names
    for name in expected.array_names:
        a, e = getattr(actual, name), getattr(expected, name)
        np.testing.assert_array_equal(a, e, err_msg=name)
        assert a.dtype == e.dtype, name
    assert actual._settings().keys() == expected._settings().keys()
    for name, value in expected._settings().items():
        np.testing.assert_array_equal(actual._settings()[name], value, err_msg=name)
    assert actual.settings.same_as(expected.settings)


@pytest.fixture(scope="module")
def store(jdft2d, tmp_path_factory):
    """The 120 jdft2d structures, written 25 at a time (five chunks, the last short)."""
    path = tmp_path_factory.mktemp("stores") / "jdft2d"
    return write_graph_store(jdft2d[0], path, chunk_size=25)


def test_a_store_written_in_chunks_holds_the_graphs_in_memory(store, jdft2d_graphs):
    graphs, _ = jdft2d_graphs
    assert isinstance(store.edge_length, np.memmap)
    assert_same_graphs(store, graphs)
    assert_same_graphs(store[[5, 0, 119]], graphs[[5, 0, 119]])


def test_a_store_reopened_from_its_path_is_the_same(store, jdft2d_graphs):
    reopened = GraphStore(str(store.path))
    assert_same_graphs(reopened, jdft2d_graphs[0])
    rows = np.array([3, 77, 3, 40])
    for name in ("atom_fea", "edge_length", "edge_index", "graph_index"):
        np.testing.assert_array_equal(
            getattr(reopened.batch(rows), name), getattr(jdft2d_graphs[0].batch(rows), name)
        )
    # pickled as its path: DataLoader workers and joblib processes reopen it
    payload = pickle.dumps(store)
    assert len(payload) < 300
    assert_same_graphs(pickle.loads(payload), store)


def test_structures_are_read_one_chunk_at_a_time(jdft2d, tmp_path, monkeypatch):
    pulled = []
    in_flight = []

    def structures():
        for i, structure in enumerate(jdft2d[0][:60]):
            pulled.append(i)
            yield structure

    chunks = Transformer._graph_chunks

    def graph_chunks(self, items, first_index):
        in_flight.append(len(pulled) - first_index)
        return chunks(self, items, first_index)

    monkeypatch.setattr(Transformer, "_graph_chunks", graph_chunks)
    written = write_graph_store(structures(), tmp_path / "lazy", chunk_size=20)
    assert in_flight == [20, 20, 20]  # never more than one chunk read ahead
    assert_same_graphs(written, CrystalGraphTransformer().fit_transform(jdft2d[0][:60]))


def test_the_transformer_settings_travel_with_the_store(jdft2d, tmp_path):
    transformer = CrystalGraphTransformer(cutoff=6.0, max_neighbors=8, gaussian_step=0.25)
    written = write_graph_store(jdft2d[0][:10], tmp_path / "s", transformer=transformer)
    assert_same_graphs(GraphStore(tmp_path / "s"), transformer.fit_transform(jdft2d[0][:10]))
    assert (written.cutoff, written.max_neighbors, written.n_edge_features) == (6.0, 8, 25)


def test_a_net_fitted_on_a_store_predicts_as_one_fitted_in_memory(store, jdft2d_graphs):
    graphs, y = jdft2d_graphs
    on_disk = tiny_regressor().fit(store, y)
    in_memory = tiny_regressor().fit(graphs, y)
    np.testing.assert_array_equal(
        on_disk.history[:, "train_loss"], in_memory.history[:, "train_loss"]
    )
    expected = in_memory.predict(graphs)
    assert on_disk.predict(store).tobytes() == expected.tobytes()
    assert in_memory.predict(store).tobytes() == expected.tobytes()


def test_a_model_refuses_a_store_built_otherwise(store, jdft2d, jdft2d_graphs, tmp_path):
    net = tiny_regressor(max_epochs=1).fit(store, jdft2d_graphs[1])
    other = write_graph_store(
        jdft2d[0][:10], tmp_path / "s", transformer=CrystalGraphTransformer(max_neighbors=8)
    )
    with pytest.raises(GraphSettingsError, match="max_neighbors: 8, not 12"):
        net.predict(other)


def test_a_structure_that_fails_names_its_position_and_leaves_nothing(jdft2d, tmp_path):
    bad = list(jdft2d[0][:30]) + ["not a structure"]
    with pytest.raises(StructureError, match=r"X\[30\]"):
        write_graph_store(iter(bad), tmp_path / "s", chunk_size=8)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("structures", "error", "match"),
    [
        ([], ValueError, "structures is empty"),
        (iter([]), ValueError, "structures is empty"),
        ("POSCAR", TypeError, "Wrap one structure in a list"),
    ],
    ids=["empty-list", "empty-generator", "single"],
)
def test_bad_structures_are_refused_before_anything_is_written(structures, error, match, tmp_path):
    with pytest.raises(error, match=match):
        write_graph_store(structures, tmp_path / "s")
    assert list(tmp_path.iterdir()) == []


def test_bad_arguments_are_refused(jdft2d, tmp_path):
    with pytest.raises(ValueError, match="chunk_size must be an int >= 1; got 0"):
        write_graph_store(jdft2d[0][:2], tmp_path / "s", chunk_size=0)
    with pytest.raises(TypeError, match="must be a CrystalGraphTransformer; got dict"):
        write_graph_store(jdft2d[0][:2], tmp_path / "s", transformer={})
    with pytest.raises(ValueError, match="'cutoff' parameter"):
        write_graph_store(jdft2d[0][:2], tmp_path / "s", transformer=Transformer(cutoff=-1))
    assert list(tmp_path.iterdir()) == []


def test_an_existing_path_is_replaced_only_when_asked_and_only_if_a_store(jdft2d, tmp_path):
    path = tmp_path / "s"
    write_graph_store(jdft2d[0][:3], path)
    with pytest.raises(FileExistsError, match="pass overwrite=True"):
        write_graph_store(jdft2d[0][:5], path)
    assert len(write_graph_store(jdft2d[0][:5], path, overwrite=True)) == 5
    assert len(GraphStore(path)) == 5
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("keep")
    with pytest.raises(FileExistsError, match="is not a graph store"):
        write_graph_store(jdft2d[0][:5], tmp_path / "mine", overwrite=True)
    assert (tmp_path / "mine" / "thesis.tex").read_text() == "keep"


@pytest.fixture
def copy_of(store, tmp_path):
    """A fresh copy of the module's store, to damage."""
    import shutil

    path = tmp_path / "copy"
    shutil.copytree(store.path, path)
    return path


def test_a_missing_store_or_meta_file_is_named(copy_of, tmp_path):
    with pytest.raises(FileNotFoundError, match="No graph store at .*nowhere"):
        GraphStore(tmp_path / "nowhere")
    (copy_of / "meta.json").unlink()
    with pytest.raises(FileNotFoundError, match="not a complete graph store: it has no meta.json"):
        GraphStore(copy_of)


def test_a_missing_array_file_is_named(copy_of):
    (copy_of / "edge_dst.npy").unlink()
    with pytest.raises(FileNotFoundError, match="lacks edge_dst.npy"):
        GraphStore(copy_of)


def test_a_truncated_array_file_is_named(copy_of):
    file = copy_of / "edge_length.npy"
    file.write_bytes(file.read_bytes()[:-100])
    with pytest.raises(ValueError, match="edge_length.npy is damaged"):
        GraphStore(copy_of)


def test_an_array_that_disagrees_with_the_offsets_is_named(copy_of):
    np.save(copy_of / "edge_src.npy", np.zeros(7, dtype=np.int32))
    meta = json.loads((copy_of / "meta.json").read_text())
    meta["arrays"]["edge_src"]["shape"] = [7]
    (copy_of / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="edge_src.npy has 7 rows; the offsets end at"):
        GraphStore(copy_of)


def test_missing_settings_are_named(copy_of):
    (copy_of / "settings" / "atom_feature_values.npy").unlink()
    with pytest.raises(ValueError, match=r"other settings .*missing \['atom_feature_values'\]"):
        GraphStore(copy_of)


def test_a_store_of_another_container_version_is_refused(copy_of):
    meta = json.loads((copy_of / "meta.json").read_text())
    meta["arrays"]["edge_charge"] = {"dtype": "<f4", "shape": [1, 3]}
    (copy_of / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"other arrays .*unexpected \['edge_charge'\]"):
        GraphStore(copy_of)


def test_a_store_written_before_edge_vectors_opens_without_them(copy_of, store):
    meta = json.loads((copy_of / "meta.json").read_text())
    assert meta["arrays"]["edge_vector"]["shape"] == [int(store.edge_offsets[-1]), 3]
    del meta["arrays"]["edge_vector"]
    (copy_of / "meta.json").write_text(json.dumps(meta))
    (copy_of / "edge_vector.npy").unlink()
    old = GraphStore(copy_of)
    assert old.edge_vector is None and old.batch([0, 1]).edge_vector is None
    assert old.array_names == CrystalGraphs._ARRAYS
    for name in CrystalGraphs._ARRAYS:
        np.testing.assert_array_equal(getattr(old, name), getattr(store, name), err_msg=name)


def test_appended_rows_of_any_width_read_back_as_one_array(tmp_path):
    rng = np.random.default_rng(0)
    chunks = [rng.normal(size=(n, 3)).astype(np.float32) for n in (0, 4, 100_000, 7)]
    appender = _NpyAppender(tmp_path / "v.npy")
    for chunk in chunks:
        appender.append(chunk)
    assert appender.close() == {"dtype": "<f4", "shape": [100_011, 3]}
    np.testing.assert_array_equal(np.load(tmp_path / "v.npy"), np.concatenate(chunks))
    with pytest.raises(ValueError, match="int32 rows of shape"):
        bad = _NpyAppender(tmp_path / "w.npy")
        bad.append(chunks[1])
        bad.append(np.zeros((2, 3), dtype=np.int32))
