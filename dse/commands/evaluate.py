"""``dse evaluate``: measured output error of a config or a uniform candidate against the unquantized model."""

from __future__ import annotations

import argparse
from dataclasses import asdict
from pathlib import Path

from dse.evaluate import evaluate_assignments, uniform_assignment
from dse.render import console, print_json, table
from quant.errors import DseError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="quantize a config or one candidate end to end and measure the model's "
                                        "output error (1-cos for encoders, KL and perplexity for decoders)")
    p.add_argument("target", metavar="CONFIG|CANDIDATE",
                   help="a config-*.yaml written by dse explore, or a candidate name applied to every tensor")
    p.add_argument("--weights", default=None, metavar="SOURCE",
                   help="model with a forward pass: minilm, smollm2, a Llama/Qwen2 .gguf or an HF checkpoint "
                        "directory (default for a config: its weights)")
    p.add_argument("--text", default=None, metavar="FILE",
                   help="UTF-8 text, one sample per line (encoders: one sentence each; decoders read the lines "
                        "as running text); default: the built-in held-out sentences")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from models.texts import read_text_file

    texts = read_text_file(args.text) if args.text else None
    target = Path(args.target)
    if target.suffix in (".yaml", ".yml") or target.exists():
        from dse.package import load_config

        config = load_config(target)
        if args.weights is None and len(config.weights) != 1:
            raise DseError(f"{target}: the config names {len(config.weights)} weight sources; "
                           "pick the one to run with --weights")
        spec = args.weights or config.weights[0][1]
        assignment = {name: c.name for name, c in config.assignment.items()}
        label = str(target)
    else:
        if args.weights is None:
            raise DseError("evaluate: --weights SOURCE is required with a candidate (e.g. --weights minilm)")
        spec = args.weights
        assignment = uniform_assignment(spec, args.target)
        label = f"{next(iter(assignment.values()))} on every tensor"
    [result] = evaluate_assignments(spec, [assignment], texts)
    record = {"target": label, "weights": spec, "text": args.text or "built-in held-out", **asdict(result)}
    if args.json:
        print_json(record)
        return 0
    if result.metric == "KL":
        out = table(f"Output error: {label}", ["weights", "bpw [bit]", "KL [nats/token]", "perplexity",
                                                 "reference perplexity"])
        out.add_row(spec, f"{result.bpw:.4f}", f"{result.output_error:.4g}", f"{result.perplexity:.3f}",
                    f"{result.reference_perplexity:.3f}")
    else:
        out = table(f"Output error: {label}", ["weights", "bpw [bit]", "1 - cos [ppm]"])
        out.add_row(spec, f"{result.bpw:.4f}", f"{result.output_error * 1e6:,.0f}")
    console().print(out)
    return 0
