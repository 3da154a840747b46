"""``dse export``: a config as a fake-quantized checkpoint, or as llama.cpp quantization overrides."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.text import Text

from dse.export import export_fakequant, write_llama_cpp
from dse.render import console

EXAMPLES = """examples:
  dse export out/edge/config-4.5000.yaml --to fakequant --out fakequant/edge-4.5
  dse export out/gguf-types/config-6.0000.yaml --to llama.cpp --out llama/minilm-6.0
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export a config: dequantized safetensors, or llama.cpp --tensor-type overrides",
                       description="Export a config written by dse explore for other tools.", epilog=EXAMPLES,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", help="a config-*.yaml written by dse explore")
    p.add_argument("--to", required=True, choices=("fakequant", "llama.cpp"),
                   help="fakequant: model.safetensors of dequantized weights (source names and dtypes) + config.json; "
                        "llama.cpp: llama-quantize-args.txt with one --tensor-type per tensor")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory")
    p.add_argument("--weights", default=None, metavar="SOURCE",
                   help="weight source (default: the config's; fakequant only)")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    out = console()
    if args.to == "llama.cpp":
        path = write_llama_cpp(args.config, Path(args.out))
        out.print(Text(f"wrote {path}; pass its lines to llama-quantize, e.g.\n"
                       f"  llama-quantize $(cat {path}) model-f16.gguf model-mixed.gguf q8_0"))
        return 0
    with Progress(TextColumn("exporting tensors"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=out, transient=True) as progress:
        task = progress.add_task("", total=None)
        summary = export_fakequant(args.config, Path(args.out), weights=args.weights,
                                   on_tensor=lambda _: progress.advance(task))
    out.print(Text(f"wrote {summary['checkpoint']}: {summary['quantized']} tensors dequantized, "
                   f"{summary['copied_tensors']} copied as they are; plus {', '.join(summary['files']) or 'no other files'}"))
    return 0
