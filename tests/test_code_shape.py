"""The shape of the code, read from its syntax trees (no module is imported).

- No function body in `klassterfork/` is over `MAX_BODY_LINES` lines: from
  the first statement after the docstring to the end of the `def`.
- No module in `klassterfork/` is over `MAX_MODULE_LINES` lines.
- Nothing in `klassterfork/` or `bench/` imports `tests`.
- Imports follow `LAYERS`: a module imports (at module level or inside a
  function) only modules of its own layer or a lower one, and the `data`
  sub-packages import each other without a cycle.
"""

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "klassterfork"
MAX_BODY_LINES = 60
MAX_MODULE_LINES = 500

# Lowest first. A name covers the module and everything under it; the longest
# match wins. Derived from the imports of the code as it is: e.g. `weights`
# (checkpoint readers) imports no model while `models.two_stream` initialises
# from `weights.init_weights`; `analysis` uses `evaluation.metrics`,
# `training` uses both, `evaluation.inference` builds models and reads data,
# and only `cli` sits above `training`.
LAYERS = [
    ("base", ["klassterfork.files", "klassterfork.exit_codes", "klassterfork.out_of_space",
              "klassterfork.registry"]),
    ("config", ["klassterfork.config"]),
    ("records, transforms", ["klassterfork.data.records",
                             "klassterfork.data.transforms"]),
    ("spec", ["klassterfork.data.spec"]),
    ("reading, conversion", ["klassterfork.data.reading",
                             "klassterfork.data.conversion"]),
    ("pipeline, runtime", ["klassterfork.data.pipeline",
                           "klassterfork.data.runtime"]),
    ("weights", ["klassterfork.weights"]),
    ("models", ["klassterfork.models"]),
    ("evaluation", ["klassterfork.evaluation"]),
    ("analysis", ["klassterfork.analysis"]),
    ("training", ["klassterfork.training"]),
    ("cli", ["klassterfork.cli"]),
]
# Namespace packages with an empty `__init__.py`: in the base layer, but only
# the package itself (they must not cover what is under them).
BASE_PACKAGES = ("klassterfork", "klassterfork.data")
DATA_SUBPACKAGES = ("records", "transforms", "spec", "reading", "conversion",
                    "pipeline", "runtime")


def _python_files(folder):
    return sorted(p for p in folder.rglob("*.py") if "__pycache__" not in p.parts)


def _module_name(path):
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _tree(path):
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def _where(path, line):
    return f"{path.relative_to(ROOT)}:{line}"


def body_lines(node):
    """Lines of a def's body, from the first statement after the docstring
    to the end of the def (a docstring-only body counts 0)."""
    body = node.body
    first = body[0]
    if (isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant)
            and isinstance(first.value.value, str)):
        if len(body) == 1:
            return 0
        first = body[1]
    decorators = getattr(first, "decorator_list", [])
    start = min([first.lineno] + [d.lineno for d in decorators])
    return node.end_lineno - start + 1


def imported_modules(tree, name, is_package):
    """(line, module) for every `import` anywhere in `tree`, relative ones
    resolved against module `name`. `from X import Y` yields `X`, and `X.Y`
    too when that is a module in the package."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = name.split(".")[: len(name.split(".")) - node.level
                                         + (1 if is_package else 0)]
                base = ".".join(parts + ([node.module] if node.module else []))
            found.append((node.lineno, base))
            found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
    return found


def _package_modules():
    return {_module_name(p): p for p in _python_files(PACKAGE)}


def _internal_imports(modules):
    """{module: [(line, imported module)]}, klassterfork modules only; the
    packages a module sits in count as imported (Python runs them)."""
    graph = {}
    for name, path in modules.items():
        targets = []
        for line, target in imported_modules(_tree(path), name,
                                             path.name == "__init__.py"):
            parts = target.split(".")
            for i in range(1, len(parts) + 1):
                if ".".join(parts[:i]) in modules:
                    targets.append((line, ".".join(parts[:i])))
        graph[name] = sorted(set(targets))
    return graph


def layer_of(module):
    """Index into `LAYERS` (longest match), or None when no entry covers it."""
    if module in BASE_PACKAGES:
        return 0
    best, index = "", None
    for i, (_, names) in enumerate(LAYERS):
        for prefix in names:
            if (module == prefix or module.startswith(prefix + ".")) and len(
                    prefix) > len(best):
                best, index = prefix, i
    return index


def test_no_function_body_over_limit():
    offenders = []
    for path in _python_files(PACKAGE):
        for node in ast.walk(_tree(path)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = body_lines(node)
                if n > MAX_BODY_LINES:
                    offenders.append(f"{_where(path, node.lineno)}: {node.name} "
                                     f"has {n} lines")
    assert not offenders, (f"function bodies over {MAX_BODY_LINES} lines (split "
                           "them by role):\n" + "\n".join(offenders))


def test_no_module_over_limit():
    offenders = []
    for path in _python_files(PACKAGE):
        n = len(path.read_text(encoding="utf-8").splitlines())
        if n > MAX_MODULE_LINES:
            offenders.append(f"{path.relative_to(ROOT)}: {n} lines")
    assert not offenders, (f"modules over {MAX_MODULE_LINES} lines (split them "
                           "by role):\n" + "\n".join(offenders))


def test_package_and_bench_never_import_tests():
    offenders = []
    for folder in (PACKAGE, ROOT / "bench"):
        for path in _python_files(folder):
            name = _module_name(path)
            for line, target in imported_modules(_tree(path), name,
                                                 path.name == "__init__.py"):
                if target == "tests" or target.startswith("tests."):
                    offenders.append(f"{_where(path, line)}: imports {target}")
    assert not offenders, "test code imported by shipped code:\n" + "\n".join(
        offenders)


def test_every_module_has_a_layer():
    missing = [m for m in _package_modules() if layer_of(m) is None]
    assert not missing, f"modules not covered by LAYERS (add them): {missing}"


def test_imports_only_go_down_the_layers():
    modules = _package_modules()
    offenders = []
    for name, targets in _internal_imports(modules).items():
        own = layer_of(name)
        for line, target in targets:
            theirs = layer_of(target)
            if own is not None and theirs is not None and theirs > own:
                offenders.append(
                    f"{_where(modules[name], line)}: {name} (layer "
                    f"{LAYERS[own][0]!r}) imports {target} (layer "
                    f"{LAYERS[theirs][0]!r})")
    assert not offenders, "imports up the layers:\n" + "\n".join(offenders)


def _data_part(module):
    parts = module.split(".")
    if len(parts) > 2 and parts[1] == "data" and parts[2] in DATA_SUBPACKAGES:
        return parts[2]
    return None


def find_cycle(edges):
    """A cycle [a, b, ..., a] in the graph {node: set(node)}, or None."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(edges):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_find_cycle_on_hand_made_graphs():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"a"}}) == ["a", "a"]


def test_no_cycle_between_data_subpackages():
    edges, why = {}, {}
    modules = _package_modules()
    for name, targets in _internal_imports(modules).items():
        src = _data_part(name)
        for line, target in targets:
            dst = _data_part(target)
            if src and dst and src != dst:
                edges.setdefault(src, set()).add(dst)
                why.setdefault((src, dst), _where(modules[name], line))
    cycle = find_cycle(edges)
    assert cycle is None, "data sub-packages import each other in a cycle: " + (
        ", ".join(f"{a} -> {b} ({why[a, b]})" for a, b in zip(cycle, cycle[1:])))


@pytest.mark.parametrize("source, expected", [
    ('def f():\n    """Doc."""\n    a = 1\n    return a\n', 2),
    ("def f():\n    a = 1\n\n    return a\n", 3),
    ('def f():\n    """Doc\n    more."""\n', 0),
    ("def f():\n    @dec\n    def g():\n        pass\n    return g\n", 4),
])
def test_body_lines_by_hand(source, expected):
    (node,) = ast.parse(source).body
    assert body_lines(node) == expected


def test_layer_of_by_hand():
    assert LAYERS[layer_of("klassterfork.data.conversion.sources.base")][0] == (
        "reading, conversion")
    assert layer_of("klassterfork.data") == 0
    assert layer_of("klassterfork.newthing") is None
    assert imported_modules(ast.parse("from . import b\nfrom ..c import d\n"),
                            "klassterfork.x.y", False) == [
        (1, "klassterfork.x"), (1, "klassterfork.x.b"),
        (2, "klassterfork.c"), (2, "klassterfork.c.d")]
