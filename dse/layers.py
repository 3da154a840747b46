"""Where the bits go: the bits per weight chosen for each (layer, role) at one front point.

Library API::

    from dse.layers import bits_grid, plot_bits
    grid = bits_grid(result, result.front[0])
    grid.bpw[grid.layers.index(3), grid.roles.index("q")]
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dse.atomic import write_atomic
from dse.allocation import FrontPoint
from dse.pipeline import ExploreResult
from dse.render import pyplot
from models.roles import ROLES


@dataclass(frozen=True)
class BitsGrid:
    """Per-layer x role bits of one assignment; tensors outside the layers are listed apart."""

    layers: tuple[int, ...]
    roles: tuple[str, ...]
    """In models.roles.ROLES order."""
    bpw: np.ndarray
    """(layers, roles) bits per weight of the chosen candidate; NaN where the model has no such tensor."""
    candidate: tuple[tuple[str | None, ...], ...]
    """(layers, roles) chosen candidate names (None where there is no tensor)."""
    others: tuple[tuple[str, str, float], ...]
    """(tensor, candidate, bpw) of tensors without a layer (embeddings, lm_head)."""

    def letters(self) -> dict[str, str]:
        """A short key per candidate used (A, B, C... by first use, layers first), for tables and plots."""
        names = [c for row in self.candidate for c in row if c] + [c for _, c, _ in self.others]
        return {name: chr(ord("A") + i) if i < 26 else f"Z{i - 25}" for i, name in enumerate(dict.fromkeys(names))}


def bits_grid(result: ExploreResult, point: FrontPoint) -> BitsGrid:
    """The grid of ``point``'s assignment (bpw from the measured table: exact per tensor)."""
    bpw = {(r.tensor, r.candidate): r.bpw for r in result.measurements[["tensor", "candidate", "bpw"]].itertuples()}
    layered = [t for t in result.tensors if t.layer is not None]
    layers = tuple(sorted({t.layer for t in layered if t.layer is not None}))
    roles = tuple(r for r in ROLES if any(t.role == r for t in layered))
    grid = np.full((len(layers), len(roles)), np.nan)
    names: list[list[str | None]] = [[None] * len(roles) for _ in layers]
    for t in layered:
        assert t.layer is not None
        i, j = layers.index(t.layer), roles.index(t.role)
        c = point.assignment[t.name]
        grid[i, j] = bpw[(t.name, c)] if np.isnan(grid[i, j]) else max(grid[i, j], bpw[(t.name, c)])
        names[i][j] = c
    others = tuple((t.name, point.assignment[t.name], float(bpw[(t.name, point.assignment[t.name])]))
                   for t in result.tensors if t.layer is None)
    return BitsGrid(layers, roles, grid, tuple(tuple(r) for r in names), others)


def plot_bits(grid: BitsGrid, title: str, path: Path) -> Path:
    """Heatmap PNG of the grid: colour = bpw, letter = candidate (legend under the plot)."""
    plt = pyplot()

    keys = grid.letters()
    height = max(2.5, 0.32 * len(grid.layers) + 1.6 + 0.18 * len(keys))
    fig, ax = plt.subplots(figsize=(max(4.5, 0.75 * len(grid.roles) + 2.5), height), dpi=110)
    image = ax.imshow(np.ma.masked_invalid(grid.bpw), cmap="viridis", aspect="auto")
    for i in range(len(grid.layers)):
        for j in range(len(grid.roles)):
            c = grid.candidate[i][j]
            if c is not None:
                ax.text(j, i, keys[c], ha="center", va="center", fontsize=7, color="white")
    ax.set_xticks(range(len(grid.roles)), grid.roles, fontsize=8)
    ax.set_yticks(range(len(grid.layers)), [f"L{n}" for n in grid.layers], fontsize=7)
    ax.set_xlabel("role")
    ax.set_ylabel("layer")
    ax.set_title(title, fontsize=9)
    fig.colorbar(image, ax=ax, label="bits per weight [bit]")
    legend = "\n".join(f"{k} = {name}" for name, k in keys.items())
    fig.text(0.01, 0.01, legend, fontsize=7, va="bottom", family="monospace")
    fig.tight_layout(rect=(0, 0.03 + 0.035 * len(keys), 1, 1))
    out = io.BytesIO()
    fig.savefig(out, format="png", metadata={"Software": None})
    plt.close(fig)
    write_atomic(path, out.getvalue())
    return path
