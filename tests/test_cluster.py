"""Featurization spread over a dask cluster through joblib, as a user would run it."""

import pickle
import re

import numpy as np
import pytest
from joblib import parallel_backend

from skgnn import CrystalGraphs, CrystalGraphTransformer
from skgnn.atom_features import resolve_atom_features
from skgnn.transformer import _CHUNK, _chunk_size, _graphs_of

distributed = pytest.importorskip("distributed")


def assert_same_graphs(actual: CrystalGraphs, expected: CrystalGraphs) -> None:
    """Every array of the container, and every setting, equal."""
    assert actual.array_names == expected.array_names
    for name in expected.array_names:
        np.testing.assert_array_equal(getattr(actual, name), getattr(expected, name), err_msg=name)
        assert getattr(actual, name).dtype == getattr(expected, name).dtype, name
    for name, value in expected._settings().items():
        np.testing.assert_array_equal(actual._settings()[name], value, err_msg=name)


@pytest.mark.parametrize(
    "processes",
    [
        # worker threads: the same scheduling, in seconds
        False,
        # worker processes, as on a real cluster: structures and graphs cross a process
        # boundary; slow only because each worker imports skgnn (torch, pymatgen, ~10 s)
        pytest.param(True, marks=pytest.mark.slow),
    ],
    ids=["threads", "processes"],
)
def test_a_dask_cluster_builds_the_serial_graphs(jdft2d, processes):
    structures = list(jdft2d[0][:80])
    serial = CrystalGraphTransformer().fit_transform(structures)
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=processes, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as client,
        distributed.get_task_stream(client) as tasks,
        parallel_backend("dask"),
    ):
        on_cluster = CrystalGraphTransformer(n_jobs=-1).fit_transform(structures)
    assert_same_graphs(on_cluster, serial)
    # joblib sends its calls to dask in batches it sizes itself, named as
    # "batch_of__graphs_of_<n>_calls-<id>"; 80 structures on 2 workers make 8 chunks of 10
    batches = [t for t in tasks.data if "_graphs_of_" in t["key"]]
    calls = [int(re.search(r"_graphs_of_(\d+)_calls", t["key"]).group(1)) for t in batches]
    assert _chunk_size(80, 2) == 10
    assert sum(calls) == 8, [t["key"] for t in tasks.data]
    assert len({t["worker"] for t in batches}) == 2


def test_a_chunk_sends_back_its_flat_arrays_only(jdft2d):
    structures = list(jdft2d[0][:20])
    table = resolve_atom_features(None)
    settings = {
        "gaussian_centers": np.arange(41, dtype=np.float32) * 0.2,
        "gaussian_width": 0.2,
        "cutoff": 8.0,
        "max_neighbors": 12,
    }
    arrays = _graphs_of(structures, 0, table, settings)
    assert sorted(arrays) == sorted(CrystalGraphs._ARRAYS + CrystalGraphs._OPTIONAL_ARRAYS)
    assert all(type(a) is np.ndarray for a in arrays.values())
    # what crosses the process boundary is the arrays' bytes and a little framing: no
    # per-graph objects, and not the atom feature table
    payload = sum(a.nbytes for a in arrays.values())
    assert len(pickle.dumps(arrays, protocol=5)) < payload + 2000
    assert table.values.nbytes > 2000


@pytest.mark.parametrize(
    ("n_items", "n_workers", "expected"),
    [(80, 1, _CHUNK), (80, 2, 10), (81, 2, 11), (3, 8, 1), (100_000, 2, _CHUNK)],
    ids=["serial", "small", "rounds-up", "fewer-than-workers", "capped"],
)
def test_chunk_size(n_items, n_workers, expected):
    assert _chunk_size(n_items, n_workers) == expected
