"""Measure candidates on every tensor of a weight source: the library side of ``dse measure``."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from models.sampling import SampledStats, sample_tensor
from models.sources import TensorInfo, WeightSource
from quant import Candidate, ErrorStats, measure

TOTAL = "*"
"""Tensor name of the element-weighted total row of a candidate."""


@dataclass(frozen=True)
class Measurement:
    """Error and exact size of one candidate on one tensor (or on all of them: tensor '*')."""

    candidate: str
    tensor: str
    numel: int
    total_bits: float
    stats: ErrorStats
    prequantized: bool = False
    sample: SampledStats | None = None
    """Replicate estimates when ``stats`` was estimated from a sample of rows (None: exact)."""

    @property
    def bpw(self) -> float:
        return self.total_bits / self.numel

    def record(self) -> dict[str, Any]:
        s = self.stats
        out: dict[str, Any] = {
            "candidate": self.candidate,
            "tensor": self.tensor,
            "numel": self.numel,
            "bpw": self.bpw,
            "mse": s.mse,
            "rel_mse": s.rel_mse,
            "sqnr_db": s.sqnr_db,
            "cosine": s.cosine,
            "cos_deficit_ppm": s.cos_deficit_ppm,
            "second_grid_fraction": s.second_grid_fraction,
            "sparse_entries": s.sparse,
            "prequantized": self.prequantized,
        }
        if s.weighted:
            out.update(act_mse=s.act_mse, act_rel_mse=s.act_rel_mse, acos_deficit_ppm=s.acos_deficit_ppm)
        if self.sample is not None:
            out.update(rel_mse_ci95=list(self.sample.rel_mse_ci95))
        return out


def measure_source(
    source: WeightSource,
    candidates: Sequence[Candidate],
    *,
    threads: int | None = None,
    on_tensor: Callable[[TensorInfo], None] | None = None,
    sample_fraction: float | None = None,
    act: Callable[[TensorInfo], np.ndarray | None] | None = None,
) -> list[Measurement]:
    """Every (tensor, candidate) measurement, tensors streamed one at a time, then a total per candidate.

    With ``sample_fraction`` the errors are estimated from a seeded sample of row groups, with
    95 % confidence intervals (models/sampling.py). ``act`` gives a tensor's per-input-channel
    activation weights (or None): weighted metrics are then reported, and ``:aw`` candidates use them.
    """
    rows: list[Measurement] = []
    for info in source.infos():
        h = act(info) if act is not None else None
        if sample_fraction is not None:
            estimates = sample_tensor(source, info, candidates, sample_fraction, threads=threads, act=h)
            for c, est in zip(candidates, estimates, strict=True):
                rows.append(Measurement(c.name, info.name, info.numel, c.bits(info.numel).total_bits,
                                        est.estimate, info.prequantized, est))
            if on_tensor is not None:
                on_tensor(info)
            continue
        w = source.load(info.name)
        for c in candidates:
            stats = measure(w, c, act=h, name=info.name, threads=threads)
            bits = c.bits(info.numel, stats.sparse)
            rows.append(Measurement(c.name, info.name, info.numel, bits.total_bits, stats, info.prequantized))
        if on_tensor is not None:
            on_tensor(info)
    return rows + totals(rows)


def totals(rows: Sequence[Measurement]) -> list[Measurement]:
    """One element-weighted total row per candidate (sums of errors and bits over tensors)."""
    merged: dict[str, Measurement] = {}
    for m in rows:
        if m.tensor == TOTAL:
            continue
        prev = merged.get(m.candidate)
        merged[m.candidate] = m if prev is None else Measurement(
            m.candidate, TOTAL, prev.numel + m.numel, prev.total_bits + m.total_bits,
            prev.stats + m.stats, prev.prequantized or m.prequantized,
            prev.sample + m.sample if prev.sample is not None and m.sample is not None else None,
        )
    return [Measurement(m.candidate, TOTAL, m.numel, m.total_bits, m.stats, m.prequantized, m.sample)
            for m in merged.values()]
