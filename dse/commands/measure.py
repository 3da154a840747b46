"""``dse measure``: reconstruction error of candidates on every tensor of a weight source."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)

from dse import render
from dse.commands.args import add_scheduler_argument, positive_int, seed
from dse.executor import open_executor
from dse.measurement import TOTAL, Measurement, activation_source, measure_source
from dse.render import console, fmt_sci, placeholder_lines, print_json
from dse.sweep import block_sweep, plot_sweep
from models.sampling import auto_fraction
from models.source import WeightSource
from models.sources import open_source
from quant import parse_candidate
from quant.errors import DseError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("measure", help="measure the reconstruction error of candidates on real or synthetic weights")
    p.add_argument("candidates", nargs="+", metavar="CANDIDATE", help="e.g. E2M3sUE4M4 E4M3sUE8M0@layer")
    p.add_argument("--weights", required=True, metavar="SOURCE",
                   help="minilm | smollm2 | whisper-base | FILE.safetensors | FILE.gguf | DIR | "
                        "MODEL:synthetic[:KIND] (see `dse models`) | synthetic:KIND")
    p.add_argument("--shape", default="4096x4096", help="synthetic matrix shape ROWSxCOLS (default 4096x4096)")
    p.add_argument("--seed", type=seed, default=0, help="synthetic seed (default 0)")
    p.add_argument("--threads", type=positive_int, default=None, help="threads per tensor (default: all cores; results do not depend on it)")
    p.add_argument("--sample", default="auto", metavar="auto|off|FRACTION",
                   help="estimate errors from a seeded sample of row groups with 95%% CIs; auto (default) "
                        "samples only sources above 2^30 weights")
    p.add_argument("--act", default=None, metavar="STATS",
                   help="activation statistics: minilm, an imatrix .gguf/.dat, a .safetensors/.npz of vectors")
    p.add_argument("--act-power", type=int, choices=(1, 2), default=2,
                   help="h = c**POWER for channel norm c (default 2: the diagonal of X^T X)")
    p.add_argument("--totals-only", action="store_true", help="show only the total row of each candidate")
    p.add_argument("--blocks", default=None, metavar="B1,B2,...",
                   help="block-size sweep: each candidate at each block size beside its first grid alone "
                        "(error and gain per block size; exact, no sampling)")
    p.add_argument("--plot", default=None, metavar="FILE.png", help="with --blocks: draw gain and error vs block size")
    p.add_argument("--json", action="store_true", help="print JSON records instead of a table")
    add_scheduler_argument(p)
    p.set_defaults(handler=run)


def _parse_shape(text: str) -> tuple[int, int]:
    parts = text.lower().split("x")
    if len(parts) != 2 or not all(p.isascii() and p.isdigit() and 0 < int(p) < 1 << 31 for p in parts):
        raise DseError(f"--shape {text[:40]!r}: expected ROWSxCOLS, positive integers below 2**31, e.g. 4096x4096")
    return int(parts[0]), int(parts[1])


def sample_fraction(option: str, total_elements: int) -> float | None:
    """The sample fraction for ``--sample OPTION`` (None: measure exactly).

    Args:
        option: ``auto`` (models.sampling.auto_fraction), ``off`` or a fraction in (0, 1].
        total_elements: weights in the whole source.
    """
    if option == "off":
        return None
    if option == "auto":
        return auto_fraction(total_elements)
    try:
        fraction = float(option)
    except ValueError:
        fraction = math.nan
    if not 0.0 < fraction <= 1.0:
        raise DseError(f"--sample {option!r}: expected auto, off or a fraction in (0, 1], e.g. 0.01")
    return fraction


def run(args: argparse.Namespace) -> int:
    candidates = [parse_candidate(name) for name in args.candidates]
    blocks = _parse_blocks(args.blocks) if args.blocks is not None else None
    if args.plot is not None and blocks is None:
        raise DseError("--plot draws a block-size sweep; add --blocks, e.g. --blocks 8,16,32,64,128,256")
    if blocks is not None and args.sample not in ("auto", "off"):
        raise DseError("--blocks measures every tensor exactly; drop --sample")
    if blocks is not None and args.scheduler is not None:
        raise DseError("--blocks runs in this process; drop --scheduler")
    source = open_source(args.weights, shape=_parse_shape(args.shape), seed=args.seed)
    infos = source.infos()
    if not infos:
        raise DseError(f"weights {args.weights!r}: no 2-D float tensors found")
    if blocks is not None:
        return _run_sweep(args, candidates, blocks, source)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console(), transient=True, disable=args.json) as progress:
        task = progress.add_task("measuring", total=len(infos))
        fraction = sample_fraction(args.sample, sum(info.numel for info in infos))
        act = None if args.act is None else activation_source(args.act, args.act_power)
        if args.scheduler is None:
            rows = measure_source(source, candidates, threads=args.threads, on_tensor=lambda info: progress.advance(task),
                                  sample_fraction=fraction, act=act)
        else:
            with open_executor(args.scheduler) as executor:
                progress.update(task, description=f"measuring ({executor.label})")
                rows = measure_source(source, candidates, on_tensor=lambda info: progress.advance(task),
                                      sample_fraction=fraction, act=act, executor=executor, spec=args.weights,
                                      open_args=(_parse_shape(args.shape), args.seed))
    if args.json:
        print_json([m.record() for m in rows])
    else:
        label = source.label if fraction is None else f"{source.label}, sampled {fraction:.3g} of row groups"
        _print_table(rows, label, args.totals_only)
    return 0


def _parse_blocks(text: str) -> list[int]:
    parts = [p.strip() for p in text.split(",")]
    if not parts or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise DseError(f"--blocks {text!r}: expected positive integers separated by commas, e.g. 8,16,32,64")
    return sorted(set(int(p) for p in parts))


def _run_sweep(args: argparse.Namespace, candidates: list, blocks: list[int], source: WeightSource) -> int:
    infos = source.infos()
    if not any(info.shape[1] % b == 0 for info in infos for b in blocks):
        raise DseError(f"--blocks {args.blocks}: no block divides any tensor's row length; use divisors of "
                       f"{sorted({info.shape[1] for info in infos})[:4]}")
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console(), transient=True, disable=args.json) as progress:
        task = progress.add_task("sweeping block sizes", total=len(infos))
        points = block_sweep(source, candidates, blocks, threads=args.threads,
                             on_tensor=lambda info: progress.advance(task), act=None if args.act is None else activation_source(args.act, args.act_power))
    if args.plot is not None:
        plot_sweep(points, Path(args.plot), f"Block-size sweep on {source.label}")
    if args.json:
        print_json([p.record() for p in points])
        return 0
    out = console()
    for family in dict.fromkeys(p.family for p in points):
        mine = [p for p in points if p.family == family]
        table = render.table(f"{family} vs {mine[0].single.split('@')[0]} by block size, on {source.label}", [
            "block", "candidate", "bpw [bit]", "rel. MSE", "single grid", "single bpw [bit]", "rel. MSE (single)",
            "gain [%]", "weights [%]"], left=0)
        for p in mine:
            table.add_row(str(p.block), p.candidate, f"{p.bpw:.4f}", fmt_sci(p.rel_mse), p.single,
                          f"{p.single_bpw:.4f}", fmt_sci(p.single_rel_mse), f"{100 * p.gain:.1f}",
                          f"{100 * p.coverage:.1f}")
        out.print(table)
    if any(p.coverage < 1.0 for p in points):
        out.print("weights [%]: share of the source's weights in tensors whose row length the block divides "
                  "(the others are skipped at that block size)")
    for line in placeholder_lines(candidates):
        out.print(line)
    if args.plot is not None:
        out.print(f"plot: {args.plot}")
    return 0


def _print_table(rows: list[Measurement], label: str, totals_only: bool) -> None:
    weighted = any(m.stats.weighted for m in rows)  # a tensor without statistics shows '-'
    table = render.table(f"Reconstruction error on {label}", [
        "candidate", "tensor", "elements", "bpw [bit]", "rel. MSE", "SQNR [dB]", "1-cos [ppm]",
        "2nd grid [%]", "stored aside"] + (["rel. MSE 95% CI"] if rows and rows[0].sample else [])
        + (["1-ACos [ppm]"] if weighted else []), left=2)
    shown = [m for m in rows if m.tensor == TOTAL] if totals_only else rows
    ordered = sorted(shown, key=lambda m: (m.tensor == TOTAL, m.tensor if m.tensor != TOTAL else "", rows.index(m)))
    for m in ordered:
        s = m.stats
        tensor = "TOTAL" if m.tensor == TOTAL else m.tensor + (" (pre-quantized)" if m.prequantized else "")
        dual = f"{100 * s.second_grid_fraction:.1f}" if parse_candidate(m.candidate).dual else "-"
        table.add_row(m.candidate, tensor, f"{m.numel:,}", f"{m.bpw:.4f}", fmt_sci(s.rel_mse),
                      f"{s.sqnr_db:.2f}", f"{s.cos_deficit_ppm:.1f}", dual, f"{s.sparse:,}",
                      *([" .. ".join(map(fmt_sci, m.sample.rel_mse_ci95))] if m.sample else []),
                      *([f"{s.acos_deficit_ppm:.1f}" if s.weighted else "-"] if weighted else []))
    out = console()
    out.print(table)
    for line in placeholder_lines(parse_candidate(name) for name in dict.fromkeys(m.candidate for m in rows)):
        out.print(line)
