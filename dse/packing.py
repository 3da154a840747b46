"""Packed weights: a :class:`~quant.QuantizedTensor` as the bit streams a hardware decoder reads.

``pack(q)`` turns a quantized tensor into named byte streams (codes at their true width, block
scales as stored codes, sign and selection bit planes, the per-tensor factor, LUT images,
sparse entries) plus string metadata; ``unpack`` inverts it bit for bit. ``encode_file`` /
``decode_file`` turn a Packed into the bytes of its safetensors file and back. The byte layout
is specified in docs/packed-format.md; this module is its reference implementation.

Every stream is a little-endian bit stream: field i of width w occupies stream bits
[i*w, (i+1)*w), stream bit k being bit (k mod 8) of byte k // 8 (LSB first), the last byte
zero-padded. Bit packing is vectorized with ``np.unpackbits`` / ``np.packbits``.
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
from dataclasses import dataclass
from functools import cache

import numpy as np


from quant import AtomFormat, AtomKind, Candidate, QuantizedTensor, ScaleFormat, TensorScale, parse_candidate
from quant.candidate import LUT_EXPONENT_BITS, Selection
from quant.engine import code_dtype, fixed_grid
from quant.lutformat import EXPONENT_BIAS, decoded_levels, encode_grid
from quant.errors import DseError

FORMAT = "sop-dse-packed"
FORMAT_VERSION = 1
BF16_BITS = 16  # a sparse entry's value: the top half of a float32
POT_BIAS = 127  # a power-of-two tensor factor 2**k is stored as the byte k + 127 (as UE8M0)
_CHUNK = 1 << 20  # elements per packing step; a multiple of 8, so each step ends on a byte boundary
_LOOKUP_ATOMS = (AtomKind.CODEBOOK, AtomKind.LEARNED)  # grids decoded through a stored LUT image


class PackError(DseError):
    """A packed tensor or package that is corrupt, truncated, or does not match its weights."""


@dataclass(frozen=True)
class Packed:
    """One tensor's packed streams and metadata: the contents of its safetensors file."""

    streams: dict[str, np.ndarray]
    """Stream name -> 1-D uint8 bytes (see docs/packed-format.md §3)."""
    metadata: dict[str, str]
    """safetensors ``__metadata__``: format, tensor, candidate, shape, grid sizes and factors..."""

    @property
    def stream_bits(self) -> dict[str, int]:
        """Bits each stream holds, without its final byte's padding."""
        return {k: int(v) for k, v in json.loads(self.metadata["stream_bits"]).items()}

    @property
    def payload_bits(self) -> int:
        return sum(self.stream_bits.values())

    @property
    def payload_bytes(self) -> int:
        """Bytes of all streams (padding included, safetensors header excluded)."""
        return sum(s.size for s in self.streams.values())


# --- bit streams -------------------------------------------------------------------------------

def _uint(width: int) -> np.dtype:
    """Smallest little-endian unsigned dtype holding ``width`` bits."""
    for dtype in ("<u1", "<u2", "<u4"):
        if width <= np.dtype(dtype).itemsize * 8:
            return np.dtype(dtype)
    raise ValueError(f"fields of {width} bits are not supported (at most 32)")


def pack_bits(values: np.ndarray, width: int) -> np.ndarray:
    """Unsigned integers -> a byte stream of ``width``-bit fields, LSB first, last byte zero-padded."""
    flat = np.asarray(values).reshape(-1)
    if flat.size and int(flat.max()) >> width:
        raise ValueError(f"a value does not fit in {width} bits")
    flat = np.ascontiguousarray(flat, dtype=_uint(width))
    parts = [np.zeros(0, np.uint8)]
    for start in range(0, flat.size, _CHUNK):
        chunk = flat[start:start + _CHUNK]
        bits = np.unpackbits(chunk.view(np.uint8).reshape(chunk.size, -1), axis=1, bitorder="little")
        parts.append(np.packbits(bits[:, :width], bitorder="little"))
    return np.concatenate(parts)


def unpack_bits(stream: np.ndarray, width: int, count: int) -> np.ndarray | None:
    """Inverse of :func:`pack_bits`: ``count`` fields, or None when the stream has the wrong
    length or non-zero padding (a truncated or corrupt stream)."""
    dtype = _uint(width)
    if stream.dtype != np.uint8 or stream.ndim != 1 or stream.size != (count * width + 7) // 8:
        return None
    if (count * width) % 8 and int(stream[-1]) >> ((count * width) % 8):
        return None
    out = np.empty(count, dtype)
    step_bytes = _CHUNK * width // 8
    for i, start in enumerate(range(0, count, _CHUNK)):
        n = min(_CHUNK, count - start)
        bits = np.unpackbits(stream[i * step_bytes:], bitorder="little", count=n * width).reshape(n, width)
        full = np.zeros((n, dtype.itemsize * 8), np.uint8)
        full[:, :width] = bits
        out[start:start + n] = np.packbits(full, axis=1, bitorder="little").view(dtype).reshape(n)
    return out


# --- value sets and their codes ----------------------------------------------------------------

@dataclass(frozen=True)
class _Encoding:
    """A value set and the bit pattern stored for each value."""

    values: np.ndarray
    """(n,) float64, ascending."""
    codes: np.ndarray
    """(n,) uint32 code of each value."""
    index_of: np.ndarray
    """(2**bits,) int64: index into ``values`` of each code, -1 for codes that hold no value."""

    @classmethod
    def build(cls, pairs: list[tuple[float, int]], bits: int) -> _Encoding:
        values = np.array([v for v, _ in pairs], np.float64)
        codes = np.array([c for _, c in pairs], np.uint32)
        order = np.argsort(values)
        index_of = np.full(1 << bits, -1, np.int64)
        index_of[codes[order]] = np.arange(len(pairs))
        return cls(values[order], codes[order], index_of)

    def encode(self, x: np.ndarray) -> np.ndarray:
        """Codes of values that are in the set exactly."""
        idx = np.clip(np.searchsorted(self.values, x), 0, self.values.size - 1)
        if not np.array_equal(self.values[idx], x):
            raise ValueError("a value is not in the format's value set")
        return self.codes[idx]

    def decode(self, codes: np.ndarray) -> np.ndarray | None:
        """Values of codes, or None if a code holds no value (NaN, Inf or unused)."""
        idx = self.index_of[codes]
        return None if (idx < 0).any() else self.values[idx]


@cache
def _atom_encoding(atom: AtomFormat) -> _Encoding:
    return _Encoding.build(list(zip(atom.values, atom.codes)), atom.code_bits)


@cache
def _magnitude_encoding(scale: ScaleFormat) -> _Encoding:
    assert scale.float_spec is not None
    return _Encoding.build(scale.float_spec.decode_all(), scale.float_spec.bits)


def _magnitude_bits(scale: ScaleFormat) -> int:
    """Width of a scale's magnitude field: ExMy bits, or 31 for an FP32 scale."""
    return 31 if scale.float_spec is None else scale.float_spec.bits


def _encode_scales(scale: ScaleFormat, values: np.ndarray, sign: np.ndarray | None,
                   meta: np.ndarray | None) -> np.ndarray:
    """Scale containers, MSB to LSB: [sign] magnitude [metabit] (docs/packed-format.md §4)."""
    mag = np.abs(values.astype(np.float32))  # abs(-0.0) = +0.0: the sign travels separately
    if scale.float_spec is None:
        code = mag.view(np.uint32).astype(np.uint32)
    else:
        code = _magnitude_encoding(scale).encode(mag.astype(np.float64))
    if scale.metabit:
        code = (code << 1) | (np.zeros_like(code) if meta is None else meta.astype(np.uint32))
    if sign is not None:  # only a signed container has a sign bit
        code = code | (sign.astype(np.uint32) << np.uint32(scale.bits - 1))
    return code


def _decode_scales(scale: ScaleFormat, code: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(magnitudes float32, sign bits, metabits) of scale containers, or None for a NaN/Inf/unused code."""
    code = code.astype(np.uint32)
    sign = (code >> np.uint32(scale.bits - 1)) & 1 if scale.signed else np.zeros_like(code)
    meta = code & 1 if scale.metabit else np.zeros_like(code)
    mag_code = (code >> np.uint32(int(scale.metabit))) & np.uint32((1 << _magnitude_bits(scale)) - 1)
    if scale.float_spec is None:
        mag = mag_code.view(np.float32)
        return (mag, sign, meta) if np.isfinite(mag).all() else None
    values = _magnitude_encoding(scale).decode(mag_code)
    return None if values is None else (values.astype(np.float32), sign, meta)


# --- pack --------------------------------------------------------------------------------------

def lut_levels(c: Candidate) -> int:
    """Entries per LUT image: the largest grid's level count (what Candidate.bits counts)."""
    return max(a.n_values for a in c.atoms)


def _lut_entries(c: Candidate, k: int, grid: np.ndarray) -> tuple[np.ndarray, int | None]:
    """LUT image of a table-decoded grid, padded with the last entry, and its exponent field:
    under lut=FMT the FMT codes of the placed levels (docs/packed-format.md §3.2) and e + 127;
    without, the effective float32 levels and None."""
    if c.lut_format is None:
        entries = grid.astype(np.float32).view(np.uint32)
        exponent = None
    else:
        try:
            values, e = encode_grid(c.lut_format, grid, c.grid_factor(k))
        except ValueError as err:
            raise ValueError(f"grid {k}: {err}; quant and packing disagree") from None
        entries = _atom_encoding(c.lut_format).encode(values)
        exponent = e + EXPONENT_BIAS
        if not 0 <= exponent <= 255:
            raise PackError(f"candidate {c.name}: grid {k} needs LUT exponent {e}, outside a UE8M0 byte")
    return np.concatenate([entries, np.repeat(entries[-1:], lut_levels(c) - entries.size)]), exponent


def _sparse_index_bits(c: Candidate, numel: int) -> int:
    """Index field width of a sparse record: the entry bits Candidate.bits counts, minus BF16."""
    entry_bits = c.bits(numel, 1).sparse_bits_per_entry
    width = math.ceil(entry_bits) - BF16_BITS
    if width < 1:
        raise PackError(f"candidate {c.name}: {entry_bits:g} bits per sparse entry leave no index bits; "
                        f"use more than {BF16_BITS}, e.g. opq(0.95) or res(0.5%) (32 bits)")
    return width


def _sparse_records(index: np.ndarray, value: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Delta records: each index field d < 2**width - 1 advances the position by d + 1 and holds
    a value; the escape d = 2**width - 1 advances by 2**width - 1 and holds none (value 0)."""
    escape = (1 << width) - 1
    gaps = np.diff(index, prepend=-1) - 1  # elements skipped before each entry
    escapes = gaps // escape
    at = np.cumsum(escapes + 1) - 1  # record of each entry, after its escapes
    fields = np.full(int(at[-1]) + 1 if at.size else 0, escape, np.uint32)
    fields[at] = gaps % escape
    bf16 = np.zeros(fields.size, np.uint16)
    bits = value.astype(np.float32).view(np.uint32)
    if (bits & 0xFFFF).any():
        raise ValueError("a sparse value is not BF16-exact")
    bf16[at] = bits >> 16
    return fields, bf16


def pack(q: QuantizedTensor, tensor: str = "tensor") -> Packed:
    """Pack one quantized tensor into its streams (docs/packed-format.md §3)."""
    c = q.candidate
    rows, cols = q.shape
    block = cols // q.scales.shape[1]
    width = max(a.code_bits for a in c.atoms)
    streams: dict[str, np.ndarray] = {}
    bits: dict[str, int] = {}

    def put(name: str, values: np.ndarray, field_bits: int) -> None:
        streams[name] = pack_bits(values, field_bits)
        bits[name] = int(np.size(values)) * field_bits

    # Codes: FLOAT/INT grids store the atom's bit pattern, table-decoded grids the LUT index.
    code_of = np.zeros((len(c.atoms), max(g.size for g in q.grids)), _uint(width))  # no wider than stored
    for k, (atom, grid) in enumerate(zip(c.atoms, q.grids)):
        if atom.kind in _LOOKUP_ATOMS:
            code_of[k, :grid.size] = np.arange(grid.size)
            entries, exponent = _lut_entries(c, k, grid)
            put(f"lut.{k}", entries, c.lut_width_bits)
            if exponent is not None:
                put(f"lut_exp.{k}", np.array([exponent]), LUT_EXPONENT_BITS)
        else:
            if not np.array_equal(fixed_grid(c, k), grid):
                raise ValueError(f"grid {k} of {c.name} is not fp32({atom.name} x f_{k})")
            code_of[k, :grid.size] = atom.codes
    per_element = np.repeat(q.grid_index, block, axis=1) if c.dual else 0
    put("codes", code_of[per_element, q.codes], width)

    negative = np.signbit(q.scales)  # signbit: a -0.0 scale keeps its sign bit
    if not c.signed and negative.any():
        raise ValueError("a negative block scale without signed absmax")
    sign_plane = c.signed and not c.scale.signed  # the sign does not fit in the scale container
    if c.block_size is None:
        if not (q.scales == q.scales[0, 0]).all():
            raise ValueError("an @layer tensor must have one scale")
        code = _encode_scales(c.scale, q.scales[:1, 0], negative[:1, 0] if c.scale.signed else None, None)
        # An unsigned container's sign bit goes right above it (docs §3.4).
        above = negative[:1, 0].astype(np.uint32) << np.uint32(c.scale.bits) if sign_plane else 0
        put("tensor", code | above, c.scale.bits + int(sign_plane))
    else:
        sel = q.grid_index.astype(np.uint32)
        in_scale = c.selection in (Selection.SIGN, Selection.META)  # the lowest selection bit
        sign = sel & 1 if c.selection is Selection.SIGN else negative
        put("scales", _encode_scales(c.scale, q.scales, sign if c.scale.signed else None,
                                     sel & 1 if c.selection is Selection.META else None), c.scale.bits)
        if sign_plane:
            put("sign", negative, 1)
        if c.stored_selection_bits:
            put("select", sel >> int(in_scale), c.stored_selection_bits)
        if c.tensor_scale is TensorScale.FP32:
            put("tensor", np.array([q.tensor_factor], np.float32).view(np.uint32), 32)
        elif c.tensor_scale is TensorScale.POT:
            mantissa, exp = math.frexp(q.tensor_factor)
            if mantissa != 0.5 or not 1 <= exp - 1 + POT_BIAS <= 254:
                raise ValueError(f"tensor factor {q.tensor_factor} is not a storable power of two")
            put("tensor", np.array([exp - 1 + POT_BIAS]), 8)

    if c.outliers is not None or c.residual is not None:
        index_bits = _sparse_index_bits(c, rows * cols)
        fields, values = _sparse_records(q.sparse_index, q.sparse_value, index_bits)
        put("sparse.index", fields, index_bits)
        put("sparse.value", values, BF16_BITS)

    metadata = {
        "format": f"{FORMAT}/{FORMAT_VERSION}",
        "tensor": tensor,
        "candidate": c.name,
        "rows": str(rows),
        "cols": str(cols),
        "block": str(block),
        "code_bits": str(width),
        "grid_sizes": ",".join(str(g.size) for g in q.grids),
        "grid_factors": ",".join(float(c.grid_factor(k)).hex() for k in range(len(c.atoms))),
        "sparse_entries": str(q.sparse_index.size),
        "stream_bits": json.dumps(bits, sort_keys=True),
    }
    return Packed(streams, metadata)


# --- unpack ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Reader:
    """Reads the streams of one packed tensor; every failure names the file and tensor."""

    packed: Packed
    where: str
    stream_bits: dict[str, int]

    def fail(self, problem: str) -> PackError:
        tensor = self.packed.metadata.get("tensor", "?")
        return PackError(f"{self.where}: tensor {tensor!r}: {problem}; re-run dse quantize")

    def meta_int(self, key: str) -> int:
        try:
            return int(self.packed.metadata[key])
        except (KeyError, ValueError):
            raise self.fail(f"metadata {key!r} is missing or not an integer") from None

    def read(self, name: str, width: int, count: int) -> np.ndarray:
        """``count`` fields of ``width`` bits from stream ``name``."""
        stream = self.packed.streams.get(name)
        if stream is None:
            raise self.fail(f"stream {name!r} is missing")
        values = unpack_bits(stream, width, count)
        if values is None or self.stream_bits[name] != count * width:
            raise self.fail(f"stream {name!r} has {stream.size} bytes, expected {(count * width + 7) // 8} "
                            "with zero padding (truncated or corrupt)")
        return values


def _open(packed: Packed, where: str) -> tuple[_Reader, Candidate]:
    """Check the metadata that everything else relies on."""
    try:
        stream_bits = packed.stream_bits
    except (KeyError, ValueError, TypeError, AttributeError):
        stream_bits = {}
    r = _Reader(packed, where, stream_bits)
    meta = packed.metadata
    if meta.get("format") != f"{FORMAT}/{FORMAT_VERSION}":
        raise r.fail(f"format {meta.get('format')!r} is not {FORMAT}/{FORMAT_VERSION}")
    if stream_bits.keys() != packed.streams.keys():
        raise r.fail(f"streams {sorted(packed.streams)} differ from the metadata's {sorted(stream_bits)}")
    try:
        return r, parse_candidate(meta.get("candidate", ""))
    except DseError as err:
        raise r.fail(f"bad candidate ({err})") from None


def _read_grids(r: _Reader, c: Candidate) -> tuple[list[np.ndarray], np.ndarray]:
    """Each grid's effective float32 values, and (grids, 2**code_bits) grid index of each code (-1: none)."""
    try:
        sizes = [int(s) for s in r.packed.metadata["grid_sizes"].split(",")]
    except (KeyError, ValueError):
        raise r.fail("metadata 'grid_sizes' is missing or malformed") from None
    if len(sizes) != len(c.atoms):
        raise r.fail(f"{len(sizes)} grid sizes for {len(c.atoms)} grids")
    grids = []
    index_of = np.full((len(c.atoms), 1 << max(a.code_bits for a in c.atoms)), -1, np.int64)
    for k, (atom, size) in enumerate(zip(c.atoms, sizes)):
        if atom.kind in _LOOKUP_ATOMS:
            entries = r.read(f"lut.{k}", c.lut_width_bits, lut_levels(c))
            if not 1 <= size <= entries.size or (entries[size:] != entries[size - 1]).any():
                raise r.fail(f"LUT image {k} does not hold {size} levels padded with the last")
            if c.lut_format is None:
                grid = entries[:size].astype(np.uint32).view(np.float32)
            else:
                values = _atom_encoding(c.lut_format).decode(entries[:size])
                if values is None:
                    raise r.fail(f"LUT image {k} holds a code that is not a {c.lut_format.name} value")
                e = int(r.read(f"lut_exp.{k}", LUT_EXPONENT_BITS, 1)[0]) - EXPONENT_BIAS
                grid = (decoded_levels(values, e) * c.grid_factor(k)).astype(np.float32)
            if not (np.isfinite(grid).all() and (np.diff(grid) > 0).all()):
                raise r.fail(f"LUT image {k} is not strictly increasing and finite")
            index_of[k, :size] = np.arange(size)
        else:
            grid = fixed_grid(c, k)
            if size != grid.size:
                raise r.fail(f"grid {k} ({atom.name}) has {grid.size} values, metadata says {size}")
            index_of[k] = _atom_encoding(atom).index_of  # the grids of a pair share one code width
        grids.append(grid)
    return grids, index_of


def _read_scales(r: _Reader, c: Candidate, rows: int, n_blocks: int) -> tuple[np.ndarray, np.ndarray, float]:
    """(signed block scales, selected grid per block, tensor factor)."""
    sign_plane = c.signed and not c.scale.signed
    if c.block_size is None:
        code = r.read("tensor", c.scale.bits + int(sign_plane), 1).astype(np.uint32)
        decoded = _decode_scales(c.scale, code & np.uint32((1 << c.scale.bits) - 1))
        if decoded is None:
            raise r.fail("the @layer scale code is not a finite scale value")
        mag, sign, _ = decoded
        if sign_plane:
            sign = code >> np.uint32(c.scale.bits)
        scale = np.where(sign.astype(bool), -mag, mag)[0]
        return np.full((rows, 1), scale, np.float32), np.zeros((rows, 1), np.uint8), 1.0
    decoded = _decode_scales(c.scale, r.read("scales", c.scale.bits, rows * n_blocks))
    if decoded is None:
        raise r.fail("a block-scale code is not a finite scale value")
    mag, sign, metabit = decoded
    grid = np.zeros(rows * n_blocks, np.uint32)
    if c.selection is Selection.SIGN:
        grid, sign = sign, np.zeros_like(sign)
    elif c.selection is Selection.META:
        grid = metabit
    if c.stored_selection_bits:
        in_scale = int(c.selection in (Selection.SIGN, Selection.META))
        grid = grid | (r.read("select", c.stored_selection_bits, rows * n_blocks).astype(np.uint32) << in_scale)
        if (grid >= len(c.atoms)).any():
            raise r.fail(f"a block selects grid {int(grid.max())} of {len(c.atoms)}")
    if sign_plane:
        sign = r.read("sign", 1, rows * n_blocks)
    scales = np.where(sign.astype(bool), -mag, mag).astype(np.float32).reshape(rows, n_blocks)
    factor = 1.0
    if c.tensor_scale is TensorScale.FP32:
        factor = float(r.read("tensor", 32, 1).astype(np.uint32).view(np.float32)[0])
        if not (math.isfinite(factor) and factor > 0):
            raise r.fail(f"tensor factor {factor} is not a positive finite number")
    elif c.tensor_scale is TensorScale.POT:
        factor = math.ldexp(1.0, int(r.read("tensor", 8, 1)[0]) - POT_BIAS)
    return scales, grid.astype(np.uint8).reshape(rows, n_blocks), factor


def _read_sparse(r: _Reader, c: Candidate, numel: int) -> tuple[np.ndarray, np.ndarray]:
    """(flat positions int64, float32 values) of the sparse entries."""
    if c.outliers is None and c.residual is None:
        return np.zeros(0, np.int64), np.zeros(0, np.float32)
    index_bits = _sparse_index_bits(c, numel)
    records = r.packed.streams.get("sparse.value", np.zeros(0, np.uint8)).size // 2
    values = r.read("sparse.value", BF16_BITS, records)
    fields = r.read("sparse.index", index_bits, records).astype(np.int64)
    escape = (1 << index_bits) - 1
    position = np.cumsum(np.where(fields == escape, escape, fields + 1)) - 1
    entry = fields != escape
    index = position[entry]
    if (index.size and index[-1] >= numel) or values[~entry].any():
        raise r.fail("sparse records point past the tensor or escapes carry values")
    if index.size != r.meta_int("sparse_entries"):
        raise r.fail(f"{index.size} sparse entries, metadata says {r.packed.metadata['sparse_entries']}")
    return index, (values[entry].astype(np.uint32) << 16).view(np.float32)


def unpack(packed: Packed, where: str = "<memory>") -> QuantizedTensor:
    """Rebuild the QuantizedTensor bit for bit; PackError (naming ``where`` and the tensor) on
    any stream that is missing, truncated, padded with garbage or holds an invalid code."""
    r, c = _open(packed, where)
    rows, cols = r.meta_int("rows"), r.meta_int("cols")
    block = c.block_size or cols
    if rows < 1 or cols < 1 or cols % block:
        raise r.fail(f"shape {rows}x{cols} does not fit block {block}")
    grids, index_of = _read_grids(r, c)
    scales, grid_index, tensor_factor = _read_scales(r, c, rows, cols // block)
    stored = r.read("codes", max(a.code_bits for a in c.atoms), rows * cols).reshape(rows, cols)
    per_element = np.repeat(grid_index, block, axis=1) if c.dual else 0
    codes = index_of[per_element, stored]
    if (codes < 0).any():
        row, col = np.argwhere(codes < 0)[0]
        raise r.fail(f"code {int(stored[row, col])} at ({row}, {col}) is not a value of its grid")
    sparse_index, sparse_value = _read_sparse(r, c, rows * cols)
    return QuantizedTensor(
        candidate=c, shape=(rows, cols), grids=tuple(grids), codes=codes.astype(code_dtype(tuple(grids))),
        grid_index=grid_index, scales=scales, tensor_factor=tensor_factor,
        sparse_index=sparse_index, sparse_value=sparse_value,
    )


# --- files -------------------------------------------------------------------------------------

def file_hash(data: bytes) -> str:
    """BLAKE2b-128 of a file's bytes, as ``b2sum -l 128`` prints it."""
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def encode_file(packed: Packed) -> bytes:
    """The safetensors bytes of one packed tensor (docs/packed-format.md §3).

    Written here rather than by safetensors' own writer, which orders the metadata at random:
    sorted keys and streams in name order make a rerun write identical bytes.
    """
    names = sorted(packed.streams)
    header: dict[str, object] = {"__metadata__": dict(sorted(packed.metadata.items()))}
    offset = 0
    for name in names:
        size = packed.streams[name].size
        header[name] = {"dtype": "U8", "shape": [size], "data_offsets": [offset, offset + size]}
        offset += size
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # the safetensors convention: data starts 8-byte aligned
    return struct.pack("<Q", len(text)) + text + b"".join(packed.streams[n].tobytes() for n in names)


def decode_file(data: bytes, where: str, tensor: str = "?") -> Packed:
    """Parse safetensors bytes into a Packed; PackError naming ``where`` and ``tensor`` if unreadable."""
    from safetensors import SafetensorError
    from safetensors.numpy import load

    try:
        streams = load(data)
    except (SafetensorError, ValueError) as err:
        raise PackError(f"{where}: tensor {tensor!r}: not a readable safetensors file ({err}); "
                        "re-run dse quantize") from None
    (size,) = struct.unpack_from("<Q", data)  # load() has checked the header: it is valid JSON
    meta = json.loads(data[8:8 + size]).get("__metadata__")
    if not isinstance(meta, dict) or any(s.dtype != np.uint8 or s.ndim != 1 for s in streams.values()):
        raise PackError(f"{where}: tensor {tensor!r}: no sop-dse metadata or non-byte streams; "
                        "not a dse quantize file")
    return Packed(streams, meta)
