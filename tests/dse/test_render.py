"""Tables that fit: fixed notation, names never cut, short tensor names; atomic writes honour the umask."""

from __future__ import annotations

import os
import re

from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console

from dse.atomic import write_atomic
from dse.render import Col, fit_table, fixed, short_tensor_names

_NAME = st.from_regex(r"[A-Z][A-Z0-9|@:+().%-]{2,27}", fullmatch=True)


@settings(max_examples=60, deadline=None)
@given(st.floats(1e-9, 1e12), st.booleans())
def test_fixed_is_plain_and_close(x, negative):
    x = -x if negative else x
    text = fixed(x)
    assert "e" not in text.lower() and re.fullmatch(r"-?[\d,]+(\.\d+)?", text)
    assert abs(float(text.replace(",", "")) - x) <= 5e-4 * abs(x) + 5e-10


@settings(max_examples=40, deadline=None)
@given(st.integers(80, 200), st.lists(st.tuples(_NAME, st.lists(_NAME, min_size=1, max_size=6),
                                                st.floats(0, 1e6)), min_size=1, max_size=6))
def test_fit_table_fits_and_never_cuts_a_name(width, rows):
    console = Console(width=width, record=True, highlight=False)
    cols = [Col("candidate", "name"), Col("bpw [bit]"), Col("energy [mJ/token]", optional=True),
            Col("decode area [mm2]", optional=True), Col("formats used", "list")]
    cells = [[name, f"{v:.4f}", fixed(v), fixed(v / 7), ", ".join(f"{n} x{k}" for k, n in enumerate(lst))]
             for name, lst, v in rows]
    console.print(fit_table(console, "t", cols, cells))
    text = console.export_text()
    lines = text.splitlines()
    assert all(len(line) <= width for line in lines)
    flat = "\n".join(lines)
    for name, lst, _ in rows:
        assert name in flat
        for n in lst:
            assert n in flat  # each name whole on one line


def test_narrow_terminal_hides_optional_columns_and_says_so():
    console = Console(width=80, record=True)
    cols = [Col("tensor", "name"), *(Col(f"metric number {i} [unit]", optional=i > 1) for i in range(8))]
    console.print(fit_table(console, "t", cols, [["encoder.layer.0.attention.self.query.weight", *["123.4"] * 8]]))
    text = console.export_text()
    assert "metric number 7 [unit]; widen it" in " ".join(text.split()) and "encoder.layer.0.attention.self.query.weight" in text
    assert all(len(line) <= 80 for line in text.splitlines())


def test_short_tensor_names_rule():
    names = ["model.layers.12.self_attn.q_proj.weight", "model.layers.3.mlp.down_proj.weight",
             "model.embed_tokens.weight", "lm_head.weight", "blk.7.ffn_up.weight",
             "model.layers.0.mlp.experts.5.w1.weight", "x/model.layers.1.self_attn.k_proj.weight"]
    short, rule = short_tensor_names(names)
    assert [short[n] for n in names] == ["L12.q", "L3.down", "embed_tokens", "lm_head", "L7.up", "L0.expert_gate.e5", "x/L1.k"]
    assert "L<layer>.<role>" in rule
    clash, _ = short_tensor_names(["a.layers.1.q_proj.weight", "b.layers.1.q_proj.weight"])
    assert clash == {n: n for n in clash}  # a shared short name is not used


def test_atomic_writes_honour_the_umask(tmp_path):
    old = os.umask(0o027)
    try:
        write_atomic(tmp_path / "a.txt", "x")
    finally:
        os.umask(old)
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o640


def test_a_killed_writers_temp_files_are_removed_and_no_others(tmp_path):
    """A SIGKILL mid-write leaves `.tmp-HOST-PID-*`; the next run removes those of dead processes
    of this host only (a live writer's, or another host's on a shared cache, stay)."""
    import subprocess
    import sys

    from dse import atomic

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True).stdout.strip()
    (tmp_path / "ab").mkdir()
    names = {"dead": f".tmp-{atomic._HOST}-{dead}-00aa11bb22cc",
             "live": f".tmp-{atomic._HOST}-{os.getpid()}-00aa11bb22cc",
             "other host": f".tmp-elsewhere-{dead}-00aa11bb22cc", "old style": ".tmp-00aa11bb22cc", "entry": "x.json"}
    for name in names.values():
        (tmp_path / "ab" / name).write_text("{")
    atomic.remove_dead_temps(tmp_path)
    assert sorted(p.name for p in (tmp_path / "ab").iterdir()) == sorted(v for k, v in names.items() if k != "dead")
    fd, tmp = atomic._new_temp(tmp_path)
    os.close(fd)
    assert os.path.basename(tmp).startswith(f".tmp-{atomic._HOST}-{os.getpid()}-")
