"""A lean Parquet writer for isrsim's event tables (non-nullable, nested at most two lists deep).

Why isrsim writes Parquet itself
--------------------------------
pyarrow's writer computes the repetition and definition levels of every leaf column
separately, value by value, through its general (nullable, arbitrarily nested) code path. For
isrsim's event schema (``list<struct<...>>`` with 9-18 leaves, nothing nullable) that costs
~310 ns of the ~350 ns per ``isr_mumu`` event that ``pq.ParquetWriter`` needs, while the same
27 values written as flat columns take ~90 ns (``benchmarks/README.md``). Every leaf of one
list column has the *same* levels, and for non-nullable data they follow from the list
offsets alone. This writer therefore computes the levels once per list column and page, in
one compiled pass, and reuses the encoded bytes for every leaf of that column.

What it writes is ordinary Parquet (format 2.x, data pages v1), read by any Parquet reader:

* Schema: the Arrow schema mapped as pyarrow maps it (three-level ``LIST`` groups with a
  ``repeated group list`` and an ``element``; int8/int16 as INT32 with INT_8/INT_16, strings as
  UTF8 BYTE_ARRAY) and the serialised Arrow schema under ``ARROW:schema``, so pyarrow and awkward
  read back exactly the Arrow types (dictionary, fixed-size lists, non-nullable fields).
* Levels: RLE/bit-packing hybrid (repetition levels bit-packed, definition levels as RLE runs);
  values PLAIN; a dictionary page + RLE_DICTIONARY for dictionary columns.
* Pages split at event boundaries (~1 MiB of values per page), compressed with the chosen codec
  (``lz4`` = LZ4_RAW), each with its CRC-32 (the readers of :mod:`isrsim.io` verify it).
* min/max statistics for the columns named in ``statistics`` (integer, top level).

Tables it cannot write (nullable fields, other types, deeper nesting) are reported by
:func:`unsupported`; :class:`isrsim.io.EventWriter` then falls back to pyarrow. The tests
compare every table written here with the same table written by pyarrow, value by value.
"""

from __future__ import annotations

import base64
import itertools
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO

import numpy as np
import pyarrow as pa

from . import __version__
from ._numba import kernel

__all__ = ["ParquetTableWriter", "unsupported"]

#: Parquet CompressionCodec and the name of the Arrow codec that produces it
_CODECS = {"none": (0, None), "snappy": (1, "snappy"), "gzip": (2, "gzip"), "zstd": (6, "zstd"),
           "lz4": (7, "lz4_raw")}
_PAGE_BYTES = 1 << 20  # target uncompressed values per data page

# Parquet physical types, encodings, repetition types, converted types, page types
_BOOLEAN, _INT32, _INT64, _FLOAT, _DOUBLE, _BYTE_ARRAY = 0, 1, 2, 4, 5, 6
_PLAIN, _RLE, _RLE_DICTIONARY = 0, 3, 8
_REQUIRED, _REPEATED = 0, 2
_UTF8, _LIST, _INT_8, _INT_16 = 0, 3, 15, 16
_DATA_PAGE, _DICTIONARY_PAGE = 0, 2

_PRIMITIVE = {  # Arrow type -> (physical type, converted type or None, NumPy dtype written)
    pa.float64(): (_DOUBLE, None, np.float64), pa.float32(): (_FLOAT, None, np.float32),
    pa.int64(): (_INT64, None, np.int64), pa.int32(): (_INT32, None, np.int32),
    pa.int16(): (_INT32, _INT_16, np.int32), pa.int8(): (_INT32, _INT_8, np.int32),
}


# ---------------------------------------------------------------------------------------
# Thrift compact protocol (just what Parquet's metadata needs)
# ---------------------------------------------------------------------------------------
# a struct is a list of (field id, kind, value); kinds: i16, i32, i64, bin, bool, struct,
# list_i32, list_bin, list_struct
_CTYPE = {"bool": 1, "i16": 4, "i32": 5, "i64": 6, "bin": 8, "struct": 12}
Fields = list[tuple[int, str, Any]]


def _varint(out: bytearray, v: int) -> None:
    while v >= 0x80:
        out.append((v & 0x7F) | 0x80)
        v >>= 7
    out.append(v)


def _zigzag(v: int) -> int:
    return v << 1 if v >= 0 else ((-v) << 1) - 1


def _value(out: bytearray, kind: str, v: Any) -> None:
    if kind in ("i16", "i32", "i64"):
        _varint(out, _zigzag(int(v)))
    elif kind == "bin":
        b = v.encode() if isinstance(v, str) else bytes(v)
        _varint(out, len(b))
        out += b
    elif kind == "struct":
        _struct(out, v)
    else:
        raise ValueError(kind)


def _struct(out: bytearray, fields: Fields) -> None:
    last = 0
    for fid, kind, v in fields:
        if kind == "bool":
            ctype = 1 if v else 2
        elif kind.startswith("list_"):
            ctype = 9
        else:
            ctype = _CTYPE[kind]
        delta = fid - last
        if 0 < delta <= 15:
            out.append((delta << 4) | ctype)
        else:
            out.append(ctype)
            _varint(out, _zigzag(fid))
        last = fid
        if kind == "bool":
            continue
        if ctype == 9:
            elem = kind[5:]
            n = len(v)
            out.append((n << 4) | _CTYPE[elem] if n < 15 else 0xF0 | _CTYPE[elem])
            if n >= 15:
                _varint(out, n)
            for item in v:
                _value(out, elem, item)
        else:
            _value(out, kind, v)
    out.append(0)


def thrift_struct(fields: Fields) -> bytes:
    """Compact-protocol encoding of a Thrift struct given as (field id, kind, value) triples."""
    out = bytearray()
    _struct(out, fields)
    return bytes(out)


# ---------------------------------------------------------------------------------------
# levels and values of one page (compiled)
# ---------------------------------------------------------------------------------------
@kernel
def _put_u32(out, pos, v):
    out[pos] = v & 0xFF
    out[pos + 1] = (v >> 8) & 0xFF
    out[pos + 2] = (v >> 16) & 0xFF
    out[pos + 3] = (v >> 24) & 0xFF


@kernel
def _put_varint(out, pos, v):
    while v >= 0x80:
        out[pos] = (v & 0x7F) | 0x80
        pos += 1
        v >>= 7
    out[pos] = v
    return pos + 1


@kernel
def _bitpacked(lev, n, bw, out, pos):
    """One bit-packed run of ``n`` levels of width ``bw`` (LSB first, padded to 8 values)."""
    ngroups = (n + 7) // 8
    pos = _put_varint(out, pos, (ngroups << 1) | 1)
    acc = 0
    nbits = 0
    for i in range(ngroups * 8):
        v = lev[i] if i < n else 0
        acc |= v << nbits
        nbits += bw
        while nbits >= 8:
            out[pos] = acc & 0xFF
            pos += 1
            acc >>= 8
            nbits -= 8
    return pos


@kernel
def _rle_runs(lev, n, vb, out, pos):
    """RLE runs of the first ``n`` values of ``lev``, each value stored in ``vb`` bytes."""
    i = 0
    while i < n:
        v = lev[i]
        j = i + 1
        while j < n and lev[j] == v:
            j += 1
        pos = _put_varint(out, pos, (j - i) << 1)
        for b in range(vb):
            out[pos] = (v >> (8 * b)) & 0xFF
            pos += 1
        i = j
    return pos


@kernel
def _levels(off1, off2, depth, e0, e1, rep, dfn):
    """Repetition and definition levels of events [e0, e1) of a non-nullable column nested
    ``depth`` (1 or 2) lists deep; ``off1`` the event offsets, ``off2`` the offsets of the inner
    list (per outer item). Returns the number of levels."""
    k = 0
    for e in range(e0, e1):
        a = off1[e]
        b = off1[e + 1]
        if a == b:
            rep[k] = 0
            dfn[k] = 0
            k += 1
            continue
        for i in range(a, b):
            r_item = 0 if i == a else 1
            if depth == 1:
                rep[k] = r_item
                dfn[k] = 1
                k += 1
            else:
                c0 = off2[i]
                c1 = off2[i + 1]
                if c0 == c1:
                    rep[k] = r_item
                    dfn[k] = 1
                    k += 1
                for j in range(c0, c1):
                    rep[k] = r_item if j == c0 else 2
                    dfn[k] = 2
                    k += 1
    return k


@kernel
def _encode_levels(off1, off2, depth, e0, e1, scratch, out):
    """[len][repetition levels][len][definition levels] of a data page v1 into ``out``;
    returns (number of levels, bytes written)."""
    nl = scratch.shape[0] // 2
    rep = scratch[:nl]
    dfn = scratch[nl:]
    n = _levels(off1, off2, depth, e0, e1, rep, dfn)
    bw = 1 if depth == 1 else 2
    pos = _bitpacked(rep, n, bw, out, 4)
    _put_u32(out, 0, pos - 4)
    start = pos
    pos = _rle_runs(dfn, n, 1, out, start + 4)
    _put_u32(out, start, pos - start - 4)
    return n, pos


@kernel
def _count_levels(off1, off2, depth, e0, e1):
    k = 0
    for e in range(e0, e1):
        a = off1[e]
        b = off1[e + 1]
        if a == b or depth == 1:
            k += max(b - a, 1)
            continue
        for i in range(a, b):
            k += max(off2[i + 1] - off2[i], 1)
    return k


# ---------------------------------------------------------------------------------------
# schema planning
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Leaf:
    path: tuple[str, ...]       # path in the Parquet schema
    arrow_path: tuple[int, ...]  # child indices below the top-level column
    depth: int                   # number of list levels
    physical: int
    dtype: Any                   # NumPy dtype of the PLAIN values (None: dictionary<string>)
    top: int                     # top-level column index


def unsupported(schema: pa.Schema) -> str | None:
    """Why this writer cannot write ``schema`` (None if it can)."""
    try:
        _plan(schema)
    except _Unsupported as exc:
        return str(exc)
    return None


class _Unsupported(Exception):
    pass


def _plan(schema: pa.Schema) -> tuple[list[Fields], list[_Leaf]]:
    elements: list[Fields] = [[(4, "bin", "schema"), (5, "i32", len(schema))]]
    leaves: list[_Leaf] = []

    def visit(field: pa.Field, path: tuple[str, ...], apath: tuple[int, ...], depth: int,
              top: int, name: str) -> None:
        if field.nullable:
            raise _Unsupported(f"field {'.'.join((*path, name))} is nullable")
        t = field.type
        here = (*path, name)
        if pa.types.is_struct(t):
            elements.append([(3, "i32", _REQUIRED), (4, "bin", name), (5, "i32", t.num_fields)])
            for i in range(t.num_fields):
                visit(t.field(i), here, (*apath, i), depth, top, t.field(i).name)
        elif pa.types.is_list(t) or pa.types.is_fixed_size_list(t):
            if depth >= 2:
                raise _Unsupported(f"field {'.'.join(here)} is nested more than two lists deep")
            elements.append([(3, "i32", _REQUIRED), (4, "bin", name), (5, "i32", 1),
                             (6, "i32", _LIST)])
            elements.append([(3, "i32", _REPEATED), (4, "bin", "list"), (5, "i32", 1)])
            visit(t.value_field, (*here, "list"), (*apath, -1), depth + 1, top, "element")
        elif pa.types.is_dictionary(t):
            if depth or not pa.types.is_string(t.value_type) or t.index_type != pa.int32():
                raise _Unsupported(f"field {'.'.join(here)}: only top-level dictionary<string>")
            elements.append([(1, "i32", _BYTE_ARRAY), (3, "i32", _REQUIRED), (4, "bin", name),
                             (6, "i32", _UTF8)])
            leaves.append(_Leaf(here, apath, depth, _BYTE_ARRAY, None, top))
        elif t in _PRIMITIVE:
            physical, converted, dtype = _PRIMITIVE[t]
            el: Fields = [(1, "i32", physical), (3, "i32", _REQUIRED), (4, "bin", name)]
            if converted is not None:
                el.append((6, "i32", converted))
            elements.append(el)
            leaves.append(_Leaf(here, apath, depth, physical, np.dtype(dtype), top))
        else:
            raise _Unsupported(f"field {'.'.join(here)} has type {t}")

    for i, field in enumerate(schema):
        visit(field, (), (), 0, i, field.name)
    return elements, leaves


# ---------------------------------------------------------------------------------------
# the writer
# ---------------------------------------------------------------------------------------
def _descend(arr: pa.Array, apath: Sequence[int], cache: dict[Any, Any],
             key: tuple[int, ...]) -> tuple[pa.Array, list[np.ndarray]]:
    """The leaf array below ``arr`` and the zero-based offsets of each list on the way
    (intermediate results cached under the path prefix: sibling leaves share them)."""
    offsets: list[np.ndarray] = []
    for depth, step in enumerate(apath):
        node = key + tuple(apath[:depth])
        if node not in cache:
            if step >= 0:  # struct (no nulls: flatten() honours the slice)
                cache[node] = (arr.flatten(), None)
            elif pa.types.is_fixed_size_list(arr.type):
                k = arr.type.list_size
                cache[node] = (arr.flatten(), np.arange(len(arr) + 1, dtype=np.int64) * k)
            else:
                off = np.asarray(arr.offsets, dtype=np.int64)
                cache[node] = (arr.flatten(), off - off[0])
        children, off = cache[node]
        if step >= 0:
            arr = children[step]
        else:
            arr = children
            offsets.append(off)
    return arr, offsets


class ParquetTableWriter:
    """Streams tables of one schema into a Parquet file, one row group per :meth:`write`.

    ``fh`` is an open binary file; ``compression`` one of none, snappy, gzip, zstd, lz4
    (LZ4_RAW); ``statistics`` names top-level integer columns that get min/max statistics.
    """

    def __init__(self, fh: BinaryIO, schema: pa.Schema, *, compression: str = "lz4",
                 compression_level: int | None = None,
                 statistics: Sequence[str] = ("event_id",)) -> None:
        if compression not in _CODECS:
            msg = f"compression = {compression!r} is invalid: allowed {', '.join(_CODECS)}"
            raise ValueError(msg)
        reason = unsupported(schema)
        if reason is not None:
            raise ValueError(f"schema not supported by the lean writer: {reason}")
        self._fh = fh
        self.schema = schema
        self._elements, self._leaves = _plan(schema)
        self._codec_id, name = _CODECS[compression]
        self._codec = None if name is None else pa.Codec(name, compression_level)
        self._stats = {schema.get_field_index(s) for s in statistics if s in schema.names}
        self._row_groups: list[Fields] = []
        self._n_rows = 0
        self._pos = 4
        self._buf = np.empty(0, np.uint8)
        fh.write(b"PAR1")

    def _scratch(self, size: int) -> np.ndarray:
        """A reused page buffer (fresh allocations of MB-sized pages cost page faults)."""
        if self._buf.size < size:
            self._buf = np.empty(max(size, 2 * self._buf.size), np.uint8)
        return self._buf[:size]

    # -- pages -----------------------------------------------------------------------
    def _page(self, header_fields: Fields, body: Any, n_uncompressed: int) -> tuple[int, int]:
        """Write one page (compressing ``body``); returns (uncompressed, compressed) sizes
        including the header."""
        data = body if self._codec is None else self._codec.compress(body, asbytes=False)
        crc = zlib.crc32(data)
        if crc >= 1 << 31:
            crc -= 1 << 32
        size = len(data) if self._codec is None else data.size
        header = thrift_struct([(1, "i32", header_fields[0]), (2, "i32", n_uncompressed),
                                (3, "i32", size), (4, "i32", crc), *header_fields[1:]])
        self._fh.write(header)
        self._fh.write(data)
        self._pos += len(header) + size
        return len(header) + n_uncompressed, len(header) + size

    def _column_chunk(self, leaf: _Leaf, arr: pa.Array, n_rows: int,
                      level_cache: dict[Any, Any]) -> tuple[Fields, int]:
        """Write the pages of one leaf; returns its ColumnChunk and uncompressed size."""
        start = self._pos
        dict_offset = None
        encodings = [_PLAIN, _RLE]
        values, offsets = _descend(arr, leaf.arrow_path, level_cache, (leaf.top,))
        unc = comp = 0
        n_values = 0
        if leaf.dtype is None:  # top-level dictionary<string>: dictionary page + indices
            dictionary = values.dictionary
            parts = bytearray()
            for s in dictionary.to_pylist():
                b = s.encode()
                parts += len(b).to_bytes(4, "little") + b
            dict_offset = self._pos
            u, c = self._page([_DICTIONARY_PAGE, (7, "struct", [(1, "i32", len(dictionary)),
                                                                 (2, "i32", _PLAIN)])],
                              np.frombuffer(bytes(parts), np.uint8), len(parts))
            unc += u
            comp += c
            idx = np.asarray(values.indices, dtype=np.int64)
            vb = 1 if len(dictionary) <= 1 << 8 else 2 if len(dictionary) <= 1 << 16 else 4
            out = np.empty((vb + 5) * idx.size + 16, np.uint8)
            out[0] = 8 * vb  # bit width of the indices: RLE runs store vb bytes per value
            pos = _rle_runs(idx, idx.size, vb, out, 1)
            data_offset = self._pos
            u, c = self._page([_DATA_PAGE, (5, "struct", [(1, "i32", n_rows),
                                                          (2, "i32", _RLE_DICTIONARY),
                                                          (3, "i32", _RLE), (4, "i32", _RLE)])],
                              out[:pos], pos)
            unc += u
            comp += c
            n_values = n_rows
            encodings = [_PLAIN, _RLE, _RLE_DICTIONARY]
        else:
            typed = np.asarray(values.to_numpy(zero_copy_only=False), dtype=leaf.dtype)
            vals = typed.view(np.uint8)
            item = leaf.dtype.itemsize
            data_offset = self._pos
            for e0, e1, v0, v1, lev in self._pages(leaf, offsets, n_rows, values, level_cache):
                nlev = e1 - e0 if lev is None else lev[0]
                head = 0 if lev is None else lev[1].size
                body = self._scratch(head + (v1 - v0) * item)
                if lev is not None:
                    body[:head] = lev[1]
                body[head:] = vals[v0 * item:v1 * item]
                u, c = self._page([_DATA_PAGE, (5, "struct", [(1, "i32", nlev), (2, "i32", _PLAIN),
                                                              (3, "i32", _RLE), (4, "i32", _RLE)])],
                                  body, body.size)
                unc += u
                comp += c
                n_values += nlev
        meta: Fields = [(1, "i32", leaf.physical), (2, "list_i32", encodings),
                        (3, "list_bin", list(leaf.path)), (4, "i32", self._codec_id),
                        (5, "i64", n_values), (6, "i64", unc), (7, "i64", comp),
                        (9, "i64", data_offset)]
        if dict_offset is not None:
            meta.append((11, "i64", dict_offset))
        if leaf.top in self._stats and leaf.depth == 0 and leaf.dtype is not None and n_rows:
            lo, hi = typed.min().tobytes(), typed.max().tobytes()
            meta.append((12, "struct", [(3, "i64", 0), (5, "bin", hi), (6, "bin", lo)]))
        return [(2, "i64", start), (3, "struct", meta)], unc

    def _pages(self, leaf: _Leaf, offsets: list[np.ndarray], n_rows: int, values: pa.Array,
               cache: dict[Any, Any]):
        """(e0, e1, first value, end value, levels or None) for each page of this leaf. Page
        boundaries and encoded levels are shared by all leaves below the same chain of lists
        (e.g. every field of ``truth``)."""
        last_list = max((i for i, step in enumerate(leaf.arrow_path) if step < 0), default=-1)
        key = ("pages", leaf.top, *leaf.arrow_path[:last_list + 1])  # the leaf's chain of lists
        if key not in cache:
            per_event = max(len(values), 1) * 8 / max(n_rows, 1)
            step = max(1, int(_PAGE_BYTES / per_event))
            bounds = [*range(0, n_rows, step), n_rows]
            pages = []
            if leaf.depth == 0:
                for e0, e1 in itertools.pairwise(bounds):
                    pages.append((e0, e1, e0, e1, None))
            else:
                off1 = offsets[0]
                off2 = offsets[1] if leaf.depth == 2 else off1
                inner = off2 if leaf.depth == 2 else None
                for e0, e1 in itertools.pairwise(bounds):
                    n_lev = _count_levels(off1, off2, leaf.depth, e0, e1)
                    scratch = np.empty(2 * n_lev, np.uint8)
                    out = np.empty(8 * n_lev + 64, np.uint8)
                    n, nb = _encode_levels(off1, off2, leaf.depth, e0, e1, scratch, out)
                    v0 = off1[e0] if inner is None else inner[off1[e0]]
                    v1 = off1[e1] if inner is None else inner[off1[e1]]
                    pages.append((e0, e1, int(v0), int(v1), (int(n), out[:nb])))
            cache[key] = pages
        return cache[key]

    # -- public API --------------------------------------------------------------------
    def write(self, table: pa.Table) -> None:
        """Append ``table`` (this writer's schema) as one row group."""
        if not table.schema.equals(self.schema):
            msg = "table schema differs from the writer's schema"
            raise ValueError(msg)
        n = table.num_rows
        if n == 0:
            return
        start = self._pos
        columns = [c.combine_chunks() if c.num_chunks != 1 else c.chunk(0) for c in table.columns]
        cache: dict[Any, Any] = {}
        chunks = []
        total_unc = 0
        for leaf in self._leaves:
            cc, unc = self._column_chunk(leaf, columns[leaf.top], n, cache)
            chunks.append(cc)
            total_unc += unc
        self._row_groups.append([(1, "list_struct", chunks), (2, "i64", total_unc),
                                 (3, "i64", n), (5, "i64", start),
                                 (6, "i64", self._pos - start),
                                 (7, "i16", len(self._row_groups))])
        self._n_rows += n

    def close(self, metadata: dict[str, str] | None = None) -> None:
        """Write the footer (schema, row groups, key-value metadata incl. ``ARROW:schema``)."""
        arrow_schema = base64.b64encode(self.schema.serialize().to_pybytes())
        kv = [[(1, "bin", b"ARROW:schema"), (2, "bin", arrow_schema)]]
        kv += [[(1, "bin", k), (2, "bin", v)] for k, v in (metadata or {}).items()]
        footer = thrift_struct([
            (1, "i32", 2), (2, "list_struct", self._elements), (3, "i64", self._n_rows),
            (4, "list_struct", self._row_groups), (5, "list_struct", kv),
            (6, "bin", f"isrsim version {__version__}"),
            (7, "list_struct", [[(1, "struct", [])] for _ in self._leaves]),
        ])
        self._fh.write(footer)
        self._fh.write(len(footer).to_bytes(4, "little"))
        self._fh.write(b"PAR1")
