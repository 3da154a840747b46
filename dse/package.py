"""Quantization packages: pack the weights of an exported config, and decode and verify them.

Library API (``dse quantize`` / ``dse verify`` are thin layers over it)::

    from dse.package import quantize_package, verify_package
    manifest = quantize_package("out/edge/config-4.5000.yaml", None, Path("packed"))
    rows = verify_package(Path("packed"))

A package is a directory of one safetensors file per tensor (dse/packing.py,
docs/packed-format.md) and a ``manifest.json`` written last, so an interrupted run leaves no
manifest and cannot be mistaken for a complete package.
"""

from __future__ import annotations

import importlib.metadata
import json
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dse.cache import content_hash
from dse.atomic import replace_dir, staging_dir, write_atomic
from dse.files import read_document
from dse.packing import (
    FORMAT, FORMAT_VERSION, PackError, decode_file, encode_file, file_hash, pack, unpack,
)
from dse.executor import open_executor
from dse.measurement import activation_source, open_source_cached
from dse.report import CONFIG_VERSION
from dse.scenario import resolve_input
from models.source import TensorInfo, WeightSource
from models.sources import open_source
from quant import Candidate, ErrorStats, dequantize, parse_candidate, quantize, reconstruction_error
from quant.errors import DseError, brief

MANIFEST = "manifest.json"
_FILE = re.compile(r"\d{4}-.*\.safetensors")  # tensor files of a package: NNNN-<tensor>.safetensors


@dataclass(frozen=True)
class Config:
    """An exported config (dse/report.py config_document) with its paths resolved."""

    path: Path
    weights: tuple[tuple[str, str], ...]
    """(spec as the scenario names it, spec resolved against the scenario's folder)."""
    activations: str | None
    act_power: int
    bpw: float | None
    assignment: dict[str, Candidate]


def _resolve(scenario: Path | None, spec: str) -> str:
    """A source path, made absolute so the manifest works from any folder; looked up as the
    scenario looks it up (:func:`dse.scenario.resolve_input`); names (minilm...) stay as they are."""
    found = resolve_input(scenario.parent, spec) if scenario is not None else spec
    return str(Path(found).resolve()) if Path(found).exists() else spec


def load_config(path: str | Path) -> Config:
    """Read a ``config-*.yaml`` exported by ``dse explore``; one-line DseError on any problem."""
    path = Path(path)
    doc = read_document(path, "config file", "pass a config-*.yaml written by dse explore")
    if not isinstance(doc, dict) or doc.get("sop_dse_config") != CONFIG_VERSION:
        raise DseError(f"{path}: not a sop-dse config (expected 'sop_dse_config: {CONFIG_VERSION}'); "
                       "pass a config-*.yaml written by dse explore")
    assignment = doc.get("assignment")
    weights = doc.get("weights")
    if not isinstance(assignment, dict) or not assignment or not isinstance(weights, list) or not weights:
        raise DseError(f"{path}: 'assignment' (tensor -> candidate) and 'weights' (a list of sources) are required; "
                       "pass a config-*.yaml written by dse explore")
    candidates = {}
    for tensor, name in assignment.items():
        try:
            candidates[str(tensor)] = parse_candidate(str(name))
        except DseError as err:
            raise DseError(f"{path}: assignment of {tensor!r}: {err}") from None
    act_power = doc.get("act_power", 2)
    if act_power not in (1, 2):
        raise DseError(f"{path}: act_power must be 1 or 2 (got {act_power!r})")
    scenario = Path(doc["scenario"]) if doc.get("scenario") else None
    activations = doc.get("activations")
    return Config(path, tuple((str(w), _resolve(scenario, str(w))) for w in weights),
                  None if activations is None else _resolve(scenario, str(activations)),
                  act_power, doc.get("bpw"), candidates)


@dataclass(frozen=True)
class _Tensor:
    """Where one tensor of the assignment comes from."""

    source_spec: str
    source: WeightSource
    info: TensorInfo


def _index_sources(specs: list[tuple[str, str]]) -> dict[str, _Tensor]:
    """Tensors by assignment name: ``<spec>/<name>``, and plain ``<name>`` for a single source
    (dse.explore prefixes names when a scenario lists several sources)."""
    out: dict[str, _Tensor] = {}
    for label, spec in specs:
        source = open_source(spec)
        for info in source.infos():
            out[f"{label}/{info.name}"] = _Tensor(spec, source, info)
            if len(specs) == 1:
                out[info.name] = _Tensor(spec, source, info)
    return out


def tool_version() -> str:
    """The installed sop-dse version (``dse --version``, package manifests)."""
    try:
        return importlib.metadata.version("sop-dse")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _error_record(stats: ErrorStats) -> dict[str, Any]:
    out = {"sse": stats.sum_d2, "rel_mse": stats.rel_mse}
    if stats.weighted:
        out["act_sse"] = stats.hsum_d2
    return out


def quantize_package(config: str | Path, weights: str | None, out: Path, *,
                     jobs: int | None = 1, scheduler: str | None = None,
                     on_start: Callable[[int, int], None] | None = None,
                     on_tensor: Callable[[str, int], None] | None = None) -> dict[str, Any]:
    """Quantize and pack every tensor of a config into ``out``, one tensor in memory at a time.

    Args:
        config: a ``config-*.yaml`` written by ``dse explore``.
        weights: weight source overriding the config's (single-source configs only).
        out: package directory: created, or an old package there replaced whole once the new one is complete.
        jobs: local processes packing tensors (1: in this process; None: all cores).
        scheduler: a Dask scheduler address or 'local' to pack on a cluster; the files are
            written here, identical to a local run.
        on_start: called once with (tensors, weights) to be packed.
        on_tensor: called after each tensor with (name, its weights): progress and ETA by weights.
    Returns:
        The manifest, also written to ``out/manifest.json``.
    """
    cfg = load_config(config)
    if weights is not None and len(cfg.weights) > 1:
        raise DseError(f"{cfg.path}: the config lists {len(cfg.weights)} weight sources; omit --weights")
    # --weights keeps the config's source label: assignment names may carry it as a prefix.
    specs = list(cfg.weights) if weights is None else [(cfg.weights[0][0], weights)]
    tensors = _index_sources(specs)
    missing = [t for t in cfg.assignment if t not in tensors]
    if missing:
        raise DseError(f"{cfg.path}: tensor {missing[0]!r} is not in weights "
                       f"{', '.join(s for _, s in specs)} ({len(missing)} missing); pass the weights it was explored on")
    acts = None if cfg.activations is None else activation_source(cfg.activations, cfg.act_power)
    _check_replaceable(out)
    staging = staging_dir(out)
    try:
        manifest = _write_package(cfg, tensors, acts, staging, jobs, scheduler, on_start, on_tensor)
        replace_dir(staging, out)  # the old package stays whole until the new one is complete
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return manifest


def _check_replaceable(out: Path) -> None:
    """``out`` may be new, empty, or a package (which is replaced whole); nothing else is touched."""
    if out.exists() and not out.is_dir():
        raise DseError(f"{out}: is a file; --out names the package directory to create or replace")
    if out.is_dir():
        foreign = sorted(p.name for p in out.iterdir() if p.name != MANIFEST and not _FILE.fullmatch(p.name))
        if foreign:
            raise DseError(f"{out}: holds {brief(foreign[0])} ({len(foreign)} entries in all) that no dse package "
                           "holds; pass a new or empty directory, or a package to replace")


def _write_package(cfg: Config, tensors: dict[str, _Tensor], acts: Callable[[TensorInfo], np.ndarray | None] | None,
                   out: Path, jobs: int | None, scheduler: str | None, on_start: Callable[[int, int], None] | None,
                   on_tensor: Callable[[str, int], None] | None) -> dict[str, Any]:
    if on_start:
        on_start(len(cfg.assignment), sum(tensors[n].info.numel for n in cfg.assignment))
    work = sorted(cfg.assignment.items())
    args = [(tensors[name].source_spec, tensors[name].info.name, candidate.name,
             None if acts is None else acts(tensors[name].info), name, i) for i, (name, candidate) in enumerate(work)]
    found: dict[int, dict[str, Any]] = {}
    with open_executor(scheduler, jobs) as executor:
        for i, (data, record) in executor.map_unordered(pack_job, args):
            write_atomic(out / record["file"], data)
            found[i] = record
            if on_tensor:
                on_tensor(record["name"], record["numel"])
    records = [found[i] for i in range(len(work))]
    manifest = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "tool": "sop-dse", "tool_version": tool_version(),
        "config": str(cfg.path), "config_bpw": cfg.bpw, "weights": sorted({r["source"] for r in records}),
        "activations": cfg.activations, "act_power": cfg.act_power, "totals": _totals(records), "tensors": records,
    }
    manifest[MANIFEST_HASH] = manifest_hash(manifest)
    write_atomic(out / MANIFEST, (json.dumps(manifest, indent=1) + "\n").encode())
    return manifest


def pack_job(spec: str, source_name: str, candidate_name: str, act: np.ndarray | None, name: str,
             index: int) -> tuple[bytes, dict[str, Any]]:
    """Quantize and pack one tensor (runs in a worker: local or on a Dask cluster).

    Returns the tensor file's bytes and its manifest record; the caller writes the file.
    """
    source = open_source_cached(spec)
    candidate = parse_candidate(candidate_name)
    w = source.load(source_name)
    q = quantize(w, candidate, act=act, name=name)
    packed = pack(q, name)
    data = encode_file(packed)
    file = f"{index:04d}-{re.sub(r'[^A-Za-z0-9._-]+', '_', name)}.safetensors"
    stats = reconstruction_error(w, dequantize(q), q.shape[1] // q.scales.shape[1], act=act, name=name)
    bits = candidate.bits(w.size, q.sparse_index.size)
    return data, {
        "name": name, "file": file, "candidate": candidate.name, "shape": list(q.shape), "numel": w.size,
        "source": spec, "source_name": source_name, "source_blake2b": content_hash(w),
        "file_blake2b": file_hash(data), "file_bytes": len(data), "payload_bytes": packed.payload_bytes,
        "payload_bits": packed.payload_bits, "bits": bits.total_bits, "bpw": bits.bpw,
        "sparse_entries": int(q.sparse_index.size), **_error_record(stats),
    }


_RECORD_KEYS = ("name", "file", "candidate", "shape", "source", "source_name", "source_blake2b",
                "file_blake2b", "sse")

def _totals(records: list[dict[str, Any]]) -> dict[str, Any]:
    numel = sum(r["numel"] for r in records)
    return {"tensors": len(records), "numel": numel, "bpw": sum(r["bits"] for r in records) / numel,
            "payload_bytes": sum(r["payload_bytes"] for r in records),
            "file_bytes": sum(r["file_bytes"] for r in records)}


MANIFEST_HASH = "manifest_blake2b"
"""Manifest key holding the BLAKE2b of every other key: an edited or damaged manifest is detected."""


def manifest_hash(manifest: dict[str, Any]) -> str:
    """BLAKE2b-128 of the manifest without its own hash, as canonical JSON (sorted keys, no spaces)."""
    body = {k: v for k, v in manifest.items() if k != MANIFEST_HASH}
    return file_hash(json.dumps(body, sort_keys=True, separators=(",", ":")).encode())


_NUMBER = (int, float)
_TOP = {"format": str, "format_version": int, "tool": str, "tool_version": str, "config": str,
        "config_bpw": (*_NUMBER, type(None)), "weights": list, "activations": (str, type(None)), "act_power": int,
        "totals": dict, "tensors": list, MANIFEST_HASH: str}
_RECORD = {"name": str, "file": str, "candidate": str, "shape": list, "numel": int, "source": str,
           "source_name": str, "source_blake2b": str, "file_blake2b": str, "file_bytes": int,
           "payload_bytes": int, "payload_bits": int, "bits": _NUMBER, "bpw": _NUMBER, "sparse_entries": int,
           "sse": _NUMBER, "rel_mse": _NUMBER}
_OPTIONAL = {"act_sse": _NUMBER}


def _typed(where: str, doc: dict[str, Any], fields: dict[str, Any], optional: dict[str, Any]) -> None:
    """PackError unless ``doc`` has exactly these keys with these JSON types (bool is not a number)."""
    for key, kind in fields.items():
        if key not in doc:
            raise PackError(f"{where}: {key!r} missing; re-run dse quantize")
    for key, value in doc.items():
        kind = fields.get(key, optional.get(key))
        if kind is None:
            raise PackError(f"{where}: unknown field {brief(key)}; re-run dse quantize")
        if isinstance(value, bool) or not isinstance(value, kind):
            raise PackError(f"{where}: {key} is {brief(value)}, not of the type dse quantize writes; "
                            "re-run dse quantize")


def read_manifest(directory: Path) -> dict[str, Any]:
    """The manifest of a package, checked for structure, types, its own hash and internal
    consistency (totals, unique names and files); PackError when anything is off."""
    if directory.is_file():
        raise PackError(f"{directory}: a file; pass the package directory (the one holding {MANIFEST})")
    path = directory / MANIFEST
    if not path.exists():
        raise PackError(f"{path}: missing; {directory} is not a complete dse quantize package "
                        "(re-run dse quantize)")
    try:
        manifest = read_document(path, "manifest", "re-run dse quantize")
    except DseError as err:
        raise PackError(str(err)) from None
    if not isinstance(manifest, dict) or (manifest.get("format"), manifest.get("format_version")) != (
            FORMAT, FORMAT_VERSION):
        raise PackError(f"{path}: not a {FORMAT} v{FORMAT_VERSION} manifest; re-run dse quantize")
    _typed(str(path), manifest, _TOP, {})
    if manifest[MANIFEST_HASH] != manifest_hash(manifest):
        raise PackError(f"{path}: edited or damaged (its {MANIFEST_HASH} does not match its content); "
                        "re-run dse quantize")
    records = manifest["tensors"]
    if not records or not all(isinstance(r, dict) for r in records):
        raise PackError(f"{path}: 'tensors' must list one or more records; re-run dse quantize")
    for i, r in enumerate(records):
        _typed(f"{path}: tensors[{i}]", r, _RECORD, _OPTIONAL)
        if not _FILE.fullmatch(r["file"]) or "/" in r["file"] or "\\" in r["file"]:
            raise PackError(f"{path}: tensors[{i}].file {brief(r['file'])} is not a package file name")
    for key in ("name", "file"):
        seen = [r[key] for r in records]
        if len(set(seen)) != len(seen):
            raise PackError(f"{path}: two records with the same {key}; re-run dse quantize")
    if manifest["act_power"] not in (1, 2) or manifest["weights"] != sorted({r["source"] for r in records}):
        raise PackError(f"{path}: act_power or weights disagree with the records; re-run dse quantize")
    if manifest["totals"] != _totals(records):
        raise PackError(f"{path}: totals disagree with the records; re-run dse quantize")
    return manifest


@dataclass(frozen=True)
class Verified:
    """One tensor of a package, decoded and measured against its source weights."""

    name: str
    candidate: str
    numel: int
    bpw: float
    """Bits per weight as Candidate.bits accounts them (what dse explore optimized)."""
    payload_bits: int
    """Bits in the tensor's streams (unpadded)."""
    file_bytes: int
    stats: ErrorStats

    @property
    def stored_bpw(self) -> float:
        return self.payload_bits / self.numel

    def record(self) -> dict[str, Any]:
        s = self.stats
        out = {"tensor": self.name, "candidate": self.candidate, "numel": self.numel, "bpw": self.bpw,
               "stored_bpw": self.stored_bpw, "payload_bits": self.payload_bits, "file_bytes": self.file_bytes,
               "sse": s.sum_d2, "rel_mse": s.rel_mse, "sqnr_db": s.sqnr_db, "cos_deficit_ppm": s.cos_deficit_ppm}
        if s.weighted:
            out.update(act_sse=s.hsum_d2, act_rel_mse=s.act_rel_mse, acos_deficit_ppm=s.acos_deficit_ppm)
        return out


def verify_package(directory: Path, weights: str | None = None, *,
                   on_start: Callable[[int], None] | None = None,
                   on_tensor: Callable[[str], None] | None = None) -> list[Verified]:
    """Unpack, dequantize and measure every tensor of a package against its source weights.

    Checks the manifest itself (types, its own BLAKE2b, totals, unique records, no unlisted tensor
    file), then every field of every record against the file and the source weights: file hash and
    size, tensor and candidate, shape, numel, payload bytes and bits, bits and bpw, sparse entries,
    and the decoded SSE, relative MSE and activation-weighted SSE, all exactly.

    Raises PackError (one line naming the file and tensor) at the first difference.
    """
    manifest = read_manifest(directory)
    records = manifest["tensors"]
    listed = {r["file"] for r in records}
    stray = sorted(p.name for p in directory.iterdir() if _FILE.fullmatch(p.name) and p.name not in listed)
    if stray:
        raise PackError(f"{directory / stray[0]}: a tensor file {MANIFEST} does not list (a record dropped?); "
                        "re-run dse quantize")
    specs = sorted({r["source"] for r in records})
    if weights is not None and len(specs) > 1:
        raise DseError(f"{directory / MANIFEST}: the package comes from {len(specs)} weight sources; omit --weights")
    sources = {spec: open_source(weights or spec) for spec in specs}
    acts = (None if manifest.get("activations") is None
            else activation_source(manifest["activations"], int(manifest.get("act_power", 2))))
    if on_start:
        on_start(len(records))
    out = []
    for r in records:
        name, path = r["name"], directory / r["file"]
        try:
            data = path.read_bytes()
        except OSError:
            raise PackError(f"{path}: tensor {name!r}: file missing or unreadable; re-run dse quantize") from None
        if file_hash(data) != r["file_blake2b"]:
            raise PackError(f"{path}: tensor {name!r}: content differs from {MANIFEST} (corrupt or truncated); "
                            "re-run dse quantize")
        packed = decode_file(data, str(path), name)
        if (packed.metadata.get("tensor"), packed.metadata.get("candidate")) != (name, r["candidate"]):
            raise PackError(f"{path}: tensor {name!r}: file holds {packed.metadata.get('tensor')!r} as "
                            f"{packed.metadata.get('candidate')!r}, {MANIFEST} says {r['candidate']!r}")
        q = unpack(packed, str(path))
        source = sources[r["source"]]
        info = next((i for i in source.infos() if i.name == r["source_name"]), None)
        if info is None:
            raise PackError(f"{path}: tensor {name!r}: not in weights {weights or r['source']!r}; "
                            "pass the weights it was quantized from")
        w = source.load(info.name)
        if content_hash(w) != r["source_blake2b"]:
            raise PackError(f"{path}: tensor {name!r}: weights {weights or r['source']!r} differ from the ones "
                            "quantized (blake2b mismatch); pass the same --weights")
        h = None if acts is None else acts(info)
        stats = reconstruction_error(w, dequantize(q), q.shape[1] // q.scales.shape[1], act=h, name=name)
        if stats.sum_d2 != r["sse"]:
            raise PackError(f"{path}: tensor {name!r}: decoded error {stats.sum_d2!r} differs from the "
                            f"{r['sse']!r} recorded at quantization; re-run dse quantize")
        bits = q.candidate.bits(w.size, q.sparse_index.size)
        found = {"candidate": q.candidate.name, "shape": list(q.shape), "numel": w.size, "file_bytes": len(data),
                 "payload_bytes": packed.payload_bytes, "payload_bits": packed.payload_bits,
                 "bits": bits.total_bits, "bpw": bits.bpw, "sparse_entries": int(q.sparse_index.size),
                 **_error_record(stats)}
        for key, value in found.items():  # every recorded field, against the file and the weights
            if r.get(key) != value or ("act_sse" in r) != ("act_sse" in found):
                raise PackError(f"{path}: tensor {name!r}: {key} {brief(r.get(key))} in {MANIFEST}, "
                                f"{brief(value)} in the file and weights; re-run dse quantize")
        out.append(Verified(name, q.candidate.name, w.size, bits.bpw, packed.payload_bits, len(data), stats))
        if on_tensor:
            on_tensor(name)
    return out


def total(rows: list[Verified]) -> Verified:
    """Element-weighted total of a package: summed errors, bits and bytes."""
    stats = rows[0].stats
    for r in rows[1:]:
        stats = stats + r.stats
    numel = sum(r.numel for r in rows)
    return Verified("TOTAL", "", numel, sum(r.bpw * r.numel for r in rows) / numel,
                    sum(r.payload_bits for r in rows), sum(r.file_bytes for r in rows), stats)


# --- command line ------------------------------------------------------------------------------
