"""``dse measure``: reconstruction error of candidates on every tensor of a weight source."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)
from rich.text import Text

from dse.commands.args import add_scheduler_argument, positive_int, seed
from dse.executor import open_executor
from dse.measurement import TOTAL, Measurement, activation_source, measure_source, selected
from dse.render import Col, console, fit_table, fixed, placeholder_lines, print_json, short_tensor_names
from dse.sweep import block_sweep, plot_sweep
from models.sampling import auto_fraction
from models.source import WeightSource
from models.sources import open_source
from quant import Candidate, aliases, parse_candidate
from quant.errors import DseError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("measure", help="measure the reconstruction error of candidates on real or synthetic weights",
                       description="Measure the reconstruction error of candidate formats on every tensor of a "
                                   "weight source.", epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("candidates", nargs="+", metavar="CANDIDATE",
                   help="a candidate name (e.g. E2M3sUE4M4, E4M3sUE8M0@layer) or an industry name (NVFP4, MXFP4, "
                        "MXFP6_E2M3, MXFP8_E4M3, FP8, NF4, IF4, Q4_0, Q5_0, Q8_0); quote names with | ( or +")
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
    p.add_argument("--include", default=None, metavar="REGEX",
                   help="measure only tensors whose name matches REGEX (Python re.search), e.g. 'layer\\.0\\.'")
    p.add_argument("--totals-only", action="store_true", help="show (or print as JSON) only the total row of each candidate")
    p.add_argument("--blocks", default=None, metavar="B1,B2,...",
                   help="block-size sweep: each candidate at each block size beside its first grid alone "
                        "(error and gain per block size; exact, no sampling)")
    p.add_argument("--plot", default=None, metavar="FILE.png", help="with --blocks: draw gain and error vs block size")
    p.add_argument("--json", action="store_true", help="print JSON records instead of a table")
    add_scheduler_argument(p)
    p.set_defaults(handler=run)


EXAMPLES = """examples:
  dse measure E2M3sUE4M4 E4M3sUE8M0@layer --weights minilm --totals-only
  dse measure NVFP4 MXFP4 Q4_0 --weights minilm --totals-only
  dse measure 'NF4|DD4sUE4M4' --weights minilm --include 'layer\\.0\\.'
  dse measure E2M3sUE4M4 --weights synthetic:gaussian --shape 1024x1024 --json
"""


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
    infos = selected(source.infos(), args.include)
    if not infos:
        raise DseError(f"weights {args.weights!r}: no 2-D float tensors found"
                       + (f" matching --include {args.include!r}" if args.include else ""))
    if blocks is not None:
        return _run_sweep(args, candidates, blocks, source)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console(), transient=True, disable=args.json) as progress:
        task = progress.add_task("measuring", total=len(infos))
        fraction = sample_fraction(args.sample, sum(info.numel for info in infos))
        act = None if args.act is None else activation_source(args.act, args.act_power)
        if args.scheduler is None:
            rows = measure_source(source, candidates, threads=args.threads, on_tensor=lambda info: progress.advance(task),
                                  sample_fraction=fraction, act=act, include=args.include)
        else:
            with open_executor(args.scheduler) as executor:
                progress.update(task, description=f"measuring ({executor.label})")
                rows = measure_source(source, candidates, on_tensor=lambda info: progress.advance(task),
                                      sample_fraction=fraction, act=act, executor=executor, spec=args.weights,
                                      open_args=(_parse_shape(args.shape), args.seed), include=args.include)
    shown = [m for m in rows if m.tensor == TOTAL] if args.totals_only else rows
    if args.json:
        print_json([m.record() for m in shown])
        return 0
    label = source.label if fraction is None else f"{source.label}, sampled {fraction:.3g} of row groups"
    out = console()
    _print_table(out, rows, shown, label)
    _print_notes(out, args.candidates, candidates)
    if any(m.prequantized for m in shown):
        out.print("pre-quantized: the source stores these tensors quantized; errors are measured against "
                  "its dequantized values, not the original weights")
    if source.label.startswith("synthetic") or ":synthetic" in args.weights:
        out.print("synthetic weights: errors reflect the shapes and a calibrated distribution, not a trained model")
    return 0


def _print_notes(out: Console, names: list[str], candidates: list[Candidate]) -> None:
    """Under a table: the industry names given and what they stand for, then reconstructed grids."""
    for name in dict.fromkeys(names):
        alias = aliases.lookup(name)
        if alias is not None:
            out.print(Text(f"{name} = {alias.canonical}: {alias.source}"))
    for line in placeholder_lines(candidates):
        out.print(Text(line))


def _parse_blocks(text: str) -> list[int]:
    parts = [p.strip() for p in text.split(",")]
    if not parts or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise DseError(f"--blocks {text!r}: expected positive integers separated by commas, e.g. 8,16,32,64")
    return sorted(set(int(p) for p in parts))


def _run_sweep(args: argparse.Namespace, candidates: list[Candidate], blocks: list[int], source: WeightSource) -> int:
    infos = selected(source.infos(), args.include)
    if not any(info.shape[1] % b == 0 for info in infos for b in blocks):
        raise DseError(f"--blocks {args.blocks}: no block divides any tensor's row length; use divisors of "
                       f"{sorted({info.shape[1] for info in infos})[:4]}")
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console(), transient=True, disable=args.json) as progress:
        task = progress.add_task("sweeping block sizes", total=len(infos))
        points = block_sweep(source, candidates, blocks, threads=args.threads, include=args.include,
                             on_tensor=lambda info: progress.advance(task),
                             act=None if args.act is None else activation_source(args.act, args.act_power))
    if args.plot is not None:
        plot_sweep(points, Path(args.plot), f"Block-size sweep on {source.label}")
    if args.json:
        print_json([p.record() for p in points])
        return 0
    out = console()
    cols = [Col("block"), Col("candidate", "name"), Col("bpw [bit]"), Col("rel. MSE [%]"), Col("single grid", "name"),
            Col("single bpw [bit]", optional=True), Col("rel. MSE (single) [%]"), Col("gain [%]"),
            Col("weights [%]", optional=True)]
    for family in dict.fromkeys(p.family for p in points):
        mine = [p for p in points if p.family == family]
        cells = [[str(p.block), p.candidate, f"{p.bpw:.4f}", fixed(100 * p.rel_mse), p.single, f"{p.single_bpw:.4f}",
                  fixed(100 * p.single_rel_mse), f"{100 * p.gain:.1f}", f"{100 * p.coverage:.1f}"] for p in mine]
        out.print(fit_table(out, f"{family} vs {mine[0].single.split('@')[0]} by block size, on {source.label}",
                            cols, cells))
    if any(p.coverage < 1.0 for p in points):
        out.print("weights [%]: share of the source's weights in tensors whose row length the block divides "
                  "(the others are skipped at that block size)")
    _print_notes(out, args.candidates, candidates)
    if args.plot is not None:
        out.print(Text(f"plot: {args.plot}"))
    return 0


def _print_table(out: Console, rows: list[Measurement], shown: list[Measurement], label: str) -> None:
    weighted = any(m.stats.weighted for m in rows)  # a tensor without statistics shows '-'
    sampled = bool(rows) and rows[0].sample is not None
    dual = {m.candidate for m in rows if parse_candidate(m.candidate).dual}  # pairs and grid sets (SFP4)
    cols = [Col("candidate", "name"), Col("tensor", "name"), Col("elements", optional=True), Col("bpw [bit]"),
            Col("rel. MSE [%]"), Col("SQNR [dB]"), Col("1-cos [ppm]", optional=True)]
    cols += [Col("2nd grid [%]", optional=True)] if dual else []
    cols += [Col("stored aside", optional=True)]
    cols += [Col("rel. MSE 95% CI [%]", "name")] if sampled else []
    cols += [Col("1-ACos [ppm]")] if weighted else []
    ordered = sorted(shown, key=lambda m: (m.tensor == TOTAL, m.tensor if m.tensor != TOTAL else "", rows.index(m)))
    names = [m.tensor for m in ordered if m.tensor != TOTAL]
    short, rule = short_tensor_names(names)
    full = max(map(len, names), default=0) + max(len(m.candidate) for m in rows) + 70 <= out.width
    cells = []
    for m in ordered:
        s = m.stats
        tensor = "TOTAL" if m.tensor == TOTAL else (m.tensor if full else short[m.tensor]) + (
            " (pre-quantized)" if m.prequantized else "")
        cells.append([m.candidate, tensor, f"{m.numel:,}", f"{m.bpw:.4f}", fixed(100 * s.rel_mse), f"{s.sqnr_db:.2f}",
                      f"{s.cos_deficit_ppm:.1f}",
                      *([f"{100 * s.second_grid_fraction:.1f}" if m.candidate in dual else "-"] if dual else []),
                      f"{s.sparse:,}",
                      *([" .. ".join(fixed(100 * x) for x in m.sample.rel_mse_ci95)] if sampled and m.sample else []),
                      *([f"{s.acos_deficit_ppm:.1f}" if s.weighted else "-"] if weighted else [])])
    out.print(fit_table(out, f"Reconstruction error on {label}", cols, cells))
    if not full and names:
        out.print(rule)
