"""Every row of the README's "Errors and edge cases" table, checked as it reads.

``ROWS`` maps each row's first cell to a check; ``test_readme_rows_are_the_tested_rows``
keeps the two in step. Estimator rows check public behaviour only (exception type
and a key phrase), with tiny fits.
"""

import gzip
import pickle
import re
from pathlib import Path

import numpy as np
import pytest
from pymatgen.core import (
    DummySpecies,
    IStructure,
    Lattice,
    Molecule,
    Species,
    Structure,
)
from pymatgen.core.interface import Interface
from pymatgen.core.surface import SlabGenerator
from pymatgen.symmetry.analyzer import SpacegroupAnalyzer
from sklearn.exceptions import NotFittedError

from skgnn import CGCNNClassifier, CGCNNRegressor, CrystalGraphTransformer
from skgnn.exceptions import StructureError

from .bounded import assert_refused, transform_bounded

README = Path(__file__).resolve().parents[1] / "README.md"
SECTION = "## Errors and edge cases"

CSCL = Structure(Lattice.cubic(4.12), ["Cs", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
CUBIC = Lattice.cubic(4.0)
SMALL = dict(
    module__atom_fea_len=8, module__h_fea_len=8, module__n_conv=1, batch_size=4, random_state=0
)


def _graphs(items, **params):
    return CrystalGraphTransformer(**params).fit_transform(items)


def _same_graph(a, b):
    np.testing.assert_array_equal(a.atomic_numbers, b.atomic_numbers)
    np.testing.assert_array_equal(a.edge_dst, b.edge_dst)
    np.testing.assert_allclose(a.edge_length, b.edge_length, atol=1e-5)


def _refused(item, match):
    with pytest.raises(StructureError, match=match):
        _graphs([CSCL, item])


def _training_set(n=8):
    lattices = np.linspace(3.9, 4.5, n)
    structures = [Structure(Lattice.cubic(a), ["Cs", "Cl"], CSCL.frac_coords) for a in lattices]
    return _graphs(structures), lattices.copy()


ROWS = {}


def row(first_cell: str, name: str):
    """Register the check of the README row whose first cell is ``first_cell``."""

    def register(check):
        ROWS[first_cell] = pytest.param(check, id=name)
        return check

    return register


@row(
    "any pymatgen structure: `Structure`, `IStructure`, `SymmetrizedStructure`, `Slab`, "
    "`Interface`",
    "structure-kinds",
)
def check_structure_kinds(tmp_path):
    slab = SlabGenerator(CSCL, (1, 0, 0), 6, 8, center_slab=True).get_slab()
    for item in (
        IStructure.from_sites(CSCL),
        SpacegroupAnalyzer(CSCL).get_symmetrized_structure(),
        slab,
        Interface.from_slabs(slab, slab, gap=2.0, vacuum_over_film=5.0),
    ):
        plain = Structure(item.lattice, item.species_and_occu, item.frac_coords)
        _same_graph(*_graphs([item, plain]))


@row("a `Structure.as_dict()` mapping", "structure-dict")
def check_structure_dict(tmp_path):
    _same_graph(*_graphs([CSCL.as_dict(), CSCL]))
    _refused({"lattice": {"matrix": "x"}, "sites": []}, r"X\[1\] is a mapping but not a Structure")


@row("the path (`str` or `os.PathLike`) of an existing file, whatever its name", "any-file-name")
def check_any_file_name(tmp_path):
    cif = CSCL.to(fmt="cif")
    (tmp_path / "data_1.cif").write_text(cif)
    (tmp_path / "cscl.cif.gz").write_bytes(gzip.compress(cif.encode()))
    (tmp_path / "POSCAR").write_text(CSCL.to(fmt="poscar"))
    (tmp_path / "cscl.txt").write_text(cif)
    for name in ("data_1.cif", "cscl.cif.gz", "POSCAR", "cscl.txt"):
        for item in (str(tmp_path / name), tmp_path / name):
            _same_graph(*_graphs([item, CSCL]))


@row("a string with a line break that is not a file name", "cif-text")
def check_cif_text(tmp_path):
    _same_graph(*_graphs([CSCL.to(fmt="cif"), CSCL]))


@row("a missing file, an unreadable file or CIF text", "unreadable")
def check_unreadable(tmp_path):
    _refused("no/such/file.cif", r"X\[1\] = 'no/such/file.cif' is neither an existing file")
    (tmp_path / "bad.cif").write_text("data_x\n_cell_length_a 3\nnonsense\n")
    _refused(str(tmp_path / "bad.cif"), r"X\[1\]: could not read the CIF file '.*bad.cif'")
    _refused("data_x\n_cell_length_a 3\nnonsense", r"X\[1\]: could not read CIF text")


@row("a CIF file or text holding several structures (`data_` blocks)", "several-structures")
def check_several_structures(tmp_path):
    text = CSCL.to(fmt="cif") + "\n" + Structure(CUBIC, ["Na"], [[0, 0, 0]]).to(fmt="cif")
    (tmp_path / "two.cif").write_text(text)
    for item in (text, tmp_path / "two.cif"):
        _refused(item, r"X\[1\]: .* holds 2 structures .*parse_structures")


@row("an item of another type", "other-type")
def check_other_type(tmp_path):
    _refused(42, r"X\[1\] is a int; expected")


@row("one structure, path or dict instead of a sequence of them", "single-item")
def check_single_item(tmp_path):
    for single in (CSCL, "a.cif", CSCL.as_dict()):
        with pytest.raises(TypeError, match="Wrap one structure in a list"):
            _graphs(single)


@row("a `Molecule`", "molecule")
def check_molecule(tmp_path):
    _refused(Molecule(["H", "H"], [[0, 0, 0], [0, 0, 0.74]]), r"X\[1\] is a pymatgen Molecule")


NAN = float("nan")


@row("NaN or inf in the lattice", "nan-lattice")
def check_nan_lattice(tmp_path):
    for bad in (NAN, float("inf")):
        lattice = Lattice([[bad, 0, 0], [0, 4, 0], [0, 0, 4]])
        assert_refused([CSCL, Structure(lattice, ["Na"], [[0, 0, 0]])], r"X\[1\] has a lattice")


@row("NaN or inf in fractional or Cartesian coordinates", "nan-coordinates")
def check_nan_coordinates(tmp_path):
    fractional = Structure(CUBIC, ["Na", "Cl"], [[0, 0, 0], [NAN, 0.5, 0.5]])
    cartesian = Structure(CUBIC, ["Na"], [[0, float("inf"), 0]], coords_are_cartesian=True)
    for bad in (fractional, cartesian):
        assert_refused([CSCL, bad], r"X\[1\] has 1 site\(s\) with coordinates that are NaN")


@row("a cell too small for its sites: zero, near-zero or flat", "degenerate-cell")
def check_degenerate_cell(tmp_path):
    for rows in ([[4, 0, 0], [0, 4, 0], [0, 0, 0]], [[4, 0, 0], [0, 4, 0], [4, 4, 1e-4]]):
        flat = Structure(Lattice(rows), ["Na"], [[0, 0, 0]])
        assert_refused([CSCL, flat], r"X\[1\] packs 1 site\(s\) into a cell of")


@row("periodic in fewer than three directions, e.g. `pbc=(True, True, False)`", "partial-pbc")
def check_partial_pbc(tmp_path):
    slab = Structure(Lattice(CUBIC.matrix, pbc=(True, True, False)), ["Na"], [[0, 0, 0]])
    _refused(slab, r"X\[1\] is periodic only along a and b .*all three directions")


@row("a species that is not an element (`DummySpecies` such as `X0+` or `Xa`)", "dummy-species")
def check_dummy_species(tmp_path):
    _refused(Structure(CUBIC, [DummySpecies("X", 0)], [[0, 0, 0]]), r"X\[1\] site 0 holds X0\+")
    _refused(Structure(CUBIC, ["Xa"], [[0, 0, 0]]), r"X\[1\] site 0 holds Xa0\+")


@row('ionic species such as `Species("Fe", 2)`', "ionic-species")
def check_ionic_species(tmp_path):
    ions = Structure(CSCL.lattice, [Species("Cs", 1), Species("Cl", -1)], CSCL.frac_coords)
    _same_graph(*_graphs([ions, CSCL]))


@row(
    "a site with no species, an occupancy outside (0, 1], occupancies summing above 1",
    "bad-occupancy",
)
def check_bad_occupancy(tmp_path):
    _refused(Structure(CUBIC, [{"Na": 0.0}], [[0, 0, 0]]), r"X\[1\] site 0 holds no species")
    _refused(Structure(CUBIC, [{"Na": NAN}], [[0, 0, 0]]), r"X\[1\] site 0 holds no species")
    above_one = CSCL.as_dict()
    above_one["sites"][0]["species"] = [
        {"element": "Cs", "occu": 0.7},
        {"element": "Cl", "occu": 0.6},
    ]
    _refused(above_one, r"X\[1\] is a mapping .*occupancies sum to more than 1")


@row("a structure with no sites", "no-sites")
def check_no_sites(tmp_path):
    _refused(Structure(CUBIC, [], []), r"X\[1\] is a structure with no sites")


@row("overlapping atoms (closer than 0.5 Å)", "overlap")
def check_overlap(tmp_path):
    _refused(
        Structure(CUBIC, ["Na", "Na"], [[0, 0, 0], [0, 0, 0.01]]),
        r"X\[1\] has sites 0 and 1 only 0.040 Å apart",
    )
    pile = Structure(Lattice.cubic(100.0), ["Na"] * 3000, np.full((3000, 3), 0.5))
    assert_refused([CSCL, pile], r"X\[1\] has sites 0 and 1 only 0.000 Å apart")


@row("a very skewed lattice basis, or coordinates many cells away", "skewed-or-far")
def check_skewed_or_far(tmp_path):
    a, b, c = CSCL.lattice.matrix
    skewed = Structure(
        Lattice([a, b, c + 1e8 * a]), CSCL.species, CSCL.cart_coords, coords_are_cartesian=True
    )
    far = Structure(CSCL.lattice, CSCL.species, [[0, 0, 0], [0.5 + 1e9, 0.5, 0.5]])
    kind, graphs = transform_bounded([CSCL, skewed, far])
    assert kind == "ok", graphs
    for other in graphs[1:]:
        np.testing.assert_array_equal(other[1], graphs[0][1])
        np.testing.assert_allclose(other[2], graphs[0][2], atol=1e-4)


@row(
    "a cell so vast or so thin for its atoms that the search would visit over 2²⁰ cell images "
    "or a grid of over 2²² cubes",
    "search-too-large",
)
def check_search_too_large(tmp_path):
    vast = Structure(Lattice.cubic(1e4), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    assert_refused([CSCL, vast], r"X\[1\]: a periodic neighbour search within 8 Å would visit")


@row("an atom with no neighbour within `cutoff`", "radius-growth")
def check_radius_growth(tmp_path):
    graph = _graphs([CSCL], cutoff=1.0)[0]
    assert np.bincount(graph.edge_src, minlength=2).min() > 0
    np.testing.assert_allclose(graph.edge_length.min(), 4.12 * np.sqrt(3) / 2, atol=1e-4)
    lone = Structure(Lattice.cubic(1e4), ["Na"], [[0, 0, 0]])  # only its own images, 1 µm off
    kind, graphs = transform_bounded([lone])
    assert kind == "ok", graphs
    np.testing.assert_allclose(graphs[0][2], 1e4, rtol=1e-6)


@row("neighbours at equal distance (to 1e-5 Å)", "tie-order")
def check_tie_order(tmp_path):
    # K at the origin has two Na and two Cl at 2 Å; with room for two, Na (Z=11) wins
    # whatever the order of the sites
    coords = {"K": [0, 0, 0], "Na": [0.5, 0, 0], "Cl": [0, 0.5, 0]}
    for order in (["K", "Na", "Cl"], ["K", "Cl", "Na"]):
        cell = Structure(CUBIC, order, [coords[e] for e in order])
        graph = _graphs([cell], max_neighbors=2)[0]
        kept = graph.edge_dst[graph.edge_src == 0]
        assert [cell[int(k)].specie.symbol for k in kept] == ["Na", "Na"]


@row("an element with no row in the atom feature table", "unknown-element")
def check_unknown_element(tmp_path):
    _refused(Structure(CUBIC, ["Og"], [[0, 0, 0]]), r"X\[1\] has Og \(Z=118\)")


@row("disordered sites (partial occupancy)", "disordered")
def check_disordered(tmp_path):
    from skgnn.atom_features import cgcnn_atom_features

    alloy = Structure(Lattice.cubic(3.6), [{"Cu": 0.75, "Au": 0.25}], [[0, 0, 0]])
    table = cgcnn_atom_features().values
    features = _graphs([alloy]).batch([0]).atom_fea[0].numpy()
    np.testing.assert_allclose(features, 0.75 * table[29] + 0.25 * table[79], atol=1e-6)


@row("one-atom cells", "one-atom")
def check_one_atom(tmp_path):
    graph = _graphs([Structure(Lattice.cubic(3.0), ["Cu"], [[0, 0, 0]])])[0]
    assert len(graph.edge_src) == 12 and set(graph.edge_dst) == {0}


@row("empty `X`, `X`/`y` length mismatch, NaN or inf in `y`, a single class", "bad-x-or-y")
def check_bad_x_or_y(tmp_path):
    with pytest.raises(ValueError, match="X is empty"):
        _graphs([])
    graphs, y = _training_set()
    with pytest.raises(ValueError, match=r"y has 7"):
        CGCNNRegressor(max_epochs=1, **SMALL).fit(graphs, y[:7])
    for bad in (np.nan, np.inf):
        y_bad = y.copy()
        y_bad[2] = bad
        with pytest.raises(ValueError, match=r"y\[2\]"):
            CGCNNRegressor(max_epochs=1, **SMALL).fit(graphs, y_bad)
    with pytest.raises(ValueError, match="single class"):
        CGCNNClassifier(max_epochs=1, **SMALL).fit(graphs, np.zeros(len(graphs), dtype=int))


@row("`predict` before `fit`", "predict-before-fit")
def check_predict_before_fit(tmp_path):
    graphs, _ = _training_set()
    with pytest.raises(NotFittedError):
        CGCNNRegressor(**SMALL).predict(graphs)


@row("very large cells", "large-cell")
def check_large_cell(tmp_path):
    perovskite = Structure(
        Lattice.cubic(3.9),
        ["Sr", "Ti", "O", "O", "O"],
        [[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]],
    )
    graph = _graphs([perovskite * (4, 4, 4)])[0]
    assert graph.n_atoms == 320
    assert np.bincount(graph.edge_src).tolist() == [12] * 320


@row("a run interrupted (Ctrl-C, or a callback)", "interrupted")
def check_interrupted(tmp_path):
    from skorch.callbacks import Callback, Checkpoint, LoadInitState

    class Interrupt(Callback):
        def on_epoch_end(self, net, **kwargs):
            if len(net.history) == 2:
                raise KeyboardInterrupt

    graphs, y = _training_set()
    net = CGCNNRegressor(max_epochs=5, callbacks=[Interrupt()], **SMALL).fit(graphs, y)
    assert len(net.history) == 2 and np.isfinite(net.predict(graphs)).all()

    def resumable():
        checkpoint = Checkpoint(dirname=str(tmp_path), monitor=None)
        return CGCNNRegressor(
            max_epochs=2, callbacks=[checkpoint, LoadInitState(checkpoint)], **SMALL
        )

    resumable().fit(graphs, y)
    assert [h["epoch"] for h in resumable().fit(graphs, y).history] == [1, 2, 3, 4]


class _RunsCode:
    """Unpickling this touches a file: what a weights file must not be able to do."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


@row("loading weights", "weights-only")
def check_weights_only(tmp_path):
    import torch

    graphs, y = _training_set()
    net = CGCNNRegressor(max_epochs=1, **SMALL).fit(graphs, y)
    marker = tmp_path / "code-ran"
    weights = tmp_path / "weights.pt"
    torch.save({"payload": _RunsCode(marker)}, weights, pickle_protocol=pickle.HIGHEST_PROTOCOL)
    with pytest.raises(Exception):  # noqa: B017 - whichever error, the code must not run
        net.load_params(f_params=weights)
    assert not marker.exists()


@row("structures passed straight to a `CGCNNRegressor`", "structures-to-regressor")
def check_structures_to_regressor(tmp_path):
    with pytest.raises(TypeError, match=r"make_pipeline\(CrystalGraphTransformer\(\)"):
        CGCNNRegressor(max_epochs=1, **SMALL).fit([CSCL, CSCL], [1.0, 2.0])


@pytest.mark.parametrize("check", ROWS.values())
def test_row(check, tmp_path):
    check(tmp_path)


def _readme_rows() -> list[str]:
    text = README.read_text(encoding="utf-8")
    section = text[text.index(SECTION) :]
    section = section[: section.index("\n## ", len(SECTION))]
    cells = [line.split(" | ")[0][2:] for line in section.splitlines() if line.startswith("| ")]
    return [cell for cell in cells if cell != "input"]


def test_readme_rows_are_the_tested_rows():
    documented = _readme_rows()
    assert len(documented) == len(set(documented))
    assert set(documented) == set(ROWS), (
        f"untested rows: {sorted(set(documented) - set(ROWS))}; "
        f"tests of rows no longer there: {sorted(set(ROWS) - set(documented))}"
    )


def test_row_names_are_unique():
    names = [param.id for param in ROWS.values()]
    assert len(names) == len(set(names)) and all(re.fullmatch(r"[a-z0-9-]+", n) for n in names)
