"""Every shell block of README.md runs as pasted, in bash and (when installed) zsh.

The blocks run in order in a copy of the repository whose ``.venv`` is this test's own
environment, with ``.venv/bin`` on PATH (README says to activate it). The two set-up blocks
create a venv and pip-install into it: they are checked for syntax and must equal the line
``.ci/run`` executes (CI runs them there), rather than reinstalled here. A block written for
the reader's own machines (an upper-case placeholder such as ``SCHEDULER-HOST``: the Dask cluster
set-up, which tests/dse/test_dask.py exercises on a real cluster) is checked for syntax only.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"^```bash\n(.*?)^```", re.S | re.M)
PLACEHOLDER = re.compile(r"\b[A-Z]+-HOST\b")


def blocks() -> list[str]:
    return BLOCK.findall((ROOT / "README.md").read_text())


def _copy(dest: Path) -> Path:
    tracked = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True,
                             text=True, check=True).stdout.split()
    for name in tracked:
        if name.startswith(("out/", "packed/", "fakequant/", "llama/")) or not (ROOT / name).is_file():
            continue
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, dest / name)
    (dest / ".venv").symlink_to(Path(sys.prefix), target_is_directory=True)
    return dest


def test_setup_blocks_are_what_ci_runs():
    setup = [b for b in blocks() if "python3 -m venv" in b]
    assert len(setup) == 2
    ci = (ROOT / ".ci" / "run").read_text()
    assert setup[1].strip() in ci  # the test command
    for block in setup:
        subprocess.run(["bash", "-n", "-c", block], check=True)


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    """One copy for both shells: the second finds the first one's measurement cache warm."""
    return _copy(tmp_path_factory.mktemp("readme"))


@pytest.mark.slow
@pytest.mark.parametrize("shell", ["bash", "zsh"])
def test_every_readme_block_runs_as_pasted(repo, shell):
    if shutil.which(shell) is None:
        pytest.skip(f"{shell} is not installed")
    env = dict(os.environ, PATH=f"{repo / '.venv' / 'bin'}{os.pathsep}{os.environ['PATH']}", COLUMNS="100")
    ran = 0
    for block in blocks():
        if "python3 -m venv" in block:
            continue
        if PLACEHOLDER.search(block):
            subprocess.run([shell, "-n", "-c", block], check=True)
            continue
        flags = ["-e", "-o", "pipefail"] if shell == "bash" else ["-e", "-o", "pipefail", "-o", "nomatch"]
        done = subprocess.run([shell, *flags, "-c", block], cwd=repo, env=env, capture_output=True, text=True,
                              timeout=1200)
        assert done.returncode == 0, f"{shell}: {block}\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
        assert "Traceback" not in done.stderr
        ran += 1
    assert ran >= 7
    assert (repo / "fakequant" / "edge-4.5" / "model.safetensors").exists()
    assert (repo / "llama" / "minilm-6.0" / "llama-quantize-args.txt").read_text().count("--tensor-type") == 36
