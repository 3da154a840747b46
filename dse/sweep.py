"""Block-size sweep: how a grid set's gain over its first grid changes with the block size.

Grid Games (arXiv 2605.12327, abstract) says choosing among grids per block pays off for small
blocks and vanishes for very large ones. ``block_sweep`` measures each candidate family (a
candidate with its block size replaced) and its single-grid baseline (the same candidate with
only its first grid) at every block size, over the tensors whose rows the block divides.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from dse.atomic import write_atomic
from dse.measurement import selected
from dse.render import pyplot
from models.source import TensorInfo, WeightSource
from quant import Candidate, ErrorStats, measure, parse_candidate
from quant.candidate import resolve_atom
from quant.errors import CandidateError

_BLOCK_TABLE = re.compile(r"(BOF4S?)-(\d+)")  # tables fitted for one block size (BOF4, BOF4-S)


@dataclass(frozen=True)
class SweepPoint:
    """One family at one block size, summed over the tensors the block divides."""

    family: str
    """The candidate as given (its own block size ignored)."""
    block: int
    candidate: str
    """The family at this block size."""
    single: str
    """The same candidate with its first grid only: the baseline of the gain."""
    numel: int
    """Weights measured (tensors whose row length the block divides)."""
    coverage: float
    """numel / all weights of the source."""
    bpw: float
    single_bpw: float
    rel_mse: float
    single_rel_mse: float

    @property
    def gain(self) -> float:
        """Relative error reduction over the single grid: 1 - rel_mse / single_rel_mse."""
        return 1.0 - self.rel_mse / self.single_rel_mse if self.single_rel_mse > 0 else 0.0

    def record(self) -> dict[str, object]:
        return {"family": self.family, "block": self.block, "candidate": self.candidate, "single": self.single,
                "numel": self.numel, "coverage": self.coverage, "bpw": self.bpw, "single_bpw": self.single_bpw,
                "rel_mse": self.rel_mse, "single_rel_mse": self.single_rel_mse, "gain": self.gain}


def with_block(c: Candidate, block: int) -> Candidate:
    """``c`` at another block size; a block-matched table (BOF4S-16 at block 16) follows the block.

    Raises CandidateError when the result is not a valid candidate (e.g. an OPQ threshold a
    smaller block cannot reach).
    """
    if c.block_size is None:
        raise CandidateError(f"candidate {c.name}: an @layer candidate has no block size to sweep")
    atoms = []
    for a in c.atoms:
        match = _BLOCK_TABLE.fullmatch(a.name)
        atoms.append(resolve_atom(match[1], block) if match and int(match[2]) == c.block_size else a)
    return parse_candidate(replace(c, atoms=tuple(atoms), block_size=block).name)


def single_grid(c: Candidate) -> Candidate:
    """``c`` with its first grid only (the baseline a grid set is compared with)."""
    return parse_candidate(replace(c, atoms=c.atoms[:1], selection=None).name)


def block_sweep(
    source: WeightSource, candidates: Sequence[Candidate], blocks: Sequence[int], *,
    threads: int | None = None, on_tensor: Callable[[TensorInfo], None] | None = None,
    act: Callable[[TensorInfo], np.ndarray | None] | None = None, include: str | None = None,
) -> list[SweepPoint]:
    """Each family x block size, measured exactly (no sampling); tensors streamed one at a time.
    ``include``: a regex; only tensors whose name it matches (``re.search``) are measured.

    Raises CandidateError when a family is invalid at one of the blocks, and DseError (from the
    source) on unreadable weights.
    """
    plan = {(c.name, b): (with_block(c, b), single_grid(with_block(c, b))) for c in candidates for b in blocks}
    variants = {v.name: v for pair in plan.values() for v in pair}
    sums: dict[tuple[str, int], tuple[ErrorStats, float]] = {}
    total = 0
    numel: dict[int, int] = dict.fromkeys(blocks, 0)
    infos = selected(source.infos(), include)
    for info in infos:
        total += info.numel
        fitting = [b for b in blocks if info.shape[1] % b == 0]
        if fitting:
            w = source.load(info.name)
            h = act(info) if act is not None else None
            for b in fitting:
                numel[b] += info.numel
                for name in dict.fromkeys(v.name for (_, block), pair in plan.items() if block == b for v in pair):
                    c = variants[name]
                    stats = measure(w, c, act=h, name=info.name, threads=threads)
                    bits = c.bits(info.numel, stats.sparse).total_bits
                    prev = sums.get((name, b))
                    sums[(name, b)] = (stats, bits) if prev is None else (prev[0] + stats, prev[1] + bits)
        if on_tensor is not None:
            on_tensor(info)
    points = []
    for c in candidates:
        for b in blocks:
            cand, single = plan[(c.name, b)]
            if numel[b] == 0:
                continue
            (s, bits), (s1, bits1) = sums[(cand.name, b)], sums[(single.name, b)]
            points.append(SweepPoint(c.name, b, cand.name, single.name, numel[b], numel[b] / total,
                                     bits / numel[b], bits1 / numel[b], s.rel_mse, s1.rel_mse))
    return points


def plot_sweep(points: Sequence[SweepPoint], path: Path, title: str) -> Path:
    """Gain over the single grid [%] and relative MSE against block size, one line per family."""
    import io

    plt = pyplot()

    fig, (ax_gain, ax_err) = plt.subplots(1, 2, figsize=(11, 4.2))
    for family in dict.fromkeys(p.family for p in points):
        mine = [p for p in points if p.family == family]
        x = [p.block for p in mine]
        line, = ax_gain.plot(x, [100 * p.gain for p in mine], "o-", label=f"{family} vs {_grids(mine[0].single)}")
        ax_err.plot(x, [p.rel_mse for p in mine], "o-", color=line.get_color(), label=family)
        ax_err.plot(x, [p.single_rel_mse for p in mine], "x--", color=line.get_color(), alpha=0.6,
                    label=f"{_grids(mine[0].single)} (single grid)")
        partial = [p for p in mine if p.coverage < 1.0]  # hollow: only the tensors the block divides
        ax_gain.plot([p.block for p in partial], [100 * p.gain for p in partial], "o", mfc="white",
                     color=line.get_color(), label="part of the weights" if partial else None)
    for ax in (ax_gain, ax_err):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("block size [weights]")
        ax.grid(True, which="both", alpha=0.3)
    ax_gain.axhline(0.0, color="grey", lw=0.8)
    ax_gain.set_ylabel("gain over the single grid [%]")
    ax_err.set_yscale("log")
    ax_err.set_ylabel("relative MSE")
    ax_gain.legend(fontsize=7)
    ax_err.legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    buffer = io.BytesIO()
    # No timestamp in the PNG metadata: a rerun writes identical bytes.
    fig.savefig(buffer, format="png", dpi=120, metadata={"Software": None})
    plt.close(fig)
    write_atomic(path, buffer.getvalue())
    return path


def _grids(name: str) -> str:
    return parse_candidate(name).atom.name
