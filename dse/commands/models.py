"""``dse models``: the built-in shape catalog, or one model's linear tensors."""

from __future__ import annotations

import argparse
from typing import Any

from dse import render
from dse.render import console, print_json
from models.catalog import ModelSpec, get_model, list_models


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list catalogued LLM shapes with parameter counts, or one model's tensors",
                       epilog="examples:\n  dse models\n  dse models llama-3.1-8b --json",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", nargs="?", metavar="MODEL_ID", help="show this model's linear tensors")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(handler=run)


def model_record(m: ModelSpec) -> dict[str, Any]:
    """One catalog row: exact parameter counts."""
    return {
        "id": m.id, "family": m.family, "hf_repo": m.hf_repo, "layers": m.layers,
        "linear_tensors": m.n_matrices, "decoder_linear_params": m.decoder_linear_params,
        "linear_params": m.linear_params, "params": m.params, "active_params": m.active_params,
        "advertised_params": m.advertised_params, "advertised_source": m.advertised_source,
        "tied_embeddings": m.tied_embeddings, "source": m.source,
    }


def tensor_records(m: ModelSpec) -> list[dict[str, Any]]:
    """One row per catalog tensor (expert copies folded into ``count``)."""
    return [{"name": t.name, "role": t.role, "layer": t.layer, "out_features": t.out_features,
             "in_features": t.in_features, "count": t.count, "params": t.params} for t in m.tensors]


def run(args: argparse.Namespace) -> int:
    if args.model:
        spec = get_model(args.model)
        if args.json:
            print_json({**model_record(spec), "tensors": tensor_records(spec)})
            return 0
        table = render.table(f"{spec.id}: linear tensors ({spec.source})",
                             ["name", "role", "layer", "out", "in", "copies", "params [M]"], left=2)
        for t in tensor_records(spec):
            table.add_row(t["name"], t["role"], "-" if t["layer"] is None else str(t["layer"]),
                          str(t["out_features"]), str(t["in_features"]), str(t["count"]), f"{t['params'] / 1e6:.3f}")
        console().print(table)
        return 0
    records = [model_record(get_model(m)) for m in list_models()]
    if args.json:
        print_json(records)
        return 0
    table = render.table("Model catalog (shapes from each model's Hugging Face config.json)", [
        "model", "family", "layers", "linear tensors", "decoder linears [B]", "total [B]", "active [B]",
        "advertised [B]", "tied emb."], left=2)
    for r in records:
        table.add_row(r["id"], r["family"], str(r["layers"]), f"{r['linear_tensors']:,}",
                      f"{r['decoder_linear_params'] / 1e9:.3f}", f"{r['params'] / 1e9:.3f}",
                      f"{r['active_params'] / 1e9:.3f}", f"{r['advertised_params'] / 1e9:.3g}",
                      "yes" if r["tied_embeddings"] else "no")
    console().print(table)
    return 0
