"""Every kind of pymatgen structure, and structure files of any name, read as the same graph."""

import bz2
import gzip
import json
import lzma
from pathlib import PurePath

import numpy as np
import pytest
from pymatgen.core import IMolecule, IStructure, Structure
from pymatgen.core.interface import Interface
from pymatgen.core.surface import SlabGenerator
from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

from skgnn import CrystalGraphTransformer
from skgnn.exceptions import StructureError


def _graph(item):
    return CrystalGraphTransformer().fit_transform([item])[0]


def _assert_same_graph(item, structure):
    got, expected = _graph(item), _graph(structure)
    np.testing.assert_array_equal(got.atomic_numbers, expected.atomic_numbers)
    np.testing.assert_array_equal(got.edge_src, expected.edge_src)
    np.testing.assert_array_equal(got.edge_dst, expected.edge_dst)
    np.testing.assert_allclose(got.edge_length, expected.edge_length, atol=1e-5)


def _plain(structure) -> Structure:
    return Structure(structure.lattice, structure.species_and_occu, structure.frac_coords)


def _slab(cscl):
    return SlabGenerator(cscl, (1, 0, 0), 6, 8, center_slab=True).get_slab()


KINDS = {
    "IStructure": lambda s: IStructure.from_sites(s),
    "SymmetrizedStructure": lambda s: SpacegroupAnalyzer(s).get_symmetrized_structure(),
    "Slab": _slab,
    "Interface": lambda s: Interface.from_slabs(_slab(s), _slab(s), gap=2.0, vacuum_over_film=5),
}


@pytest.mark.parametrize("make", KINDS.values(), ids=KINDS.keys())
def test_every_pymatgen_structure_kind_gives_the_graph_of_its_plain_structure(cscl, make):
    item = make(cscl)
    _assert_same_graph(item, _plain(item))


def test_relative_path_that_looks_like_cif_text_is_read_as_a_path(cscl, tmp_path, monkeypatch):
    # a name starting with data_ used to be parsed as CIF text
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data_1.cif").write_text(cscl.to(fmt="cif"))
    (tmp_path / "x_cell_length_a.cif").write_text(cscl.to(fmt="cif"))
    for item in ("data_1.cif", str(tmp_path / "x_cell_length_a.cif")):
        _assert_same_graph(item, cscl)


class _PathLike:
    """An os.PathLike that is not a pathlib.Path."""

    def __init__(self, path):
        self.path = str(path)

    def __fspath__(self):
        return self.path


COMPRESSIONS = {"gz": gzip.compress, "bz2": bz2.compress, "xz": lzma.compress}


@pytest.mark.parametrize("suffix", COMPRESSIONS, ids=COMPRESSIONS)
def test_compressed_cif_files_read_as_pymatgen_reads_them(cscl, tmp_path, suffix):
    path = tmp_path / f"cscl.cif.{suffix}"
    path.write_bytes(COMPRESSIONS[suffix](cscl.to(fmt="cif").encode()))
    for item in (str(path), path, _PathLike(path)):
        _assert_same_graph(item, cscl)


def test_other_formats_read_by_structure_from_file(cscl, tmp_path):
    (tmp_path / "POSCAR").write_text(cscl.to(fmt="poscar"))
    (tmp_path / "cscl.vasp").write_text(cscl.to(fmt="poscar"))
    (tmp_path / "cscl.json").write_text(json.dumps(cscl.as_dict()))
    with gzip.open(tmp_path / "CONTCAR.gz", "wt") as file:
        file.write(cscl.to(fmt="poscar"))
    for name in ("POSCAR", "cscl.vasp", "cscl.json", "CONTCAR.gz"):
        _assert_same_graph(tmp_path / name, cscl)


def test_cif_under_a_name_pymatgen_does_not_know_is_read_as_cif(cscl, tmp_path):
    path = tmp_path / "cscl.txt"
    path.write_text("# exported by hand\n" + cscl.to(fmt="cif"))
    _assert_same_graph(str(path), cscl)


def test_unreadable_file_is_named(cscl, tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("not a structure\n")
    with pytest.raises(StructureError, match=r"X\[1\]: could not read the file '.*notes.txt'"):
        CrystalGraphTransformer().fit_transform([cscl, str(path)])


def _two_block_cif(cscl, perovskite) -> str:
    return cscl.to(fmt="cif") + "\n" + perovskite.to(fmt="cif")


def test_cif_file_with_several_structures_is_refused(cscl, perovskite, tmp_path):
    path = tmp_path / "both.cif"
    path.write_text(_two_block_cif(cscl, perovskite))
    with pytest.raises(StructureError, match=r"X\[1\]: the CIF file .* holds 2 structures"):
        CrystalGraphTransformer().fit_transform([cscl, path])


def test_cif_text_with_several_structures_is_refused(cscl, perovskite):
    with pytest.raises(StructureError, match=r"X\[0\]: CIF text holds 2 structures .* Split it"):
        CrystalGraphTransformer().fit_transform([_two_block_cif(cscl, perovskite)])


@pytest.mark.parametrize(
    "single",
    [{"lattice": {}}, PurePath("a.cif"), IMolecule(["H"], [[0, 0, 0]])],
    ids=["dict", "path", "molecule"],
)
def test_single_item_instead_of_a_sequence_is_refused(single):
    with pytest.raises(TypeError, match="Wrap one structure in a list"):
        CrystalGraphTransformer().fit_transform(single)


def test_immutable_molecule_is_refused_like_a_molecule(cscl):
    with pytest.raises(StructureError, match=r"X\[1\] is a pymatgen IMolecule, which has no"):
        CrystalGraphTransformer().fit_transform([cscl, IMolecule(["H"], [[0, 0, 0]])])


def test_structure_dict_errors_name_the_item(cscl):
    dicts = cscl.as_dict()
    dicts["sites"][0]["species"] = [{"element": "Na", "occu": 0.7}, {"element": "K", "occu": 0.6}]
    with pytest.raises(StructureError, match=r"X\[1\] is a mapping but not a Structure dict"):
        CrystalGraphTransformer().fit_transform([cscl, dicts])


def test_structure_returned_as_it_is(cscl):
    from skgnn.structures import to_structure

    frozen = IStructure.from_sites(cscl)
    assert to_structure(frozen, 0) is frozen
    assert to_structure(cscl, 0) is cscl
    assert isinstance(to_structure(cscl.to(fmt="cif"), 0), Structure)
