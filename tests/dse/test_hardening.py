"""Bad inputs, faults and races, one test per kind: one ``dse: error:`` line, exit 2 for a user
mistake and 1 for an environment failure, 0 and silence for a closed pipe, no traceback, and no
file lost or half-written."""

from __future__ import annotations

import errno
import json
import os
import signal
import re
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from dse.cli import main
from dse.package import MANIFEST, MANIFEST_HASH, manifest_hash
from tests.dse.test_packing import package  # noqa: F401  (fixture: a two-tensor package)

ROOT = Path(__file__).resolve().parents[2]


def one_error(capsys, status: int, argv: list[str]) -> str:
    """Run ``dse argv``; assert the status and exactly one error line; return it."""
    capsys.readouterr()
    assert main(argv) == status
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1 and captured.err.startswith("dse: error: "), captured.err
    assert "Traceback" not in captured.err
    return captured.err


def run_dse(args: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dse", *args], cwd=kwargs.pop("cwd", ROOT), capture_output=True,
                          **kwargs)


# --- unreadable inputs ---------------------------------------------------------------------------

@pytest.mark.parametrize(("content", "message"), [
    (bytes(range(256)) * 16, "not UTF-8 text"),
    (b"description: caf\xe9\n", r"not UTF-8 text \(byte 0xe9 at offset 16\)"),
    (b"a: " + b"[" * 100_000 + b"]" * 100_000 + b"\n", "nested too deeply"),
    (b"a: &a [&b [&c [&d [&e [&f [&g [&h [x,x,x,x,x,x,x,x,x],*h,*h,*h,*h,*h,*h,*h,*h],*g,*g,*g,*g,*g,*g,*g,*g],"
     b"*f,*f,*f,*f,*f,*f,*f,*f],*e,*e,*e,*e,*e,*e,*e,*e],*d,*d,*d,*d,*d,*d,*d,*d],*c,*c,*c,*c,*c,*c,*c,*c],"
     b"*b,*b,*b,*b,*b,*b,*b,*b]\n", "expands to more than"),
    (b"model: [unclosed\n", "line 2: not valid YAML"),
])
@pytest.mark.parametrize("command", ["explore", "validate"])
def test_unreadable_scenario_is_one_line(tmp_path, capsys, content, message, command):
    path = tmp_path / "s.yaml"
    path.write_bytes(content)
    err = one_error(capsys, 2, [command, str(path)])
    assert str(path) in err and re.search(message, err), err


def test_a_directory_or_a_file_in_the_wrong_place_is_one_line(tmp_path, capsys):
    (tmp_path / "d.yaml").mkdir()
    assert "not a scenario file" in one_error(capsys, 2, ["explore", str(tmp_path / "d.yaml")])
    (tmp_path / "f").write_text("x")
    one_error(capsys, 2, ["quantize", str(tmp_path / "d.yaml"), "--out", str(tmp_path / "p")])
    one_error(capsys, 2, ["verify", str(tmp_path / "f")])


def test_alias_bomb_in_a_field_is_quoted_briefly(tmp_path, capsys):
    """A 600-byte alias bomb under hardware.fields.batch: the message quotes a few characters of it."""
    bomb = "&a [&b [&c [&d [&e [&f [&g [&h [x,x,x,x,x,x],*h,*h,*h,*h],*g,*g,*g],*f,*f,*f],*e,*e],*d,*d],*c,*c],*b,*b]"
    path = tmp_path / "s.yaml"
    path.write_text("model: {weights: 'synthetic:gaussian'}\ncandidates: {names: [E2M1sE4M3]}\n"
                    f"hardware: {{preset: lpddr5x, fields: {{batch: {bomb}}}}}\nbudgets: {{bpw: [5]}}\n")
    err = one_error(capsys, 2, ["validate", str(path)])
    assert "batch" in err and len(err) < 500


# --- values the checks let through ---------------------------------------------------------------

def small_scenario(tmp_path: Path, **overrides) -> Path:
    rng = np.random.default_rng(0)
    from safetensors.numpy import save_file

    save_file({"model.layers.0.self_attn.q_proj.weight": rng.standard_normal((32, 64)).astype("float32"),
               "model.layers.0.self_attn.k_proj.weight": rng.standard_normal((16, 64)).astype("float32"),
               "model.layers.0.self_attn.v_proj.weight": rng.standard_normal((16, 64)).astype("float32")},
              str(tmp_path / "w.safetensors"))
    doc = {"model": {"weights": "w.safetensors"}, "candidates": {"names": ["E2M1sE4M3", "E2M3sUE4M4"]},
           "hardware": {"preset": "lpddr5x"}, "budgets": {"bpw": [5.0]}, "output": {"plot": False}}
    for key, value in overrides.items():
        doc[key] = value
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


@pytest.mark.parametrize(("budgets", "message"), [
    ({"bpw": [float("nan")]}, "budgets.bpw.*finite"),
    ({"bpw": [float("inf")]}, "budgets.bpw.*finite"),
    ({"bpw": [5.0], "energy_j_per_token_max": float("nan")}, "energy_j_per_token_max.*finite"),
])
def test_non_finite_budgets_are_rejected(tmp_path, capsys, budgets, message):
    err = one_error(capsys, 2, ["explore", str(small_scenario(tmp_path, budgets=budgets))])
    assert re.search(message, err), err


@pytest.mark.parametrize("argv", [["explore", "S", "--jobs", "-1"], ["explore", "S", "--jobs=0"],
                                  ["measure", "E2M1sE4M3", "--weights", "synthetic:gaussian", "--threads", "-2"],
                                  ["measure", "E2M1sE4M3", "--weights", "synthetic:gaussian", "--seed", "-1"],
                                  ["explore", "S", "--show", "nan"], ["explore"], ["nonsense"]])
def test_usage_mistakes_are_one_line(tmp_path, capsys, argv):
    argv = [str(small_scenario(tmp_path)) if a == "S" else a for a in argv]
    capsys.readouterr()
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("dse: error: "), err


# --- broken pipes --------------------------------------------------------------------------------

@pytest.mark.parametrize("args", [["formats", "--json"], ["formats"],
                                  ["measure", "E2M1sE4M3", "E2M3sUE4M4", "--weights", "synthetic:gaussian",
                                   "--shape", "64x256", "--json"]])
def test_closed_pipe_exits_0_quietly(args):
    """``dse ... | head -c 10``: the reader goes away; dse exits 0 and prints nothing on stderr."""
    proc = subprocess.Popen([sys.executable, "-m", "dse", *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    proc.stdout.read(10)
    proc.stdout.close()
    err = proc.stderr.read()
    assert proc.wait(timeout=120) == 0 and err == b"", err


# --- packages: verify checks every field, and never loses a good package ---------------------------

def _edit_manifest(directory: Path, edit, rehash: bool) -> None:
    path = directory / MANIFEST
    manifest = json.loads(path.read_text())
    edit(manifest)
    if rehash:  # a careful editor recomputes the hash: the field checks must still catch it
        manifest[MANIFEST_HASH] = manifest_hash(manifest)
    path.write_text(json.dumps(manifest))


def _scale(key: str, factor: float):
    return lambda m: m["tensors"][0].__setitem__(key, m["tensors"][0][key] * factor)


def _drop(m):
    m["tensors"].pop()
    from dse.package import _totals

    m["totals"] = _totals(m["tensors"])


@pytest.mark.parametrize("rehash", [False, True], ids=["hash-stale", "hash-recomputed"])
@pytest.mark.parametrize(("edit", "message"), [
    (_drop, "does not list"),
    (lambda m: m["tensors"].append(dict(m["tensors"][0])), "same name|totals"),
    (_scale("rel_mse", 10), "rel_mse"),
    (_scale("act_sse", 10), "act_sse"),
    (_scale("sse", 10), "decoded error"),
    (_scale("bpw", 0.5), "bpw"),
    (_scale("bits", 0.5), "bits|totals"),
    (_scale("file_bytes", 2), "file_bytes|totals"),
    (_scale("payload_bits", 2), "payload_bits"),
    (_scale("numel", 2), "numel|totals"),
    (lambda m: m["tensors"][0].__setitem__("shape", m["tensors"][0]["shape"][::-1]), "shape"),
    (lambda m: m["totals"].__setitem__("bpw", 1.0), "totals"),
    (lambda m: m.__setitem__("act_power", 1), "act_sse|decoded"),
])
def test_verify_catches_every_manifest_edit(package, capsys, edit, message, rehash):
    _edit_manifest(package["dir"], edit, rehash)
    err = one_error(capsys, 2, ["verify", str(package["dir"])])
    assert re.search(message if rehash else "edited or damaged", err), err


@pytest.mark.parametrize(("edit", "message"), [
    (lambda m: m["tensors"][0].__setitem__("source", 123), "source is 123"),
    (lambda m: m["tensors"][0].__setitem__("file", None), "file is None"),
    (lambda m: m.__setitem__("act_power", "two"), "act_power is 'two'"),
    (lambda m: m["tensors"][0].__setitem__("file", "../../etc/passwd"), "not a package file name"),
    (lambda m: m.__setitem__("tensors", {}), "tensors is"),
    (lambda m: m.__setitem__("tensors", [[]]), "one or more records"),
    (lambda m: m["tensors"][0].pop("sse"), "'sse' missing"),
])
def test_manifest_with_wrong_types_is_one_line(package, capsys, edit, message):
    _edit_manifest(package["dir"], edit, rehash=True)
    assert message in one_error(capsys, 2, ["verify", str(package["dir"])])


def test_verify_names_the_directory_not_the_manifest(package, capsys):
    err = one_error(capsys, 2, ["verify", str(package["dir"] / MANIFEST)])
    assert "pass the package directory" in err


def _snapshot(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


def test_failed_quantize_keeps_the_good_package(package, tmp_path, capsys):
    """The last tensor gets a block that does not divide its rows: the old package stays whole."""
    before = _snapshot(package["dir"])
    config = yaml.safe_load((tmp_path / "config.yaml").read_text())
    config["assignment"]["b.weight"] = "E2M1sE4M3@48"  # b.weight has 128 columns
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(config))
    one_error(capsys, 2, ["quantize", str(tmp_path / "bad.yaml"), "--out", str(package["dir"])])
    assert _snapshot(package["dir"]) == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no staging left
    assert main(["verify", str(package["dir"])]) == 0


def test_quantize_replaces_a_package_whole_and_refuses_other_directories(package, tmp_path, capsys):
    config = str(tmp_path / "config.yaml")
    assert main(["quantize", config, "--out", str(package["dir"])]) == 0  # replacing a package is fine
    assert main(["verify", str(package["dir"])]) == 0
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    assert "notes.txt" in one_error(capsys, 2, ["quantize", config, "--out", str(tmp_path / "mine")])
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
    assert "is a file" in one_error(capsys, 2, ["quantize", config, "--out", str(tmp_path / "mine" / "notes.txt")])


def test_outputs_respect_the_umask(package, tmp_path, capsys):
    old = os.umask(0o022)
    try:
        assert main(["quantize", str(tmp_path / "config.yaml"), "--out", str(tmp_path / "p2")]) == 0
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "p2").stat().st_mode) == 0o755
    assert {stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "p2").iterdir()} == {0o644}


# --- environment failures: a full disk, a read-only place (exit 1) -------------------------------

def _no_space(monkeypatch) -> None:
    """Every atomic write fails as on a full disk."""
    import dse.atomic

    real = dse.atomic.os.fdopen

    class Full:
        def __init__(self, fd, mode):
            self.fh = real(fd, mode)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.fh.close()

        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device", "x")

    monkeypatch.setattr(dse.atomic.os, "fdopen", Full)


def test_full_disk_during_quantize_is_exit_1_and_keeps_the_package(package, tmp_path, capsys, monkeypatch):
    before = _snapshot(package["dir"])
    _no_space(monkeypatch)
    err = one_error(capsys, 1, ["quantize", str(tmp_path / "config.yaml"), "--out", str(package["dir"])])
    assert "No space left on device" in err and "free disk space" in err
    monkeypatch.undo()
    assert _snapshot(package["dir"]) == before


@pytest.fixture
def read_only_dir(tmp_path) -> Path:
    """A directory nothing can be written in: a read-only tmpfs as root, a 0555 directory otherwise."""
    path = tmp_path / "ro"
    path.mkdir()
    if os.geteuid() != 0:
        path.chmod(0o555)
        yield path
        path.chmod(0o755)
        return
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(path)],
                      capture_output=True).returncode != 0:
        pytest.skip("root, but mount is not permitted: cannot make a read-only place")
    yield path
    subprocess.run(["umount", str(path)], check=True)


def test_read_only_place_is_exit_1(package, tmp_path, capsys, read_only_dir):
    err = one_error(capsys, 1, ["quantize", str(tmp_path / "config.yaml"), "--out", str(read_only_dir / "p")])
    assert "read-only" in err or "permission" in err


# --- explore outputs: one consistent generation ------------------------------------------------------

def _outputs(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if not p.name.startswith(".")}


def _consistent(out: Path) -> list[float]:
    """The output set is one run's: outputs.json lists exactly the files there, with their hashes,
    and the configs are the ones pareto.json's budgets name. Returns the run's budgets."""
    from dse.packing import file_hash

    marker = json.loads((out / "outputs.json").read_text())
    present = {n: b for n, b in _outputs(out).items() if n != "outputs.json"}
    assert {n: file_hash(b) for n, b in present.items()} == marker["files"]
    rows = json.loads(present["pareto.json"])["budgets"]
    budgets = [r["budget_bpw"] for r in rows]
    assert budgets == marker["budgets_bpw"]
    assert {n for n in present if n.startswith("config-")} == {r["config"] for r in rows if r["config"]}
    return budgets


def test_explore_out_naming_a_file_is_one_line(tmp_path, capsys):
    (tmp_path / "o").write_text("x")
    err = one_error(capsys, 2, ["explore", str(small_scenario(tmp_path)), "--out", str(tmp_path / "o"), "--jobs", "1"])
    assert "is a file" in err and (tmp_path / "o").read_text() == "x"


def test_full_disk_during_explore_keeps_the_previous_outputs(tmp_path, capsys, monkeypatch):
    scenario = small_scenario(tmp_path)
    assert main(["explore", str(scenario), "--jobs", "1"]) == 0
    before = _outputs(tmp_path / "out")
    scenario.write_text(scenario.read_text().replace("- 5.0", "- 4.6"))  # another budget: another output set
    _no_space(monkeypatch)
    assert "No space left on device" in one_error(capsys, 1, ["explore", str(scenario), "--jobs", "1"])
    monkeypatch.undo()
    assert _outputs(tmp_path / "out") == before
    assert not [p for p in tmp_path.iterdir() if ".staging-" in p.name]


def test_explore_outputs_respect_the_umask(tmp_path, capsys):
    old = os.umask(0o022)
    try:
        assert main(["explore", str(small_scenario(tmp_path)), "--jobs", "1"]) == 0
    finally:
        os.umask(old)
    modes = {stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "out").iterdir()}
    modes |= {stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / ".dse-cache").rglob("*") if p.is_file()}
    assert modes == {0o644}


def test_explore_into_a_closed_pipe_writes_its_files_and_exits_0(tmp_path):
    """``dse explore S | true``: nothing to print to, but the files are the point."""
    proc = subprocess.Popen([sys.executable, "-m", "dse", "explore", str(small_scenario(tmp_path)), "--jobs", "1"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()
    err = proc.stderr.read()
    assert proc.wait(timeout=300) == 0 and err == b"", err
    _consistent(tmp_path / "out")


def test_two_concurrent_explores_into_one_directory(tmp_path):
    """Runs with different budgets race into one directory: both succeed, and the result is
    exactly one run's output set."""
    scenario = small_scenario(tmp_path)
    other = tmp_path / "other.yaml"
    other.write_text(scenario.read_text().replace("- 5.0", "- 4.6\n  - 6.0"))
    out = str(tmp_path / "shared")
    for _ in range(3):
        procs = [subprocess.Popen([sys.executable, "-m", "dse", "explore", str(s), "--out", out, "--jobs", "1"],
                                  cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
                 for s in (scenario, other)]
        for proc in procs:
            assert proc.wait(timeout=300) == 0, proc.stderr.read()
        assert _consistent(Path(out)) in ([5.0], [4.6, 6.0])


# --- damaged state: caches are checked, and re-measured or re-solved when damaged -----------------------

def _explore(scenario: Path) -> bytes:
    assert main(["explore", str(scenario), "--jobs", "1"]) == 0
    return (scenario.parent / "out" / "pareto.json").read_bytes()


def _entries(tmp_path: Path, what: str) -> list[Path]:
    root = tmp_path / ".dse-cache"
    return sorted((root / "solutions").glob("*.json") if what == "solutions" else
                  (p for p in root.glob("??/*.json")))


@pytest.mark.parametrize(("what", "damage"), [
    ("measurements", lambda p: p.write_text("[]")),
    ("measurements", lambda p: p.write_bytes(os.urandom(200))),
    ("measurements", lambda p: p.write_text(p.read_text()[:40])),
    ("measurements", lambda p: p.write_text(p.read_text().replace('"numel"', '"numel_x"'))),
    ("measurements", lambda p: p.write_text(re.sub(r'"sum_d2": ([0-9.e+-]+)',
                                                   lambda m: f'"sum_d2": {float(m[1]) / 2!r}', p.read_text()))),
    ("solutions", lambda p: p.write_bytes(os.urandom(200))),
    ("solutions", lambda p: p.write_text(re.sub(r'"ilp", \d+', '"ilp", 99', p.read_text()))),
])
def test_damaged_cache_entries_are_redone_not_trusted(tmp_path, capsys, what, damage):
    scenario = small_scenario(tmp_path)
    clean = _explore(scenario)
    for path in _entries(tmp_path, what):
        before = path.read_bytes()
        damage(path)
        assert path.read_bytes() != before
    assert _explore(scenario) == clean


def test_a_resealed_edited_solution_is_rechecked(tmp_path, capsys):
    """Even an edit that recomputes the entry's hash does not pass: the answer is re-verified."""
    from dse.cache import _sealed

    scenario = small_scenario(tmp_path)
    clean = _explore(scenario)
    (path,) = _entries(tmp_path, "solutions")
    entry = json.loads(path.read_text())
    point = entry["body"][0]["point"]
    body = [dict(entry["body"][0], point=[point[0], *[1] * (len(point) - 1)])]  # E2M3sUE4M4 everywhere: 6.5 bpw
    path.write_text(_sealed(entry["key"], body))
    assert _explore(scenario) == clean


def test_solved_sweep_key_includes_the_time_limit(tmp_path, capsys):
    _explore(small_scenario(tmp_path))
    _explore(small_scenario(tmp_path, solver={"time_limit_s": 30}))
    assert len(_entries(tmp_path, "solutions")) == 2


def test_measurements_are_cached_tensor_by_tensor(tmp_path, capsys, monkeypatch):
    """An interrupted cold run keeps every tensor it finished, with all its candidates."""
    import dse.measurement

    calls = []

    def interrupted(*args, **kwargs):
        if len(calls) == 2:  # the first tensor's two candidates are done: stop in the second tensor
            raise KeyboardInterrupt
        calls.append(1)
        return real(*args, **kwargs)

    real = dse.measurement.measure
    monkeypatch.setattr(dse.measurement, "measure", interrupted)
    capsys.readouterr()
    assert main(["explore", str(small_scenario(tmp_path)), "--jobs", "1"]) == 130
    assert capsys.readouterr().err == "dse: interrupted\n"
    assert len(_entries(tmp_path, "measurements")) == 2


def test_damaged_or_out_of_range_activation_files(tmp_path, capsys):
    """A truncated statistics file, statistics of 1e300, and a damaged cached copy of good ones."""
    scenario = small_scenario(tmp_path, model={"weights": "w.safetensors", "activations": "act.npz"})
    names = [f"model.layers.0.self_attn.{r}_proj.weight" for r in "qkv"]
    np.savez(tmp_path / "act.npz", **{n: np.full(64, 1e300) for n in names})
    assert "1e+300" in one_error(capsys, 2, ["explore", str(scenario), "--jobs", "1"])
    np.savez(tmp_path / "act.npz", **{n: np.linspace(0.5, 2.0, 64) for n in names})
    data = (tmp_path / "act.npz").read_bytes()
    (tmp_path / "act.npz").write_bytes(data[:len(data) // 2])
    assert "corrupt activation file" in one_error(capsys, 2, ["explore", str(scenario), "--jobs", "1"])
    (tmp_path / "act.npz").write_bytes(data)
    clean = _explore(scenario)
    (cached,) = (tmp_path / ".dse-cache" / "activations").glob("*.npz")
    cached.write_bytes(cached.read_bytes()[:100])
    assert _explore(scenario) == clean


# --- scenario meaning: nothing accepted and then ignored ----------------------------------------------

@pytest.mark.parametrize(("overrides", "message"), [
    ({"groups": [["q", "kk"]]}, r"groups\[0\]: role 'kk' is not the role of any selected tensor"),
    ({"groups": [["q", "k"], ["k", "v"]]}, r"groups\[1\]: role 'k' is already in groups\[0\]"),
    ({"groups": [["q"]]}, "two or more roles"),
    ({"objective": {"metric": "act_sse"}}, "act_sse needs model.activations"),
    ({"output": {"cache_dir": "f"}}, "output.cache_dir: .*f is a file"),
])
def test_validate_rejects_what_explore_would_ignore_or_fail_on(tmp_path, capsys, overrides, message):
    scenario = small_scenario(tmp_path, **overrides)
    (tmp_path / "f").write_text("x")
    for command in ("validate", "explore"):
        assert re.search(message, one_error(capsys, 2, [command, str(scenario)]))


def test_duplicate_keys_are_an_error(tmp_path, capsys):
    path = small_scenario(tmp_path)
    path.write_text(path.read_text() + "budgets: {bpw: [4.6]}\n")
    assert "budgets is given twice (first at line 1); keep one" in one_error(capsys, 2, ["validate", str(path)])


# --- signals: workers die with their parent ----------------------------------------------------------

def _children(pid: int) -> set[int]:
    out = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        out |= {int(c) for c in (task / "children").read_text().split()}
    return out


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] not in ("Z", "X")
    except OSError:
        return False


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="needs Linux /proc")
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_pool_workers_die_with_their_parent(tmp_path, sig):
    from safetensors.numpy import save_file

    rng = np.random.default_rng(1)
    scenario = small_scenario(tmp_path)
    save_file({f"model.layers.{i}.mlp.up_proj.weight": rng.standard_normal((512, 2048)).astype("float32")
               for i in range(8)}, str(tmp_path / "w.safetensors"))
    doc = yaml.safe_load(scenario.read_text())
    doc["candidates"]["names"] = ["NF4|DD4sUE4M4:aw", "BOF4S|DD4sUE4M4", "DD4sUE4M4:mse"]
    scenario.write_text(yaml.safe_dump(doc))
    proc = subprocess.Popen([sys.executable, "-m", "dse", "explore", str(scenario), "--jobs", "2"], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline and len(_children(proc.pid)) < 2:
        time.sleep(0.05)
    workers = _children(proc.pid)
    assert len(workers) >= 2, "the pool never started"
    time.sleep(0.5)
    proc.send_signal(sig)
    status = proc.wait(timeout=60)
    err = proc.stderr.read().decode()
    if sig == signal.SIGTERM:
        assert status == 128 + signal.SIGTERM and err.startswith("dse: terminated") and err.count("\n") == 1, err
    deadline = time.time() + 20
    while time.time() < deadline and any(_alive(w) for w in workers):
        time.sleep(0.1)
    assert not [w for w in workers if _alive(w)]


@pytest.fixture
def tiny_fs(tmp_path) -> Path:
    """A real 12 KiB file system (tmpfs; needs root and mount permission)."""
    path = tmp_path / "tiny"
    path.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=12k", "tmpfs", str(path)],
                                           capture_output=True).returncode != 0:
        pytest.skip("cannot mount a small tmpfs here; the in-process full-disk tests cover this")
    yield path
    subprocess.run(["umount", str(path)], check=True)


def test_a_real_full_disk_is_exit_1_for_explore_and_quantize(package, tmp_path, capsys, tiny_fs):
    (tmp_path / "scenario").mkdir()
    scenario = small_scenario(tmp_path / "scenario")  # its weights file must not replace the package's
    err = one_error(capsys, 1, ["explore", str(scenario), "--jobs", "1", "--out", str(tiny_fs / "out")])
    assert "No space left on device" in err
    err = one_error(capsys, 1, ["quantize", str(tmp_path / "config.yaml"), "--out", str(tiny_fs / "pkg")])
    assert "No space left on device" in err
    assert not (tiny_fs / "pkg").exists()


def test_non_finite_hardware_field_is_rejected(tmp_path, capsys):
    scenario = small_scenario(tmp_path, hardware={"preset": "lpddr5x", "fields": {"node_nm": float("nan")}})
    assert "node_nm: must be a finite number" in one_error(capsys, 2, ["validate", str(scenario)])
