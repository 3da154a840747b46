"""``dse quantize``: pack the weights of an exported config; ``dse verify``: decode and measure a package."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from dse import render
from dse.commands.args import add_scheduler_argument, positive_int
from dse.package import quantize_package, total, verify_package
from dse.render import console, fixed, print_json


def register(sub: argparse._SubParsersAction) -> None:
    q = sub.add_parser("quantize", help="quantize and bit-pack the weights of a config written by dse explore",
                       epilog="example:\n  dse quantize out/edge/config-4.5000.yaml --out packed/edge-4.5",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    q.add_argument("config", help="a config-*.yaml written by dse explore")
    q.add_argument("--weights", default=None, metavar="SOURCE",
                   help="weight source (default: the config's weights; see `dse measure --help`)")
    q.add_argument("--out", required=True, metavar="DIR", help="package directory")
    q.add_argument("--json", action="store_true", help="print the manifest as JSON instead of a table")
    q.add_argument("--jobs", type=positive_int, default=1,
                   help="local processes packing tensors (default 1: one tensor at a time, least memory)")
    add_scheduler_argument(q)
    q.set_defaults(handler=run_quantize)
    v = sub.add_parser("verify", help="decode a package and report per-tensor error and stored bits",
                       epilog="example:\n  dse verify packed/edge-4.5", formatter_class=argparse.RawDescriptionHelpFormatter)
    v.add_argument("package", metavar="DIR", help="a directory written by dse quantize")
    v.add_argument("--weights", default=None, metavar="SOURCE",
                   help="source weights (default: the ones recorded in the manifest)")
    v.add_argument("--json", action="store_true", help="print JSON records instead of a table")
    v.set_defaults(handler=run_verify)


def _progress(description: str, quiet: bool) -> Progress:
    return Progress(TextColumn(description), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=console(), transient=True, disable=quiet)


def run_quantize(args: argparse.Namespace) -> int:
    # Progress and ETA by weights, not tensors: an 8B model's tensors differ 30x in size.
    progress = Progress(TextColumn("quantizing"), BarColumn(), TextColumn("{task.fields[done]}/{task.fields[n]} tensors"),
                        TextColumn("{task.percentage:>3.0f}% of weights"), TimeElapsedColumn(), TextColumn("ETA"),
                        TimeRemainingColumn(), console=console(), transient=True, disable=args.json)
    with progress:
        task = progress.add_task("", total=None, done=0, n="?")

        def start(tensors: int, weights: int) -> None:
            progress.update(task, total=weights, n=tensors)

        def tensor_done(_: str, weights: int) -> None:
            progress.update(task, advance=weights, done=progress.tasks[task].fields["done"] + 1)

        manifest = quantize_package(args.config, args.weights, Path(args.out), jobs=args.jobs, scheduler=args.scheduler,
                                    on_start=start, on_tensor=tensor_done)
    if args.json:
        print_json(manifest)
        return 0
    t = render.table(f"Packed {manifest['config']} into {args.out}",
                     ["tensor", "candidate", "elements", "bpw [bit]", "stored bpw [bit]", "file [B]",
                      "rel. MSE [%]"], left=2)
    for r in manifest["tensors"]:
        t.add_row(r["name"], r["candidate"], f"{r['numel']:,}", f"{r['bpw']:.4f}",
                  f"{r['payload_bits'] / r['numel']:.4f}", f"{r['file_bytes']:,}", fixed(100 * r["rel_mse"]))
    tot = manifest["totals"]
    t.add_section()
    t.add_row("TOTAL", "", f"{tot['numel']:,}", f"{tot['bpw']:.4f}",
              f"{sum(r['payload_bits'] for r in manifest['tensors']) / tot['numel']:.4f}",
              f"{tot['file_bytes']:,}", "")
    console().print(t)
    return 0


def run_verify(args: argparse.Namespace) -> int:
    with _progress("verifying tensors", args.json) as progress:
        task = progress.add_task("", total=None)
        rows = verify_package(Path(args.package), args.weights,
                              on_start=lambda n: progress.update(task, total=n),
                              on_tensor=lambda _: progress.advance(task))
    summary = total(rows)
    if args.json:
        print_json({"package": args.package, "tensors": [r.record() for r in rows], "total": summary.record()})
        return 0
    weighted = summary.stats.weighted
    t = render.table(f"Decoded {args.package}: error against the source weights",
                     ["tensor", "candidate", "elements", "bpw [bit]", "stored bpw [bit]", "file [B]",
                      "rel. MSE", "SQNR [dB]", "1-cos [ppm]"] + (["act. rel. MSE"] if weighted else []), left=2)
    for r in [*rows, summary]:
        if r is summary:
            t.add_section()
        s = r.stats
        t.add_row(r.name, r.candidate, f"{r.numel:,}", f"{r.bpw:.4f}", f"{r.stored_bpw:.4f}", f"{r.file_bytes:,}",
                  fixed(100 * s.rel_mse), f"{s.sqnr_db:.2f}", f"{s.cos_deficit_ppm:.1f}",
                  *([fixed(100 * s.act_rel_mse)] if weighted else []))
    console().print(t)
    return 0
