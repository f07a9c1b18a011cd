"""What setup.py declares and what `pip install .` brings into this
environment, read without running setup.py (tests/test_cluster_files.py,
tests/test_make_demo.py)."""

import ast
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]


def setup_keywords():
    """{keyword: literal value} of setup.py's `setup(...)` call."""
    tree = ast.parse((ROOT / "setup.py").read_text())
    call = next(
        n
        for n in ast.walk(tree)
        if isinstance(n, ast.Call) and getattr(n.func, "id", None) == "setup"
    )
    return {
        k.arg: ast.literal_eval(k.value)
        for k in call.keywords
        if k.arg in ("version", "install_requires", "extras_require")
    }


SETUP = setup_keywords()


def installed_closure():
    """The installed distributions `pip install .` brings: install_requires and
    theirs, recursively (extras left out)."""
    seen, todo = {}, [Requirement(r) for r in SETUP["install_requires"]]
    while todo:
        req = todo.pop()
        name = canonicalize_name(req.name)
        if name in seen or (req.marker and not req.marker.evaluate({"extra": ""})):
            continue
        try:
            seen[name] = metadata.distribution(req.name)
        except metadata.PackageNotFoundError:
            pytest.skip(f"{req.name} is not installed in this environment")
        todo += [Requirement(r) for r in seen[name].requires or []]
    return seen
