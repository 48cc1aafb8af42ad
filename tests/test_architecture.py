"""The package's shape: imports point one way, no cycles, one home for MLflow names, small modules.

Read from the source with ``ast`` (nothing is imported or executed), so a violation is reported
with the file and line that adds it. ``LAYERS`` below is the one written statement of the allowed
direction; docs/architecture.md explains it in words.
"""
from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

from hqcbench import arms

PACKAGE = "hqcbench"
ROOT = Path(__file__).resolve().parents[1] / PACKAGE

# unit (top-level module or subpackage of hqcbench) -> the units it may import. Imports inside one
# unit are free (but may not form a cycle). Read it bottom-up: errors, names, hardware, allocator, threads and
# arms (the arm registry, which reads only names) depend on nothing else; config on those but threads; data,
# models, tracking and resources on config; training adds data, models and resources; evaluation adds
# training and tracking; report reads MLflow through tracking and never touches training code; jobs compose
# everything; a study composes jobs; cli sits on top and nothing but __main__ imports it.
_BASE = frozenset({"errors", "names", "hardware", "allocator"})
_LOW = _BASE | {"arms", "config"}
LAYERS: dict[str, frozenset[str]] = {
    "__init__": frozenset({"api"}),
    "errors": frozenset(),
    "names": frozenset(),
    "threads": frozenset(),
    "hardware": frozenset(),
    "allocator": frozenset(),
    "arms": frozenset({"names"}),
    "config": _BASE | {"arms"},
    "data": _LOW,
    "models": _LOW,
    "tracking": _LOW,
    "resources": _LOW | {"threads"},
    "training": _LOW | {"data", "models", "resources", "threads"},
    "evaluation": _LOW | {"data", "models", "resources", "threads", "training", "tracking"},
    "report": _LOW | {"tracking"},
    "jobs": _LOW | {"data", "models", "resources", "threads", "training", "evaluation", "tracking", "report"},
    "study": _LOW | {"data", "models", "resources", "threads", "training", "evaluation", "tracking", "report", "jobs"},
    "cli": _LOW | {"data", "models", "resources", "threads", "training", "evaluation", "tracking", "report", "jobs",
                   "study"},
    "__main__": frozenset({"cli"}),
    # benchmark() for notebooks: the main job's code path from Python; the package imports it on first use
    "api": _LOW | {"data", "models", "resources", "threads", "training", "evaluation", "tracking", "report", "jobs"},
}
MAX_LINES = 400  # a module above this states why in its docstring, in a paragraph starting "Size:"


@dataclass(frozen=True)
class Edge:
    source: str  # dotted module name
    target: str
    line: int


def module_name(path: Path, root: Path) -> str:
    rel = path.relative_to(root.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1] if len(parts) > 1 else parts
    return ".".join(parts)


def unit_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _resolve(name: str, modules: set[str]) -> str | None:
    """The longest known module that ``name`` (a module or module.attribute) starts with."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in modules:
            return candidate
    return None


def import_edges(root: Path) -> tuple[set[str], list[Edge]]:
    """Every import of a package module by a package module, at any depth (function-local too)."""
    files = sorted(root.rglob("*.py"))
    modules = {module_name(f, root) for f in files}
    edges: list[Edge] = []
    for f in files:
        source = module_name(f, root)
        for node in ast.walk(ast.parse(f.read_text(), str(f))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                # from pkg import sub -> the submodule when it is one, else pkg itself
                targets = [f"{node.module}.{alias.name}" for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level > 0:
                # a relative import, resolved against the importing module's package: "from ..config import X"
                # in hqcbench/models/arms.py is hqcbench.config, and the layer rule applies to it as to any
                package = source.split(".") if f.name == "__init__.py" else source.split(".")[:-1]
                base = package[:len(package) - (node.level - 1)] if node.level > 1 else package
                prefix = ".".join(base + ([node.module] if node.module else []))
                targets = [f"{prefix}.{alias.name}" for alias in node.names]
            for target in targets:
                if target.split(".")[0] != root.name:
                    continue
                resolved = _resolve(target, modules)
                if resolved and resolved != source:
                    edges.append(Edge(source, resolved, node.lineno))
    return modules, edges


def layer_violations(edges: list[Edge], layers: dict[str, frozenset[str]] = LAYERS) -> list[str]:
    out = []
    for e in edges:
        src, dst = unit_of(e.source), unit_of(e.target)
        if src == dst:
            continue
        if src not in layers:
            out.append(f"{e.source}: unit {src!r} has no row in LAYERS")
        elif dst not in layers[src]:
            out.append(f"{e.source} (line {e.line}) imports {e.target}: {src} may import only "
                       f"{', '.join(sorted(layers[src])) or 'nothing'}")
    return out


def find_cycles(modules: set[str], edges: list[Edge]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for e in edges:
        graph[e.source].add(e.target)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return cycles


# ---------------------------------------------------------------------------------------- the package
def test_every_unit_has_a_row_in_the_layer_table():
    modules, _ = import_edges(ROOT)
    assert {unit_of(m) for m in modules} <= set(LAYERS)


def test_imports_point_down_the_layers():
    _, edges = import_edges(ROOT)
    assert layer_violations(edges) == []


def test_no_import_cycle():
    modules, edges = import_edges(ROOT)
    assert find_cycles(modules, edges) == []


def test_nothing_imports_the_cli():
    _, edges = import_edges(ROOT)
    assert [e for e in edges if e.target == f"{PACKAGE}.cli" and e.source != f"{PACKAGE}.__main__"] == []


def _docstring_nodes(tree: ast.AST) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                ids.add(id(first.value))
    return ids


def test_mlflow_tag_names_are_spelled_only_in_names_py():
    offenders = []
    for f in sorted(ROOT.rglob("*.py")):
        if f.name == "names.py" and f.parent == ROOT:
            continue
        tree = ast.parse(f.read_text(), str(f))
        docstrings = _docstring_nodes(tree)
        for node in ast.walk(tree):
            if (isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings
                    and node.value.startswith(f"{PACKAGE}.")):
                offenders.append(f"{f.relative_to(ROOT.parent)}:{node.lineno}: {node.value!r}")
    assert offenders == [], "use hqcbench.names for these"


def test_long_modules_say_why():
    unexplained = []
    for f in sorted(ROOT.rglob("*.py")):
        lines = len(f.read_text().splitlines())
        if lines > MAX_LINES:
            doc = ast.get_docstring(ast.parse(f.read_text())) or ""
            if "Size:" not in doc:
                unexplained.append(f"{f.relative_to(ROOT.parent)}: {lines} lines")
    assert unexplained == []


REGISTRY_FILE = ROOT / "arms.py"  # the one place a built-in arm's name is spelled for a comparison


def _arm_literals(node: ast.expr) -> list[str]:
    """The built-in arm names ``node`` spells: a string constant, or a tuple/list/set of them."""
    items = node.elts if isinstance(node, (ast.Tuple, ast.List, ast.Set)) else [node]
    builtin = set(arms.names())
    return [i.value for i in items if isinstance(i, ast.Constant) and i.value in builtin]


def _names_an_arm(node: ast.expr) -> bool:
    """A variable or attribute whose identifier says it holds an arm (``arm``, ``self.arms``, ``other_arm``)."""
    ident = node.id if isinstance(node, ast.Name) else node.attr if isinstance(node, ast.Attribute) else ""
    return "arm" in ident.lower()


def arm_name_comparisons(source: str, filename: str = "<string>") -> list[str]:
    """Comparisons of an arm with a built-in arm's name spelled as a literal (``arm == "cnn"``,
    ``"control" != arm``, ``arm in ("hybrid", ...)``): what such code decides belongs in the arm's
    record in ``hqcbench.arms``, so a new arm is added in one place."""
    out = []
    for node in ast.walk(ast.parse(source, filename)):
        if not isinstance(node, ast.Compare):
            continue
        operands = [node.left, *node.comparators]
        for left, right in zip(operands, operands[1:]):
            for side, other in ((left, right), (right, left)):
                literals = _arm_literals(other)
                if _names_an_arm(side) and literals:
                    out.append(f"{filename}:{node.lineno}: compares {ast.unparse(side)} with {literals}")
    return out


def test_no_arm_is_compared_with_a_builtin_arm_name_outside_the_registry():
    offenders = []
    for f in sorted(ROOT.rglob("*.py")):
        if f != REGISTRY_FILE:
            offenders += arm_name_comparisons(f.read_text(), str(f.relative_to(ROOT.parent)))
    assert offenders == [], "ask the arm's record in hqcbench.arms (or use its name constants)"


# ---------------------------------------------------------------------------------------- the checker
def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / PACKAGE
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    for folder in {p.parent for p in root.rglob("*.py")} | {root}:
        (folder / "__init__.py").touch()
    return root


def test_checker_flags_a_relative_upward_import(tmp_path):
    root = tmp_path / "hqcbench"
    (root / "models").mkdir(parents=True)
    (root / "__init__.py").write_text("")
    (root / "models" / "__init__.py").write_text("")
    (root / "jobs").mkdir()
    (root / "jobs" / "__init__.py").write_text("")
    (root / "jobs" / "run.py").write_text("x = 1\n")
    (root / "models" / "arms.py").write_text("from ..jobs import run\nfrom ..jobs.run import x\n")
    _, edges = import_edges(root)
    assert [(e.source, e.target) for e in edges] == [("hqcbench.models.arms", "hqcbench.jobs.run")] * 2
    assert layer_violations(edges) and "hqcbench.models.arms" in layer_violations(edges)[0]


def test_checker_flags_an_upward_import(tmp_path):
    root = _tree(tmp_path, {"data/datasets.py": "from hqcbench.jobs import run\n", "jobs/run.py": "x = 1\n",
                            "models/arms.py": "from hqcbench import config\n", "config.py": "x = 1\n"})
    _, edges = import_edges(root)
    violations = layer_violations(edges)
    assert len(violations) == 1 and "hqcbench.data.datasets (line 1) imports hqcbench.jobs.run" in violations[0]


def test_checker_flags_a_function_local_import_and_a_cycle(tmp_path):
    root = _tree(tmp_path, {"models/a.py": "def f():\n    from hqcbench.models import b\n",
                            "models/b.py": "import hqcbench.models.a\n"})
    modules, edges = import_edges(root)
    assert find_cycles(modules, edges) == [["hqcbench.models.a", "hqcbench.models.b"]]
    assert layer_violations(edges) == []  # same unit: allowed, but not in a cycle


def test_checker_flags_a_comparison_with_an_arm_name():
    planted = ("def f(arm, cfg, other):\n"
               "    a = arm == 'cnn'\n"
               "    b = 'control' != cfg.arm\n"
               "    c = arm in ('hybrid', 'x')\n"
               "    d = {'hybrid_frozen'} == self_arms if other else 0\n"
               "    e = arm == 'unknown_arm' or other == 'cnn' or arm == CNN\n")
    found = arm_name_comparisons(planted, "planted.py")
    assert [line.split(":")[1] for line in found] == ["2", "3", "4", "5"]
    assert "compares cfg.arm with ['control']" in found[1]
