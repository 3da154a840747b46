"""Reports of an exploration: rich tables, and the files a quantization run and a plotter read.

Files (all deterministic: no timestamps, fixed orders, so a rerun gives identical bytes):
``pareto.csv``, ``pareto.json``, ``measurements.csv``, ``pareto.png``, one
``config-<bpw>.yaml`` per front point (the assignment ``dse quantize`` consumes), and
``outputs.json``, written last, listing the set with BLAKE2b hashes.
"""

from __future__ import annotations

import io
import json
import math
import os
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console

from dse.allocation import FrontPoint
from dse.atomic import locked, staging_dir, write_atomic
from dse.packing import file_hash
from dse.pipeline import ExploreResult, bpw_label
from dse.render import fmt_sci, placeholder_lines, table
from quant import parse_candidate
from quant.errors import DseError

CONFIG_VERSION = 1
PLOT_VERSION = 3  # bump when plot_front draws differently: a cached plot is then redrawn


def point_record(p: FrontPoint) -> dict[str, Any]:
    out = {
        "bpw": p.bpw, "error": p.error, "energy_j_per_token": p.energy_j_per_token,
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
_GENERATED = ("pareto.json", "pareto.csv", "measurements.csv", "pareto.png", ".pareto.png.key", "config-*.yaml")


def write_outputs(result: ExploreResult) -> list[Path]:
    """Write every output file as one generation; returns their paths.

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
        _write_generation(result, staging, out)
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


def _write_generation(result: ExploreResult, out: Path, previous: Path) -> None:
    s = result.scenario
    meta = {"scenario": str(s.path), "metric": s.metric, "hardware": s.hardware.label,
            "weights": list(s.weights), "skipped_sources": list(result.skipped_sources),
            "excluded": list(result.excluded)}
    pareto = {"meta": meta, "front": [point_record(p) for p in result.front],
              "dominated": [point_record(p) for p in result.dominated],
              "baselines": [{k: v for k, v in point_record(p).items() if k != "assignment"} | {
                  "candidate": next(iter(p.assignment.values()))} for p in result.baselines]}
    write_atomic(out / "pareto.json", json.dumps(pareto, indent=1, allow_nan=False, default=_json_default) + "\n")
    columns = ["bpw", "error", "energy_j_per_token", "tokens_per_s", "bytes_per_token", "decode_area_mm2",
               "source", "budget_bpw"] + (VALIDATION_COLUMNS if _validated(result) else [])
    lines = [",".join(columns + ["formats"])]
    for p in result.front:
        r = point_record(p)
        formats = ";".join(f"{k}={v}" for k, v in r["formats"].items())
        lines.append(",".join(_csv(r[c]) for c in columns) + f",{formats}")
    write_atomic(out / "pareto.csv", "\n".join(lines) + "\n")
    write_atomic(out / "measurements.csv", result.measurements.to_csv(index=False, float_format="%.9g"))
    for p in result.front:
        if not p.source.startswith("ilp"):
            continue  # configs for the requested budgets; pareto.json has every hull vertex's assignment
        write_atomic(out / f"config-{bpw_label(p.bpw)}.yaml", yaml.safe_dump(config_document(result, p), sort_keys=False))
    if s.plot:
        plot_front(result, out / "pareto.png", previous / "pareto.png")


def _validated(result: ExploreResult) -> bool:
    return any(p.validation is not None for p in result.front)


def _measured(p: FrontPoint) -> float:
    return p.validation.measured if p.validation is not None else float("nan")


def _plot_key(result: ExploreResult) -> str:
    from dse.cache import content_hash

    data = [(p.bpw, p.error, _measured(p)) for p in result.front + result.dominated + result.baselines]
    import numpy as np

    return content_hash(np.array(data)) + repr([next(iter(p.assignment.values())) for p in result.baselines])


def config_document(result: ExploreResult, p: FrontPoint) -> dict[str, Any]:
    """The exported per-tensor assignment of one front point."""
    s = result.scenario
    return {
        "sop_dse_config": CONFIG_VERSION,
        "scenario": str(s.path),
        "weights": list(s.weights) + [w for w in s.optional_weights if w not in result.skipped_sources],
        "activations": s.activations,
        "act_power": s.act_power,
        "bpw": p.bpw,
        "error": p.error,
        "metric": s.metric,
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
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.8), dpi=120)
    front = sorted(result.front, key=lambda p: p.bpw)
    ax.plot([p.bpw for p in front], [p.error for p in front], "-o", ms=3.5, color="tab:blue",
            label="Pareto front (per-tensor formats)")
    label_y = _spread_labels([(p.bpw, p.error) for p in result.baselines])
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


def _spread_labels(points: list[tuple[float, float]], gap_decades: float = 0.05) -> list[float]:
    """Label heights for (bpw, error) points on a log axis: labels of points within 0.3 bpw of each
    other are pushed apart to at least ``gap_decades`` so they do not overprint."""
    order = sorted(range(len(points)), key=lambda i: points[i][1])
    placed: list[tuple[float, float]] = []  # (bpw, log10 label height)
    out = [0.0] * len(points)
    for i in order:
        x, y = points[i][0], math.log10(points[i][1])
        for px, py in sorted(placed, key=lambda q: q[1]):
            if abs(px - x) < 0.3 and y < py + gap_decades:
                y = py + gap_decades
        placed.append((x, y))
        out[i] = 10**y
    return out


def _metric_label(metric: str) -> str:
    return {"sse": "squared error", "act_sse": "activation-weighted squared error",
            "rel_mse": "elements x relative MSE", "output": "predicted output error (gain x squared error)"}[metric]


def _measured_label(result: ExploreResult) -> str:
    metric = next(p.validation.metric for p in result.front if p.validation is not None)
    return "1 - cos of sentence embeddings" if metric == "1-cos" else "KL [nats/token]"


def _fmt_measured(p: FrontPoint) -> str:
    if p.validation is None:
        return "-"
    if p.validation.metric == "1-cos":
        return f"{p.validation.measured * 1e6:,.0f} ppm"
    return f"{p.validation.measured:.4g}"


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


def front_rows(result: ExploreResult) -> tuple[list[tuple[str, ...]], list[tuple[str, ...]]]:
    """The cells :func:`print_front` prints: the front's ILP points (with the dominated ones when
    validated), and the uniform baselines."""
    validated = _validated(result)
    rows = []
    for p in sorted(result.front + result.dominated, key=lambda p: p.bpw):
        if not p.source.startswith("ilp"):
            continue  # hull vertices between budgets are in pareto.csv and the plot
        formats = Counter(p.assignment.values()).most_common(3)
        point = p.source
        if p in result.dominated:  # measured worse than a cheaper point: not exported
            worse = p.validation.worse_than if p.validation else None
            point = "dominated" if worse is None else f"dominated (worse than {worse:.4f})"
        rows.append(_cells(p, point, ", ".join(f"{n} x{k}" for n, k in formats), validated))
    return rows, [_cells(p, "uniform", next(iter(p.assignment.values())), validated) for p in result.baselines]


def _cells(p: FrontPoint, point: str, formats: str, validated: bool) -> tuple[str, ...]:
    measured = (_fmt_measured(p),) if validated else ()
    return (f"{p.bpw:.4f}", fmt_sci(p.error), *measured, f"{p.energy_j_per_token * 1e3:.4g}",
            f"{p.tokens_per_s:,.0f}", f"{p.decode_area_mm2:.4f}", point, formats)


def print_front(console: Console, result: ExploreResult) -> None:
    """The front beside the uniform baselines."""
    measured = [f"measured {'1-cos' if 'cos' in _measured_label(result) else 'KL'}"] if _validated(result) else []
    t = table(f"Pareto front: {result.scenario.path.name} ({_metric_label(result.scenario.metric)})",
              ["bpw [bit]", "error", *measured, "energy [mJ/token]", "tokens/s (bound)", "decode area [mm2]", "point",
               "formats used"], left=0)
    front, uniform = front_rows(result)
    for row in front:
        t.add_row(*row)
    t.add_section()
    for row in uniform:
        t.add_row(*row)
    console.print(t)
    used = {name for p in (*result.front, *result.baselines) for name in p.assignment.values()}
    for line in placeholder_lines(parse_candidate(name) for name in sorted(used)):
        console.print(line)


def print_assignment(console: Console, result: ExploreResult, point: FrontPoint) -> None:
    """The per-tensor choice at one front point."""
    rows = result.measurements.set_index(["tensor", "candidate"])
    t = table(f"Assignment at {point.bpw:.4f} bpw", ["tensor", "candidate", "elements", "bpw [bit]", "rel. MSE",
                                                      "1-cos [ppm]"], left=2)
    for tensor in sorted(point.assignment):
        c = point.assignment[tensor]
        r = rows.loc[(tensor, c)]
        t.add_row(tensor, c, f"{int(r['numel']):,}", f"{r['bpw']:.4f}", fmt_sci(float(r["rel_mse"])),
                  f"{float(r['cos_deficit_ppm']):.1f}")
    console.print(t)
