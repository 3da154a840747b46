"""``dse formats``: every registered atom and scale format with bits, range, values and source."""

from __future__ import annotations

import argparse
from typing import Any

from dse import render
from dse.render import console, print_json
from quant.formats import GRID_SETS, get_atom, known_atom_names
from quant.scales import BUILTIN_SCALES, get_scale


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("formats", help="list atom and scale formats with their exact properties",
                       epilog="examples:\n  dse formats\n  dse formats --json", formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")
    p.set_defaults(handler=run)


def format_records() -> dict[str, list[dict[str, Any]]]:
    atoms = []
    for name in known_atom_names():
        a = get_atom(name)
        positive = [v for v in a.values if v > 0]
        atoms.append({
            "name": a.name, "kind": a.kind.value, "bits": a.code_bits, "values": a.n_values,
            "min": a.values[0], "max": a.values[-1], "min_positive": min(positive),
            "symmetric": a.symmetric, "signed_scale": a.signed_scale, "placeholder": a.placeholder,
            "note": a.note, "source": a.source,
        })
    grid_sets = [{"name": g.name, "grids": list(g.atoms), "placeholder": g.placeholder, "note": g.note,
                  "source": g.source} for g in GRID_SETS.values()]
    scales = []
    for name in BUILTIN_SCALES:
        s = get_scale(name)
        scales.append({
            "name": s.name, "bits": s.bits, "signed": s.signed, "metabit": s.metabit,
            "significand_bits": s.significand_bits, "min_positive": s.min_positive, "max": s.max,
            "values": None if s.exact else int(s.magnitudes.size), "source": s.source,
        })
    return {"atoms": atoms, "grid_sets": grid_sets, "scales": scales}


def run(args: argparse.Namespace) -> int:
    records = format_records()
    if args.json:
        print_json(records)
        return 0
    out = console()
    atoms = render.table("Atom formats (element grids)",
                         ["name", "kind", "code bits", "values", "range", "min |v| > 0", "source"], left=2)
    for a in records["atoms"]:
        note = f" [{a['note']}]" if a["note"] else ""
        atoms.add_row(_marked(a), a["kind"], str(a["bits"]), str(a["values"]),
                      f"{a['min']:.6g} .. {a['max']:.6g}", f"{a['min_positive']:.6g}", a["source"] + note)
    out.print(atoms)
    sets = render.table("Grid sets (one grid chosen per block)", ["name", "grids", "source"], left=3)
    for g in records["grid_sets"]:
        sets.add_row(_marked(g), "|".join(g["grids"]), g["source"])
    out.print(sets)
    for record in [*records["atoms"], *records["grid_sets"]]:
        if record["placeholder"]:
            out.print(f"placeholder {record['name']}: {record['note']}")
    scales = render.table("Scale formats",
                          ["name", "bits", "signed", "significand bits", "min > 0", "max", "source"])
    for s in records["scales"]:
        scales.add_row(s["name"], str(s["bits"]), "yes" if s["signed"] else "no", str(s["significand_bits"]),
                       f"{s['min_positive']:.6g}", f"{s['max']:.6g}", s["source"])
    out.print(scales)
    out.print("Any ExMy / INTn atom, any shifted grid ATOM~SHIFT (e.g. E2M1~0.25) and any UExMy / ExMy / "
              "S1ExMy scale is generated on demand.")
    return 0


def _marked(record: dict[str, Any]) -> str:
    """A name, flagged when its values are a placeholder (the footnote says why)."""
    return f"{record['name']} (placeholder)" if record["placeholder"] else record["name"]
