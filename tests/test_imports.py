"""The project's import graph, read with ``ast`` (function-level imports included): no cycles,
and each weight reader depends on the source interface only, never on the dispatcher."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import networkx as nx

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("dse", "models", "quant", "hwcost")


def _module(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> nx.DiGraph:
    """Module -> project modules it imports anywhere in its body."""
    files = {_module(p): p for package in PACKAGES for p in (ROOT / package).rglob("*.py")}
    graph = nx.DiGraph()
    graph.add_nodes_from(files)
    for name, path in files.items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                # "from pkg import mod" imports the submodule pkg.mod when there is one
                targets = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in files else node.module
                           for a in node.names]
            else:
                continue
            for target in targets:
                while target not in files and "." in target:
                    target = target.rsplit(".", 1)[0]
                if target in files and target != name:
                    graph.add_edge(name, target)
    return graph


def test_the_graph_is_read():
    graph = import_graph()
    assert graph.has_edge("dse.pipeline", "dse.setup") and graph.has_edge("models.sources", "models.gguf_source")
    assert graph.has_edge("models.sources", "models.synthetic")  # a function-level import counts too


def test_no_import_cycles():
    cycles = list(nx.simple_cycles(import_graph()))
    assert cycles == []


def test_readers_depend_on_the_interface_only():
    graph = import_graph()
    for reader in ("models.safetensors_source", "models.gguf_source", "models.ctranslate2", "models.synthetic"):
        assert "models.sources" not in nx.descendants(graph, reader), reader


def test_layers_point_down():
    """quant is the base; hwcost and models build on it; dse on all of them."""
    graph = import_graph()
    for a, b in graph.edges:
        layer_a, layer_b = a.split(".")[0], b.split(".")[0]
        assert (layer_a, layer_b) not in {("quant", "hwcost"), ("quant", "models"), ("quant", "dse"),
                                          ("hwcost", "dse"), ("models", "dse"), ("models", "hwcost")}, (a, b)


def test_starting_dse_leaves_heavy_libraries_for_later():
    """A warm `dse explore` does no work; it must not pay for scipy (0.2-0.3 s), plotting, the
    solver, Dask or numba (~1 s to import and start) at start-up: each is imported where it is used."""
    heavy = ("scipy", "matplotlib", "highspy", "pulp", "distributed", "torch", "numba")
    probe = f"import sys, dse.cli; print([m for m in {heavy!r} if m in sys.modules])"
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=ROOT)
    assert loaded.stdout.strip() == "[]"
