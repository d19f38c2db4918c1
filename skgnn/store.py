"""Crystal graphs on disk: written a chunk at a time as they are built, read back lazily.

A graph store is a folder of numpy ``.npy`` files, one per array of
:class:`~skgnn.CrystalGraphs` (atoms, species and edges of all graphs, with
per-graph offsets), the settings the graphs were built with, and a
``meta.json`` written last. :func:`write_graph_store` builds the graphs of any
iterable of structures, a chunk at a time, and appends each chunk to the
files, so neither the structures nor the graphs need fit in memory;
:class:`GraphStore` memory-maps the files, and a batch reads only its own
graphs' rows from them.
"""

from __future__ import annotations

import inspect
import json
import os
import shutil
from collections.abc import Iterable, Iterator, Sized
from itertools import islice
from numbers import Integral
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from .graphs import CrystalGraphs
from .structures import as_sequence
from .transformer import CrystalGraphTransformer

__all__ = ["GraphStore", "write_graph_store"]

STORE_FORMAT = "skgnn graph store"
FORMAT_VERSION = 1
_META = "meta.json"
_SETTINGS = "settings"  # sub-folder of the settings that are arrays (atom feature table, Gaussians)


def _is_offsets(name: str) -> bool:
    """Offsets hold running totals, shifted when chunks join; other arrays join as they are."""
    return name.endswith("_offsets")


def _setting_names() -> set[str]:
    """What ``CrystalGraphs`` takes besides its arrays: the settings a store must carry."""
    arrays = CrystalGraphs._ARRAYS + CrystalGraphs._OPTIONAL_ARRAYS
    return set(inspect.signature(CrystalGraphs).parameters) - set(arrays)


class GraphStore(CrystalGraphs):
    """Crystal graphs kept on disk, memory-mapped: a :class:`~skgnn.CrystalGraphs` larger than RAM.

    Open a folder written by :func:`write_graph_store`. Every array is a
    read-only memory map of its ``.npy`` file, so opening costs nothing and a
    batch reads only its graphs' rows; the operating system keeps recently
    read pages cached and drops them when memory is short. The store is a
    ``CrystalGraphs``, so ``CGCNNRegressor().fit(store, y)``, ``predict`` and
    ``transform`` take it through the same path as graphs in memory, and a
    fitted model checks its settings the same way. Indexing it with rows
    (``store[rows]``, as cross-validation does) copies those graphs into
    memory. It pickles as its path, so DataLoader workers and joblib
    processes reopen it rather than copy it.

    Parameters
    ----------
    path : str or path-like
        The folder.

    Raises
    ------
    FileNotFoundError
        If the folder, its ``meta.json`` (an unfinished write leaves none) or
        one of its array files is missing.
    ValueError
        If a file does not hold what ``meta.json`` says, or the store was
        written for a container with other arrays (another skgnn version).

    Examples
    --------
    >>> import tempfile
    >>> from pymatgen.core import Lattice, Structure
    >>> nacl = Structure(Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    >>> folder = tempfile.mkdtemp()
    >>> store = write_graph_store([nacl] * 3, f"{folder}/nacl")
    >>> len(GraphStore(f"{folder}/nacl")), store.n_edges.tolist()
    (3, [24, 24, 24])
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        arrays, settings = _open(self.path)
        super().__init__(**arrays, **settings)

    def __reduce__(self):
        return type(self), (str(self.path),)

    def __repr__(self) -> str:
        return (
            f"GraphStore({str(self.path)!r}, n_graphs={len(self)}, "
            f"n_atoms={self.atom_offsets[-1]}, n_edges={self.edge_offsets[-1]}, "
            f"{self.nbytes / 1e6:.1f} MB on disk)"
        )


def write_graph_store(
    structures: Iterable,
    path: str | os.PathLike,
    *,
    transformer: CrystalGraphTransformer | None = None,
    chunk_size: int = 4096,
    overwrite: bool = False,
) -> GraphStore:
    """Build the crystal graphs of ``structures`` into a folder on disk, a chunk at a time.

    ``chunk_size`` structures are taken from ``structures`` at a time, graphed
    by ``transformer`` (in parallel if its ``n_jobs`` says so, on a dask
    cluster inside ``joblib.parallel_backend("dask")``) and appended to the
    store's files, so memory holds one chunk of structures and graphs, never
    all of them. The graphs are those ``transformer.transform`` returns, array
    for array. The folder appears at ``path`` only once complete: an error
    midway (a structure that cannot be graphed, a full disk) leaves nothing
    there.

    Parameters
    ----------
    structures : iterable of structures, structure files or CIF text
        Anything ``CrystalGraphTransformer.transform`` takes, or any iterable
        of such items, such as a generator that reads or makes them one at a
        time; it is read once, in order.
    path : str or path-like
        The folder to create.
    transformer : CrystalGraphTransformer or None, default=None
        Its settings (cutoff, neighbours, Gaussians, atom features) are stored
        with the graphs, and a model fitted on them will accept only graphs
        built alike. ``None`` means ``CrystalGraphTransformer()``.
    chunk_size : int, default=4096
        Structures graphed and written at a time; memory grows with it.
    overwrite : bool, default=False
        Replace a graph store already at ``path``. Anything else there is
        never replaced.

    Returns
    -------
    GraphStore
        The store, opened.

    Raises
    ------
    FileExistsError
        If ``path`` exists (and is not a graph store to overwrite).
    skgnn.exceptions.StructureError
        For the first structure that cannot be graphed, as ``X[i]`` with its
        position ``i`` in ``structures``.
    """
    transformer = CrystalGraphTransformer() if transformer is None else transformer
    if not isinstance(transformer, CrystalGraphTransformer):
        raise TypeError(
            f"transformer must be a CrystalGraphTransformer; got {type(transformer).__name__}."
        )
    if not isinstance(chunk_size, Integral) or isinstance(chunk_size, bool) or chunk_size < 1:
        raise ValueError(f"chunk_size must be an int >= 1; got {chunk_size!r}.")
    path = Path(path)
    _check_free(path, overwrite)
    transformer.fit()  # its parameters, checked before anything is read or written
    items = _lazy(structures)
    total = len(structures) if isinstance(structures, Sized) else None
    if total == 0:
        raise ValueError("structures is empty; pass at least one structure.")
    partial = path.with_name(f".{path.name}.partial-{os.getpid()}")  # beside: rename stays cheap
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        quiet = not transformer.verbose
        with tqdm(total=total, unit="structure", desc="graph store", disable=quiet) as progress:
            _write(items, partial, transformer, int(chunk_size), progress)
        if path.exists():  # a store, as _check_free made sure
            shutil.rmtree(path)
        partial.rename(path)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return GraphStore(path)


def _check_free(path: Path, overwrite: bool) -> None:
    if not path.exists():
        return
    if not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True to replace a graph store there.")
    if not (path / _META).is_file():
        raise FileExistsError(
            f"{path} exists and is not a graph store (no {_META}); overwrite=True replaces only "
            "a graph store. Choose another path."
        )


def _lazy(structures) -> Iterator:
    """The items of ``structures``, read one at a time where they come one at a time."""
    if isinstance(structures, Iterable) and not isinstance(structures, Sized):
        return iter(structures)  # a generator: never all in memory
    return iter(as_sequence(structures))  # a list, array, Series; refuses a single structure


class _NpyAppender:
    """One ``.npy`` file that grows by rows: its header is rewritten with the final shape.

    numpy pads every ``.npy`` header so that the length of its first axis can
    grow in place (``np.lib.format.GROWTH_AXIS_MAX_DIGITS``); the rows go
    after it as they come.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.n_rows = 0
        self._file = None
        self._header_end = 0

    def append(self, rows: np.ndarray) -> None:
        rows = np.ascontiguousarray(rows)
        if self._file is None:
            self.dtype, self.row_shape = rows.dtype, rows.shape[1:]
            self._file = open(self.path, "wb")  # closed in close() or discard()
            self._write_header()
            self._header_end = self._file.tell()
        elif rows.dtype != self.dtype or rows.shape[1:] != self.row_shape:
            raise ValueError(
                f"{self.path.name}: a chunk of {rows.dtype} rows of shape {rows.shape[1:]} after "
                f"{self.dtype} rows of shape {self.row_shape}."
            )
        self._file.write(rows.data)
        self.n_rows += len(rows)

    def _write_header(self) -> None:
        header = {
            "descr": np.lib.format.dtype_to_descr(self.dtype),
            "fortran_order": False,
            "shape": (self.n_rows, *self.row_shape),
        }
        np.lib.format.write_array_header_1_0(self._file, header)

    def close(self) -> dict:
        """Write the final shape into the header; return the file's dtype and shape."""
        self._file.seek(0)
        self._write_header()
        if self._file.tell() != self._header_end:  # numpy's padding keeps it in place
            raise RuntimeError(f"{self.path.name}: the .npy header changed length.")
        self._file.close()
        return {"dtype": self.dtype.str, "shape": [self.n_rows, *self.row_shape]}

    def discard(self) -> None:
        if self._file is not None:
            self._file.close()


def _write(items: Iterator, folder: Path, transformer, chunk_size: int, progress) -> None:
    # the transformer makes every array, the optional ones too (a store never lacks them)
    names = CrystalGraphs._ARRAYS + CrystalGraphs._OPTIONAL_ARRAYS
    appenders = {name: _NpyAppender(folder / f"{name}.npy") for name in names}
    totals = dict.fromkeys(filter(_is_offsets, appenders), 0)
    settings = None
    start = 0
    try:
        while block := list(islice(items, chunk_size)):
            for part in transformer._graph_chunks(block, first_index=start):
                settings = part._settings()
                for name, appender in appenders.items():
                    values = getattr(part, name)
                    if _is_offsets(name):
                        if appender.n_rows == 0:
                            appender.append(values[:1])  # the leading 0
                        values = values[1:] + totals[name]
                        totals[name] = int(values[-1]) if len(values) else totals[name]
                    appender.append(values)
            start += len(block)
            progress.update(len(block))
        if start == 0:
            raise ValueError("structures is empty; pass at least one structure.")
        arrays = {name: appender.close() for name, appender in appenders.items()}
    finally:
        for appender in appenders.values():
            appender.discard()
    (folder / _SETTINGS).mkdir()
    scalars = {}
    for name, value in settings.items():
        if isinstance(value, np.ndarray):
            np.save(folder / _SETTINGS / f"{name}.npy", value)
        else:
            scalars[name] = value.item() if isinstance(value, np.generic) else value
    meta = {
        "format": STORE_FORMAT,
        "version": FORMAT_VERSION,
        "n_graphs": start,
        "arrays": arrays,
        "settings": scalars,
    }
    (folder / _META).write_text(json.dumps(meta, indent=1) + "\n")


def _open(path: Path) -> tuple[dict, dict]:
    """The memory-mapped arrays and the settings of the store at ``path``, checked."""
    if not path.is_dir():
        raise FileNotFoundError(f"No graph store at {path}: there is no such folder.")
    if not (path / _META).is_file():
        raise FileNotFoundError(
            f"{path} is not a complete graph store: it has no {_META} (write_graph_store "
            "writes it last, so an interrupted write leaves none). Write the store again."
        )
    meta = json.loads((path / _META).read_text())
    if meta.get("format") != STORE_FORMAT or meta.get("version") != FORMAT_VERSION:
        raise ValueError(
            f"{path / _META} describes {meta.get('format')!r} version {meta.get('version')!r}, "
            f"not a {STORE_FORMAT} version {FORMAT_VERSION}."
        )
    # a store written before an optional array existed opens without it
    required, optional = set(CrystalGraphs._ARRAYS), set(CrystalGraphs._OPTIONAL_ARRAYS)
    found = set(meta["arrays"])
    _check_names("arrays", found, required | (found & optional), path)
    arrays = {name: _map(path, name, meta["arrays"][name]) for name in sorted(found)}
    settings = dict(meta["settings"])
    for file in sorted((path / _SETTINGS).glob("*.npy")):
        settings[file.stem] = np.load(file)  # small, and in memory: torch reads them
    _check_names("settings", set(settings), _setting_names(), path)
    _check_lengths(arrays, meta["n_graphs"], path)
    return arrays, settings


def _check_names(kind: str, found: set, expected: set, path: Path) -> None:
    if found != expected:
        missing, extra = sorted(expected - found), sorted(found - expected)
        raise ValueError(
            f"The graph store at {path} has other {kind} than this skgnn's CrystalGraphs "
            f"(missing {missing}, unexpected {extra}): it was written by another version. "
            "Write it again with write_graph_store."
        )


def _map(path: Path, name: str, expected: dict) -> np.memmap:
    file = path / f"{name}.npy"
    if not file.is_file():
        raise FileNotFoundError(f"The graph store at {path} lacks {file.name}; write it again.")
    try:
        array = np.load(file, mmap_mode="r")
    except ValueError as exc:  # a truncated file, or not a .npy at all
        raise ValueError(f"{file} is damaged ({exc}); write the graph store again.") from exc
    if array.dtype.str != expected["dtype"] or list(array.shape) != expected["shape"]:
        raise ValueError(
            f"{file} holds {array.dtype.str} {list(array.shape)}, but {_META} says "
            f"{expected['dtype']} {expected['shape']}; write the graph store again."
        )
    return array


def _check_lengths(arrays: dict, n_graphs: int, path: Path) -> None:
    """Offsets of ``n_graphs`` graphs starting at 0, and every other array as long as one ends."""
    ends = set()
    for name in filter(_is_offsets, arrays):
        offsets = arrays[name]
        if len(offsets) != n_graphs + 1 or offsets[0] != 0 or np.any(np.diff(offsets) < 0):
            raise ValueError(f"{path / name}.npy does not hold the offsets of {n_graphs} graphs.")
        ends.add(int(offsets[-1]))
    for name, array in arrays.items():
        if not _is_offsets(name) and len(array) not in ends:
            raise ValueError(
                f"{path / name}.npy has {len(array)} rows; the offsets end at {sorted(ends)}."
            )
