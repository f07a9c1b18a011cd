"""`make demo` installs the package without the test extra (`make test`
installs it), and the demo's steps import nothing of the test extra (slow:
they run, smaller, with the test extra's modules made unimportable)."""

import os
import shlex
import shutil
import subprocess
import sys
from importlib import metadata

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.setup_info import ROOT, SETUP, installed_closure


def make_steps(target, venv):
    if shutil.which("make") is None:
        pytest.skip("make not found")
    proc = subprocess.run(
        ["make", "-n", target, f"VENV={venv}"], cwd=ROOT, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.splitlines()


def test_make_demo_installs_the_package_without_the_test_extra(tmp_path):
    venv = tmp_path / "fresh-venv"  # as in a clean clone: nothing installed yet
    installs = [ln for ln in make_steps("demo", venv) if " pip install " in ln]
    assert installs == [
        f"{venv}/bin/python -m pip install -q --upgrade pip",
        f"{venv}/bin/python -m pip install -q -e .",
    ]
    installs = [ln for ln in make_steps("test", venv) if " pip install " in ln]
    assert installs[-1] == f"{venv}/bin/python -m pip install -q -e '.[test]'"
    assert "make test" in (ROOT / ".ci" / "run").read_text()


BLOCKER = """import sys
BLOCKED = set({names!r})
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{{name}}: test extra, not installed by make demo")
sys.meta_path.insert(0, Block())
"""


def modules_only_in_test_extra():
    """Top-level modules of the test extra's distributions that `pip install .`
    does not bring."""
    base = set(installed_closure())
    extra = {
        canonicalize_name(Requirement(r).name) for r in SETUP["extras_require"]["test"]
    }
    return sorted(
        module
        for module, dists in metadata.packages_distributions().items()
        if {canonicalize_name(d) for d in dists} & (extra - base)
        and not (ROOT / module).exists()
    )  # e.g. a stray top-level "tools"


def demo_steps(venv, demo_dir):
    """`make demo`'s commands after the install, as (env, argv) with the
    interpreter left out and demo_data/ moved to `demo_dir`."""
    text = "\n".join(make_steps("demo", venv)).replace("\\\n", " ")
    steps = []
    for line in text.splitlines():
        tokens = shlex.split(line.replace("demo_data", str(demo_dir)))
        if (
            not tokens[-1:]
            or not any(t.endswith("bin/python") for t in tokens)
            or "pip" in tokens
        ):
            continue
        at = next(i for i, t in enumerate(tokens) if t.endswith("bin/python"))
        env = dict(t.split("=", 1) for t in tokens[:at])
        steps.append((env, tokens[at + 1 :]))
    return steps


@pytest.mark.slow
def test_demo_steps_import_nothing_of_the_test_extra(tmp_path):
    blocked = modules_only_in_test_extra()
    assert {"torch", "jax", "apache_beam", "pytest"} <= set(blocked), blocked
    (tmp_path / "block").mkdir()
    (tmp_path / "block" / "sitecustomize.py").write_text(BLOCKER.format(names=blocked))
    env = {
        **os.environ,
        "PYTHONPATH": f"{tmp_path / 'block'}:{ROOT}",
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "KF_EXPERIMENTS": str(tmp_path / "exp"),
    }
    proc = subprocess.run(
        [sys.executable, "-c", "import torch"], env=env, capture_output=True, text=True
    )
    assert "torch: test extra, not installed by make demo" in proc.stderr
    steps = demo_steps(tmp_path / "v", tmp_path / "demo")
    scripts = [argv[0] for _, argv in steps]
    assert scripts == [
        "tools/make_synthetic.py",
        "tools/convert_videos.py",
        "tools/convert_videos.py",
        "runs/train.py",
        "runs/train.py",
    ]
    smaller = {
        "tools/make_synthetic.py": ["--num-train", "16", "--num-val", "8"],
        "runs/train.py": [
            "--set",
            "train_loop.epochs=1",
            "--set",
            "train_loop.progress=false",
        ],
    }
    for step_env, argv in steps:
        extra = [] if "-e" in argv else smaller.get(argv[0], [])
        argv = [str(ROOT / argv[0]), *argv[1:], *extra]
        proc = subprocess.run(
            [sys.executable, *argv],
            cwd=ROOT,
            capture_output=True,
            text=True,  # as make
            env={**env, **step_env},
        )
        assert proc.returncode == 0, f"{argv}\n{proc.stderr[-3000:]}"
        assert "not installed by make demo" not in proc.stderr
