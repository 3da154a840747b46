"""Output-aware allocation on real models: does the ``output`` objective beat ``sse`` on the model's output?

Run: python benchmarks/bench_output.py [--model minilm|smollm2|both] [--cache DIR]

For each model it runs the shipped scenario (``scenarios/edge.yaml`` for MiniLM,
``scenarios/smollm2.yaml`` for SmolLM2) twice through ``dse.explore``: with ``objective.metric:
output`` and with ``sse``, at 4.5/5.0/5.5/6.0 bpw, every point validated end to end on the
held-out text. Prints:

* measured output error (MiniLM: 1 - cos in ppm; SmolLM2: KL in nats/token) of both assignments
  per budget, and of the best uniform format of at most 4.5001 bpw;
* the Spearman rank correlation between predicted (gain x SSE) and measured output error over
  the output front's points and the uniform formats;
* how often the measured error rises along the output front (before filtering);
* wall times: sensitivity cold (in a fresh cache, unless ``--cache``) and cached, validation.

Timings on a 2-core machine shared with other jobs are noisy. Asserts nothing.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import yaml
from rich.console import Console
from scipy.stats import spearmanr

from dse.pipeline import explore
from dse.render import table
from dse.scenario import load_scenario

ROOT = Path(__file__).resolve().parents[1]
SCENARIOS = {"minilm": ROOT / "scenarios" / "edge.yaml", "smollm2": ROOT / "scenarios" / "smollm2.yaml"}
BUDGETS = [4.5, 5.0, 5.5, 6.0]


def run(path: Path, work: Path, cache: Path, metric: str, budgets: list[float] | None) -> tuple:
    doc = yaml.safe_load(path.read_text())
    doc["objective"] = {"metric": metric}
    # validation on for both objectives: it is on by default only with metric output
    doc["output"] = {"dir": str(work / f"out-{metric}"), "cache_dir": str(cache), "plot": False, "validation": True}
    if budgets is not None:
        doc["budgets"] = {"bpw": budgets}
    scenario = work / f"{path.stem}-{metric}.yaml"
    scenario.write_text(yaml.safe_dump(doc))
    stamps: dict[str, list[float]] = {}
    start = time.perf_counter()

    def on_stage(stage: str, done: int, total: int) -> None:
        stamps.setdefault(stage, [time.perf_counter()]).append(time.perf_counter())

    result = explore(load_scenario(scenario), on_stage=on_stage)
    times = {stage: t[-1] - t[0] for stage, t in stamps.items()}
    times["total"] = time.perf_counter() - start
    return result, times


def at_budget(result, budget: float):
    """The validated answer to the requested budget nearest ``budget`` (one row per budget)."""
    return min(result.budgets, key=lambda r: abs(r.budget_bpw - budget)).point


def bench(model: str, cache: Path, console: Console) -> None:
    work = Path(tempfile.mkdtemp(prefix=f"bench-output-{model}-"))
    out, times = run(SCENARIOS[model], work, cache, "output", None)
    _, cached = run(SCENARIOS[model], work, cache, "output", None)
    sse, _ = run(SCENARIOS[model], work, cache, "sse", BUDGETS)
    scale, unit = (1e6, "1-cos [ppm]") if model == "minilm" else (1.0, "KL [nats/token]")
    t = table(f"{model}: measured held-out output error, output vs sse objective",
              ["budget [bpw]", f"output: {unit}", f"sse: {unit}", "change"], left=0)

    def shown(point) -> str:  # the error, and a decoder's perplexity on the held-out text
        v = point.validation
        return f"{v.measured * scale:,.4g}" + ("" if v.perplexity is None else f" (ppl {v.perplexity:.1f})")

    for b in BUDGETS:
        o, s = at_budget(out, b), at_budget(sse, b)
        change = o.validation.measured / s.validation.measured - 1
        t.add_row(f"{b:.1f}", shown(o), shown(s), f"{change * 100:+.0f} %")
    uniform = [p for p in out.baselines if p.bpw <= 4.5001]
    best = min(uniform, key=lambda p: p.validation.measured)
    o45 = at_budget(out, 4.5)
    t.add_row("4.5 vs uniform", shown(o45), f"{shown(best)} ({next(iter(best.assignment.values()))})",
              f"{(o45.validation.measured / best.validation.measured - 1) * 100:+.0f} %")
    if o45.validation.reference_perplexity is not None:
        t.add_row("unquantized", "", f"(ppl {o45.validation.reference_perplexity:.2f})", "")
    console.print(t)
    checked = list(out.front) + list(out.dominated) + list(out.baselines)
    rho = spearmanr([p.error for p in checked], [p.validation.measured for p in checked]).statistic
    path = sorted(list(out.front) + list(out.dominated), key=lambda p: p.bpw)
    rises = sum(b.validation.measured > a.validation.measured for a, b in zip(path, path[1:]))
    s = table(f"{model}: prediction and cost", ["quantity", "value"], left=1)
    s.add_row("Spearman(predicted, measured), front + uniform", f"{rho:.4f} over {len(checked)} points")
    s.add_row("measured error rises along the front", f"{rises} of {len(path) - 1} steps")
    # units go with the values: rich would read a "[s]" in a cell as markup
    s.add_row("sensitivity, cold", f"{times.get('sensitivity', 0.0):.1f} s")
    s.add_row("sensitivity, cached", f"{cached.get('sensitivity', 0.0):.2f} s")
    s.add_row("validation, cold", f"{times.get('validation', 0.0):.1f} s for "
              f"{len(path) + len(out.baselines)} points")
    s.add_row("explore total, cold / cached", f"{times['total']:.1f} s / {cached['total']:.1f} s")
    console.print(s)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=["minilm", "smollm2", "both"], default="both")
    parser.add_argument("--cache", type=Path, default=None, help="cache directory (default: a fresh one: cold)")
    args = parser.parse_args()
    console = Console(width=120)
    cache = args.cache or Path(tempfile.mkdtemp(prefix="bench-output-cache-"))
    for model in (["minilm", "smollm2"] if args.model == "both" else [args.model]):
        bench(model, cache, console)


if __name__ == "__main__":
    main()
