"""``dse explore``: measure, optimize and report a scenario; ``dse validate``: check one."""

from __future__ import annotations

import argparse

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from dse.commands.args import add_scheduler_argument, finite_float, positive_int
from dse.pipeline import explore
from dse.render import console
from dse.report import print_assignment, print_front, write_outputs
from dse.scenario import ScenarioError, load_scenario, parse, read_yaml
from dse.setup import setup_problems


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("explore", help="measure candidates, solve the per-tensor allocation, report the front")
    p.add_argument("scenario", help="scenario YAML, e.g. scenarios/edge.yaml")
    p.add_argument("--out", default=None, help="output directory (overrides output.dir)")
    p.add_argument("--jobs", type=positive_int, default=None, help="measurement processes (default: all cores)")
    add_scheduler_argument(p)
    p.add_argument("--show", type=finite_float, default=None, metavar="BPW",
                   help="print the per-tensor assignment of the front point nearest this bpw")
    p.set_defaults(handler=run_explore)
    v = sub.add_parser("validate", help="check a scenario file and list every problem")
    v.add_argument("scenario")
    v.set_defaults(handler=run_validate)


def run_explore(args: argparse.Namespace) -> int:
    scenario = load_scenario(args.scenario, out=args.out)
    out = console()
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
    paths = write_outputs(result)
    print_front(out, result)
    if result.skipped_sources:
        out.print(f"skipped (not installed): {', '.join(result.skipped_sources)}")
    for line in result.excluded:
        out.print(f"excluded (hardware.lut_sram_bits_per_layer): {line}")
    if args.show is not None:
        point = min(result.front, key=lambda p: abs(p.bpw - args.show))
        print_assignment(out, result, point)
    out.print(f"wrote {len(paths)} files to {scenario.output_dir}")
    return 0


def run_validate(args: argparse.Namespace) -> int:
    scenario, problems, broken = parse(read_yaml(args.scenario), args.scenario)
    problems += setup_problems(scenario, broken)
    if problems:
        raise ScenarioError("\n".join(f"{scenario.path}: {p}" for p in problems))
    console().print(f"{scenario.path}: ok ({len(scenario.candidates)} candidates, "
                    f"{len(scenario.budgets_bpw)} budgets)")
    return 0
