"""``dse cost``: energy per weight, decode area and, for a model, bytes/tokens/J per token of candidates."""

from __future__ import annotations

import argparse
from typing import Any

from rich.markup import escape
from rich.table import Table

from dse.render import console, print_json
from hwcost import (
    CandidateCost, ExplainRow, Hardware, ModelCost, candidate_cost, decode_paths, explain, load_hardware, model_cost,
    weight_tensors,
)
from models.catalog import get_model
from quant import parse_candidate


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("cost", help="energy, decode area and memory traffic of candidates on a hardware",
                       epilog="examples:\n  dse cost E2M3sUE4M4 E4M3sUE8M0@layer 'NF4|DD4sUE4M4' --hardware hbm3 --model llama-3.1-8b\n"
                              "  dse cost NVFP4 MXFP4 --hardware lpddr5x --explain",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("candidates", nargs="+", metavar="CANDIDATE", help="e.g. E2M3sUE4M4 NF4sFP32@64")
    p.add_argument("--hardware", required=True, metavar="PRESET_OR_YAML",
                   help="hbm3 | hbm3e | lpddr5x | gddr6 | gddr7 (any case), or a hardware YAML file")
    p.add_argument("--model", metavar="MODEL", help="catalog id (e.g. llama-3.1-8b): every tensor in the candidate")
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")
    p.add_argument("--explain", action="store_true", help="also list every number used, with its source")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    hw = load_hardware(args.hardware)
    candidates = [parse_candidate(name) for name in args.candidates]
    tensors = weight_tensors(get_model(args.model)) if args.model else None
    rows: list[tuple[CandidateCost, ModelCost | None]] = []
    for c in candidates:
        for path in decode_paths(c):
            model = model_cost([(t, c) for t in tensors], hw, path) if tensors else None
            rows.append((candidate_cost(c, hw, path), model))
    notes = explain(frozenset().union(*(cost.uses for cost, _ in rows)), hw) if args.explain else None
    if args.json:
        print_json(_payload(hw, args.model, rows, notes))
    else:
        _print_tables(hw, args.model, rows, notes)
    return 0


def _payload(hw: Hardware, model_id: str | None, rows: list[tuple[CandidateCost, ModelCost | None]],
             notes: tuple[ExplainRow, ...] | None) -> dict[str, Any]:
    costs = []
    for cost, model in rows:
        record = cost.record()
        if model is not None:
            record |= {"model": model_id, **model.record()}
        costs.append(record)
    out: dict[str, Any] = {"hardware": hw.name, "costs": costs}
    if notes is not None:
        out["explain"] = [vars(row) for row in notes]
    return out


# (row label, EnergySplit field, AreaItem key prefix): the per-candidate table's rows.
_COMPONENTS = (
    ("DRAM", "dram_pj", None), ("on-chip buffer", "buffer_pj", None), ("LUT", "lut_pj", "lut"),
    ("direct decoder", "decoder_pj", "decoder"), ("block scale", "scale_pj", "block_scale"),
    ("MAC", "mac_pj", "mac_array"), ("tensor scale", "tensor_scale_pj", "tensor_scale"),
)


def _area_mm2(cost: CandidateCost, prefix: str | None) -> str:
    if prefix is None:
        return "-"
    return f"{sum(i.area_um2 for i in cost.area if i.key.split(':')[0] == prefix) * 1e-6:.4g}"


def _candidate_table(hw: Hardware, costs: list[CandidateCost]) -> Table:
    """One candidate, a column pair (energy, area) per decode path."""
    first = costs[0]
    luts = "; ".join(f"{c.decode.value}: {c.lut_bits}-bit LUT as {c.lut_impl.value}" if c.lut_impl
                     else f"{c.decode.value}: no LUT" for c in costs)
    table = Table(title=f"{first.candidate}: {first.bpw:.6g} bit/weight on {hw.name}",
                  caption=f"per weight per token; area for {hw.lanes} lanes. {luts}")
    table.add_column("component")
    for c in costs:
        table.add_column(escape(f"{c.decode.value} [pJ/weight]"), justify="right")
        table.add_column(escape(f"{c.decode.value} [mm²]"), justify="right")
    for label, energy_field, prefix in _COMPONENTS:
        cells = []
        for c in costs:
            cells += [f"{getattr(c.energy_pj_per_weight, energy_field):.4g}", _area_mm2(c, prefix)]
        table.add_row(label, *cells)
    totals = []
    for c in costs:
        totals += [f"{c.energy_pj_per_weight.total_pj:.4g}", f"{c.decode_area_mm2:.4g}"]
    table.add_row("total", *totals, style="bold")
    return table


def _print_tables(hw: Hardware, model_id: str | None, rows: list[tuple[CandidateCost, ModelCost | None]],
                  notes: tuple[ExplainRow, ...] | None) -> None:
    out = console()
    t = hw.tech
    out.print(f"{hw.name}: {hw.memory.bandwidth_gbyte_per_s:g} GB/s, {hw.memory.energy_pj_per_bit:g} pJ/bit, "
              f"{t.node_nm:g} nm {t.vdd_v:g} V, {hw.lanes} lanes, {hw.lut_ports} LUT ports, batch {hw.batch}")
    by_candidate: dict[str, list[CandidateCost]] = {}
    for cost, _ in rows:
        by_candidate.setdefault(cost.candidate, []).append(cost)
    for costs in by_candidate.values():
        out.print(_candidate_table(hw, costs))
    if model_id is not None:
        per_model = Table(title=f"{model_id} on {hw.name}, every tensor in the candidate",
                          caption="tokens/s: memory-bound upper bound from the weight traffic alone")
        for col in ("candidate", "decode", "bytes/token [GB]", "tokens/s [1/s]", "J/token [J]", "area [mm²]"):
            per_model.add_column(escape(col), justify="left" if col in ("candidate", "decode") else "right")
        for cost, model in rows:
            assert model is not None
            per_model.add_row(cost.candidate, cost.decode.value, f"{model.bytes_per_token / 1e9:.4g}",
                              f"{model.tokens_per_s:.4g}", f"{model.energy_j_per_token:.4g}",
                              f"{model.decode_area_mm2:.4g}")
        out.print(per_model)
    if notes is not None:
        table = Table(title="Every number used, and its source")
        for col in ("name", "value", "unit", "at target", "source"):
            table.add_column(col, justify="right" if col in ("value", "at target") else "left")
        for row in notes:
            at_target = "" if row.at_target is None else f"{row.at_target:.4g}"
            table.add_row(escape(row.name), f"{row.value:.6g}", escape(row.unit), at_target, escape(row.source))
        out.print(table)
