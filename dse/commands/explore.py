"""``dse explore``: measure, optimize and report a scenario; ``dse validate``: check one."""

from __future__ import annotations

import argparse

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.text import Text

from dse.commands.args import add_scheduler_argument, finite_float, positive_int
from dse.per_model import per_model
from dse.pipeline import explore
from dse.recommend import budget_points
from dse.render import console
from dse.report import print_assignment, print_report, write_outputs
from dse.scenario import Scenario, ScenarioError, load_scenario, parse, read_yaml
from dse.setup import resolve_hardware, setup_problems


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("explore", help="measure candidates, solve the per-tensor allocation, report the front",
                       description="Measure every candidate on every tensor, solve the per-tensor format "
                                   "allocation at each budget, recommend, and write the report files.",
                       epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("scenario", help="scenario YAML, e.g. scenarios/edge.yaml")
    p.add_argument("--out", default=None, help="output directory (overrides output.dir)")
    p.add_argument("--jobs", type=positive_int, default=None,
                   help="measurement processes and budgets solved at once (default: all cores)")
    add_scheduler_argument(p)
    p.add_argument("--show", type=finite_float, default=None, metavar="BPW",
                   help="print the per-tensor and per-layer x role choice of the budget nearest BPW "
                        "that has a config, and write bits-<bpw>.png")
    p.set_defaults(handler=run_explore)
    v = sub.add_parser("validate", help="check a scenario file and list every problem",
                       epilog="example:\n  dse validate scenarios/edge.yaml",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    v.add_argument("scenario")
    v.set_defaults(handler=run_validate)


EXAMPLES = """examples:
  dse explore scenarios/edge.yaml
  dse explore scenarios/edge.yaml --show 5.0 --out out/edge-5
  COLUMNS=80 dse explore scenarios/edge.yaml
"""


def run_explore(args: argparse.Namespace) -> int:
    scenario = load_scenario(args.scenario, out=args.out)
    out = console()
    models, skipped = per_model(scenario)
    for n, sub in enumerate(models):
        if len(models) > 1:
            out.rule(Text(f"model {n + 1} of {len(models)}: {sub.weights[0]} (files in {sub.output_dir})"))
        _explore_one(out, sub, args)
    if skipped:
        out.print(Text(f"skipped (not installed): {', '.join(skipped)}"))
    return 0


def _explore_one(out: Console, scenario: Scenario, args: argparse.Namespace) -> None:
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=out, transient=True) as progress:
        task = progress.add_task("measuring tensors", total=None)
        stages = {"sensitivity": "measuring output sensitivity (forward passes)",
                  "validation": "validating points end to end (held-out text)"}

        def on_stage(stage: str, done: int, total: int) -> None:
            progress.update(task, description=stages[stage], completed=done, total=total)

        result = explore(scenario, jobs=args.jobs, scheduler=args.scheduler,
                         on_start=lambda n: progress.update(task, total=n),
                         on_executor=lambda where: progress.update(task, description=f"measuring tensors ({where})"),
                         on_tensor=lambda t: progress.advance(task), on_stage=on_stage)
    hw = resolve_hardware(scenario)
    point = None if args.show is None else min(budget_points(result) or result.front, key=lambda p: abs(p.bpw - args.show))
    paths = write_outputs(result, show=point)
    print_report(out, result, hw)
    for line in result.excluded:
        out.print(Text(f"excluded (hardware.lut_sram_bits_per_layer): {line}"))
    if point is not None:
        print_assignment(out, result, point)
    out.print(Text(f"wrote {len(paths)} files to {scenario.output_dir}"))


def run_validate(args: argparse.Namespace) -> int:
    scenario, problems, broken = parse(read_yaml(args.scenario), args.scenario)
    problems += setup_problems(scenario, broken)
    if problems:
        raise ScenarioError("\n".join(f"{scenario.path}: {p}" for p in problems))
    console().print(f"{scenario.path}: ok ({len(scenario.candidates)} candidates, "
                    f"{len(scenario.budgets_bpw)} budgets)")
    return 0
