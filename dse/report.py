"""Reports of an exploration: rich tables, and the files a quantization run and a plotter read.

Files (all deterministic: no timestamps, fixed orders, so a rerun gives identical bytes):
``pareto.csv``, ``pareto.json``, ``measurements.csv``, ``pareto.png``, a self-contained
``report.html`` (dse.html), one ``config-<budget>.yaml`` per requested budget that has an exported
point (the assignment ``dse quantize`` and ``dse export`` consume; a budget without one is listed
in the table and pareto.json with the reason), ``bits-<bpw>.png`` with ``--show``, and
``outputs.json``, written last, listing the set with BLAKE2b hashes.
"""

from __future__ import annotations

import io
import json
import os
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console
from rich.text import Text

from dse.allocation import BudgetRow, FrontPoint
from dse.atomic import locked, staging_dir, write_atomic
from dse.html import spread_labels, write_html
from dse.layers import BitsGrid, bits_grid, plot_bits
from dse.packing import file_hash
from dse.pipeline import ExploreResult, bpw_label
from dse.recommend import decode_units, fmt_measured, recommend, uniform_name, with_alias
from dse.render import Col, fit_table, fixed, placeholder_lines, pyplot, short_tensor_names
from dse.setup import resolve_hardware
from hwcost import Hardware
from quant import parse_candidate
from quant.errors import DseError

CONFIG_VERSION = 1
SAFE_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
"""libyaml's emitter when PyYAML has it (7x faster, the same text: tested), else PyYAML's own."""
PLOT_VERSION = 3  # bump when plot_front draws differently: a cached plot is then redrawn


def point_record(p: FrontPoint) -> dict[str, Any]:
    out = {
        "bpw": p.bpw, "bpw_streamed": p.bpw_streamed, "bpw_budgeted": p.bpw_budgeted, "error": p.error, "gap": p.gap,
        "energy_j_per_token": p.energy_j_per_token,
        "tokens_per_s": p.tokens_per_s, "bytes_per_token": p.bytes_per_token,
        "decode_area_mm2": p.decode_area_mm2, "source": p.source, "budget_bpw": p.budget_bpw,
        "formats": dict(sorted(Counter(p.assignment.values()).items())),
        "assignment": dict(sorted(p.assignment.items())),
    }
    v = p.validation
    if v is not None:  # measured end to end on the held-out text
        out.update(measured_output_error=v.measured, measured_metric=v.metric, perplexity=v.perplexity,
                   reference_perplexity=v.reference_perplexity, worse_than_bpw=v.worse_than)
    return out


VALIDATION_COLUMNS = ["measured_output_error", "measured_metric", "perplexity", "worse_than_bpw"]


OUTPUTS = "outputs.json"
"""The complete marker: the files of the last complete run with their BLAKE2b, written last."""
_GENERATED = ("pareto.json", "pareto.csv", "measurements.csv", "pareto.png", ".pareto.png.key", "config-*.yaml",
              "report.html", "bits-*.png")


def budget_record(r: BudgetRow) -> dict[str, Any]:
    """One requested budget: its status, the one-line note, its config, and its point without the
    assignment."""
    point = {} if r.point is None else {k: v for k, v in point_record(r.point).items() if k not in ("assignment",
                                                                                                    "budget_bpw")}
    return {"budget_bpw": r.budget_bpw, "status": r.status, "note": r.note,
            "config": config_name(r) if _exported(r) else None, **point}


def config_name(r: BudgetRow) -> str:
    return f"config-{bpw_label(r.budget_bpw)}.yaml"


def _exported(r: BudgetRow) -> bool:
    """A budget gets a config when it has a point that did not measure worse than a cheaper one."""
    return r.point is not None and not r.dominated


def write_outputs(result: ExploreResult, show: FrontPoint | None = None) -> list[Path]:
    """Write every output file as one generation; returns their paths. ``show``: also draw the
    layer x role heatmap of that point (``bits-<bpw>.png``).

    The files are written to a staging directory beside the output directory, then moved in
    under a lock, after the previous run's files are removed; ``outputs.json`` is written last.
    A reader never sees one run's ``pareto.json`` beside another run's configs once
    ``outputs.json`` lists them, and concurrent runs into one directory publish in turn.
    """
    s = result.scenario
    out = s.output_dir
    if out.exists() and not out.is_dir():
        raise DseError(f"{out}: is a file; the output directory (--out, output.dir) must be a directory")
    staging = staging_dir(out)
    try:
        _write_generation(result, staging, out, show)
        out.mkdir(parents=True, exist_ok=True)
        with locked(out / ".dse-lock"):
            (out / OUTPUTS).unlink(missing_ok=True)  # no marker while the set is changing
            for pattern in _GENERATED:  # the previous run's files: a rerun must not leave old points
                for stale in out.glob(pattern):
                    stale.unlink(missing_ok=True)
            names = sorted(p.name for p in staging.iterdir())
            for name in names:
                os.replace(staging / name, out / name)
            files = {name: file_hash((out / name).read_bytes()) for name in names}
            write_atomic(out / OUTPUTS, json.dumps({"scenario": str(s.path), "budgets_bpw": list(s.budgets_bpw),
                                                    "files": files}, indent=1) + "\n")
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return [out / name for name in names if not name.startswith(".")] + [out / OUTPUTS]


def _write_generation(result: ExploreResult, out: Path, previous: Path, show: FrontPoint | None) -> None:
    s = result.scenario
    meta = {"scenario": str(s.path), "metric": s.metric, "hardware": s.hardware.label,
            "weights": list(s.weights), "skipped_sources": list(result.skipped_sources),
            "excluded": list(result.excluded), "budget_basis": s.budget_basis}
    pareto = {"meta": meta, "budgets": [budget_record(r) for r in result.budgets],
              "front": [point_record(p) for p in result.front],
              "dominated": [point_record(p) for p in result.dominated],
              "baselines": [{k: v for k, v in point_record(p).items() if k != "assignment"} | {
                  "candidate": next(iter(p.assignment.values()))} for p in result.baselines]}
    write_atomic(out / "pareto.json", json.dumps(pareto, indent=1, allow_nan=False, default=_json_default) + "\n")
    columns = ["bpw", "bpw_streamed", "bpw_budgeted", "error", "gap", "energy_j_per_token", "tokens_per_s",
               "bytes_per_token", "decode_area_mm2", "source", "budget_bpw"]
    columns += VALIDATION_COLUMNS if _validated(result) else []
    lines = [",".join(columns + ["formats"])]
    for p in result.front:
        r = point_record(p)
        formats = ";".join(f"{k}={v}" for k, v in r["formats"].items())
        lines.append(",".join(_csv(r[c]) for c in columns) + f",{formats}")
    write_atomic(out / "pareto.csv", "\n".join(lines) + "\n")
    write_atomic(out / "measurements.csv", result.measurements.to_csv(index=False, float_format="%.9g"))
    for r in result.budgets:  # one per requested budget; pareto.json has every hull vertex's assignment
        if _exported(r):
            write_atomic(out / config_name(r), yaml.dump(config_document(result, r), Dumper=SAFE_DUMPER, sort_keys=False))
    if s.plot:
        plot_front(result, out / "pareto.png", previous / "pareto.png")
    hw = resolve_hardware(s)
    recs, trades = recommend(result, hw)
    write_html(result, hw, recs, trades, source_notes(result), _metric_label(s.metric), out / "report.html")
    if show is not None:
        plot_bits(bits_grid(result, show), f"{s.path.name}: bits at {show.bpw:.4f} bpw",
                  out / f"bits-{bpw_label(show.bpw)}.png")


def _validated(result: ExploreResult) -> bool:
    return any(p.validation is not None for p in result.front)


def _measured(p: FrontPoint) -> float:
    return p.validation.measured if p.validation is not None else float("nan")


def _plot_key(result: ExploreResult) -> str:
    from dse.cache import content_hash

    data = [(p.bpw, p.error, _measured(p)) for p in result.front + result.dominated + result.baselines]
    import numpy as np

    return content_hash(np.array(data)) + repr([next(iter(p.assignment.values())) for p in result.baselines])


def config_document(result: ExploreResult, row: BudgetRow) -> dict[str, Any]:
    """The exported per-tensor assignment answering one requested budget."""
    s = result.scenario
    p = row.point
    assert p is not None
    return {
        "sop_dse_config": CONFIG_VERSION,
        "scenario": str(s.path),
        "weights": list(s.weights) + [w for w in s.optional_weights if w not in result.skipped_sources],
        "activations": s.activations,
        "act_power": s.act_power,
        "bpw": p.bpw,
        "bpw_streamed": p.bpw_streamed,
        "error": p.error,
        "metric": s.metric,
        "budget_bpw": row.budget_bpw,
        "budget_basis": s.budget_basis,
        "status": row.status,
        "gap": p.gap,
        "note": row.note,
        "assignment": dict(sorted(p.assignment.items())),
    }


def plot_front(result: ExploreResult, path: Path, previous: Path | None = None) -> Path:
    """Error vs bpw: the front and the uniform baselines. Not redrawn when ``previous`` (default:
    ``path``) was drawn from the same data: its bytes are reused."""
    key_file = path.with_name(f".{path.name}.key")
    key = f"{PLOT_VERSION}:{_plot_key(result)}{result.scenario.path.name}"
    previous = previous or path
    previous_key = previous.with_name(key_file.name)
    try:
        if previous_key.read_text() == key:
            image = previous.read_bytes()
            write_atomic(path, image)
            write_atomic(key_file, key)
            return path
    except (OSError, UnicodeDecodeError):
        pass  # no usable previous plot: draw it
    plt = pyplot()

    fig, ax = plt.subplots(figsize=(7.5, 4.8), dpi=120)
    front = sorted(result.front, key=lambda p: p.bpw)
    ax.plot([p.bpw for p in front], [p.error for p in front], "-o", ms=3.5, color="tab:blue",
            label="Pareto front (per-tensor formats)")
    label_y = spread_labels([(p.bpw, p.error) for p in result.baselines])
    for i, (p, y) in enumerate(zip(result.baselines, label_y)):
        ax.scatter([p.bpw], [p.error], marker="x", color="tab:red", zorder=3,
                   label="one format everywhere" if i == 0 else None)
        ax.annotate(next(iter(p.assignment.values())), (p.bpw, p.error), xytext=(p.bpw + 0.12, y), fontsize=7,
                    va="center", arrowprops={"arrowstyle": "-", "lw": 0.4, "color": "0.6"})
    ax.set_xlabel("bits per weight [bit]")
    ax.set_ylabel(f"{_metric_label(result.scenario.metric)}, summed over tensors")
    ax.set_yscale("log")
    if _validated(result):  # measured output on a second axis: its units differ unless metric is output
        measured = ax.twinx()
        checked = sorted(result.front + result.dominated, key=lambda p: p.bpw)
        measured.plot([p.bpw for p in checked], [_measured(p) for p in checked], "s", ms=4, mfc="none",
                      color="tab:green", label="measured output error (held-out text)")
        measured.scatter([p.bpw for p in result.baselines], [_measured(p) for p in result.baselines], marker="+",
                         color="tab:green", label="measured, one format everywhere")
        flagged = [p for p in result.dominated]
        if flagged:
            measured.scatter([p.bpw for p in flagged], [_measured(p) for p in flagged], marker="v", color="tab:orange",
                             zorder=4, label="worse than a cheaper point (not exported)")
        measured.set_yscale("log")
        measured.set_ylabel(f"measured {_measured_label(result)}", color="tab:green")
        measured.legend(loc="lower left", fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    ax.set_title(f"{result.scenario.path.name}: error vs storage", fontsize=10)
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    image = io.BytesIO()
    fig.savefig(image, format="png", metadata={"Software": None})  # no version stamp: reruns are identical
    plt.close(fig)
    write_atomic(path, image.getvalue())
    write_atomic(key_file, key)
    return path


def _metric_label(metric: str) -> str:
    return {"sse": "squared error", "act_sse": "activation-weighted squared error",
            "rel_mse": "elements x relative MSE", "output": "predicted output error (gain x squared error)"}[metric]


def _measured_label(result: ExploreResult) -> str:
    metric = next(p.validation.metric for p in result.front if p.validation is not None)
    return "1 - cos of sentence embeddings" if metric == "1-cos" else "KL [nats/token]"


def _csv(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.9g}"
    return str(v)


def _json_default(v: Any) -> Any:
    if hasattr(v, "item"):
        return v.item()
    raise TypeError(type(v))


def source_notes(result: ExploreResult) -> list[str]:
    """One line per source whose numbers need a caveat: pre-quantized or synthetic weights."""
    notes = []
    for source in dict.fromkeys(t.source for t in result.tensors):
        tensors = [t for t in result.tensors if t.source == source]
        if any(t.prequantized for t in tensors):
            share = _error_share(result, {t.name for t in tensors if t.prequantized})
            notes.append(f"{source}: pre-quantized checkpoint: its errors are against already-quantized weights "
                         f"({share:.0f} % of the error at the first point); treat its choices with care")
        if "synthetic" in source:
            notes.append(f"{source}: synthetic weights: choices reflect tensor shapes and a calibrated "
                         "distribution, not a trained model's weights")
    return notes


def _error_share(result: ExploreResult, names: set[str]) -> float:
    if not result.front:
        return 0.0
    p = result.front[0]
    rows = result.measurements.set_index(["tensor", "candidate"])["error"]
    total = sum(float(rows[(t, c)]) for t, c in p.assignment.items())
    part = sum(float(rows[(t, c)]) for t, c in p.assignment.items() if t in names)
    return 100.0 * part / total if total > 0 else 0.0


def print_report(console: Console, result: ExploreResult, hw: Hardware) -> None:
    """Recommendation, then the front beside the uniform baselines, then caveats on the sources."""
    recs, trades = recommend(result, hw)
    console.print(Text.assemble(("Recommendation", "bold"), f" ({result.scenario.path.name}, "
                                f"{_metric_label(result.scenario.metric)}, {hw.name})"))
    for r in recs:
        console.print(Text(f"- {r.sentence()}"))
    for t in trades:
        console.print(Text(f"- {t.sentence()}"))
    for note in source_notes(result):
        console.print(Text(f"- Note: {note}"))
    console.print()
    print_front(console, result, hw)


def print_front(console: Console, result: ExploreResult, hw: Hardware) -> None:
    """One row per requested budget (a point, or why there is none) beside the uniform baselines,
    fitted to the terminal; then why a budget has no point or config, and the reconstructed grids used."""
    s = result.scenario
    measured = [Col(f"measured {'1-cos' if 'cos' in _measured_label(result) else 'KL'}")] if _validated(result) else []
    cols = [Col("budget [bit]"), Col("bpw [bit]"), Col("streamed [bit]", optional=True), Col("error"), *measured,
            Col("gap", optional=True), Col("energy [mJ/token]"), Col("tokens/s (bound)"),
            Col("decode units", optional=True), Col("decode area [mm2]", optional=True), Col("point", "name", optional=True),
            Col("formats used", "list")]
    front, uniform = front_rows(result, hw, limit=3 if console.width < 160 else 6)
    console.print(fit_table(console, f"Pareto front: {s.path.name} ({_metric_label(s.metric)}; budgets on "
                            f"{s.budget_basis} bits)", cols, front + uniform, [len(front)]))
    console.print(Text(f"gap: each answer's proven distance above the optimum (solver.gap_rel {s.solver_gap_rel:g})"))
    for r in result.budgets:  # what the table cannot say in a cell: why a budget has no point or config
        if r.status != "optimal" or r.dominated:
            console.print(Text(f"budget {r.budget_bpw:g}: {r.note}"))
    shown = [*result.front, *(r.point for r in result.budgets if r.point is not None), *result.baselines]
    used = {name for p in shown for name in p.assignment.values()}
    for line in placeholder_lines(parse_candidate(name) for name in sorted(used)):
        console.print(Text(line))


def front_rows(result: ExploreResult, hw: Hardware, limit: int = 3) -> tuple[list[list[str]], list[list[str]]]:
    """The cells :func:`print_front` prints: one row per requested budget (budget, bpw, streamed,
    error, [measured,] gap, mJ/token, tokens/s, decode units, area, point, formats: the ``limit``
    most used), and the uniform baselines."""
    validated = _validated(result)
    rows = []
    for r in result.budgets:
        if r.point is None:
            rows.append([f"{r.budget_bpw:g}", *["-"] * (9 if validated else 8), r.status, ""])
            continue  # the note below the table says why
        point = r.status
        if r.dominated:  # measured worse than a cheaper point: no config
            worse = r.point.validation.worse_than if r.point.validation else None
            point = "dominated" if worse is None else f"dominated (worse than {worse:.4f})"
        rows.append(_front_row(r.point, hw, f"{r.budget_bpw:g}", f"{r.point.gap:.1e}", point, _formats(r.point, limit),
                               validated))
    uniform = []
    for p in result.baselines:
        uniform.append(_front_row(p, hw, "", "", "uniform", with_alias(uniform_name(p)), validated))
    return rows, uniform


def _formats(p: FrontPoint, limit: int) -> str:
    common = Counter(p.assignment.values()).most_common()
    shown = [f"{n} x{k}" for n, k in common[:limit]]
    return ", ".join(shown + ([f"+{len(common) - limit} more"] if len(common) > limit else []))


def _front_row(p: FrontPoint, hw: Hardware, budget: str, gap: str, point: str, formats: str,
               validated: bool) -> list[str]:
    measured = [fmt_measured(p)] if validated else []
    return [budget, f"{p.bpw:.4f}", f"{p.bpw_streamed:.4f}", fixed(p.error), *measured, gap,
            f"{p.energy_j_per_token * 1e3:.4f}", f"{p.tokens_per_s:,.0f}", str(len(decode_units(p, hw))),
            f"{p.decode_area_mm2:.4f}", point, formats]


def print_assignment(console: Console, result: ExploreResult, point: FrontPoint) -> None:
    """The per-tensor choice at one front point, then the same as a layer x role grid."""
    rows = result.measurements.set_index(["tensor", "candidate"])
    names = sorted(point.assignment)
    short, rule = short_tensor_names(names)
    full = max(map(len, names)) + max(map(len, point.assignment.values())) + 50 <= console.width
    cells = []
    for tensor in names:
        c = point.assignment[tensor]
        r = rows.loc[(tensor, c)]
        cells.append([tensor if full else short[tensor], c, f"{int(r['numel']):,}", f"{r['bpw']:.4f}",
                      fixed(100 * float(r["rel_mse"])), f"{float(r['cos_deficit_ppm']):.1f}"])
    cols = [Col("tensor", "name"), Col("candidate", "name"), Col("elements", optional=True), Col("bpw [bit]"),
            Col("rel. MSE [%]"), Col("1-cos [ppm]", optional=True)]
    console.print(fit_table(console, f"Assignment at {point.bpw:.4f} bpw", cols, cells))
    if not full:
        console.print(rule)
    print_bits_grid(console, bits_grid(result, point), f"Bits per weight by layer and role at {point.bpw:.4f} bpw")


def print_bits_grid(console: Console, grid: BitsGrid, title: str) -> None:
    """Layer x role table: each cell the bpw and the key of the chosen candidate."""
    keys = grid.letters()
    cols = [Col("layer", "name")] + [Col(role) for role in grid.roles]
    cells = []
    for i, layer in enumerate(grid.layers):
        cells.append([f"L{layer}"] + [f"{grid.bpw[i, j]:.2f} {keys[c]}" if (c := grid.candidate[i][j]) else "-"
                                     for j in range(len(grid.roles))])
    console.print(fit_table(console, title, cols, cells))
    for name, key in keys.items():
        console.print(Text(f"  {key} = {name}"))
    for tensor, c, bpw in grid.others:
        console.print(Text(f"  {tensor}: {c} ({bpw:.4f} bpw)"))
