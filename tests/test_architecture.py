"""The package's import graph: no cycles, no private name used outside the module that defines it, and no import
from a higher layer (the layers as convlab/__init__.py's docstring lists them).

Every module under ``convlab/`` is parsed with :mod:`ast` (nothing is imported). An edge ``a -> b`` is any
``import``/``from ... import`` of ``b`` in ``a``, at module level *or inside a function* (a function-local import
still makes ``a`` depend on ``b``). Imports under ``if TYPE_CHECKING:`` are annotations only and never run: the
layer check leaves them out, but the cycle check counts them (a circle of annotations still means two modules that
cannot be read, or moved, one without the other). Importing ``convlab.x.y`` also runs ``convlab.x/__init__``;
those implicit parent edges are left out, as Python itself handles a package that is still initialising.

Private names: ``from convlab.x import _name`` and ``x._name`` (``x`` an imported convlab module) are refused in
any module other than the one defining ``_name``. A private *module* whose names are public (``convlab._checks``)
is the package's shared internals and may be imported by name: its leading underscore says "not for learners",
and its public names say "for every module of the package".
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "convlab"


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _runtime_nodes(tree: ast.AST, annotations: bool = False):
    """Every node except those under ``if TYPE_CHECKING:`` (unless ``annotations``)."""
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child.test) and not annotations:
                stack.extend(child.orelse)
            else:
                stack.append(child)


def _absolute(module: str, path: Path, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    base = package.split(".")[: len(package.split(".")) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def _resolve(name: str) -> str:
    """The longest convlab module that ``name`` (a dotted path) starts with."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name


class Imports:
    """Import edges (with line numbers) and private-name uses of one module.

    ``annotations``: count imports under ``if TYPE_CHECKING:`` too (the cycle check does).
    """

    def __init__(self, module: str, path: Path, annotations: bool = False):
        self.module, self.path = module, path
        self.edges: dict[str, int] = {}
        self.private: list[str] = []
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        aliases: dict[str, str] = {}  # local name -> convlab module it is bound to
        nodes = list(_runtime_nodes(tree, annotations))
        for node in nodes:
            if isinstance(node, ast.Import):
                for a in node.names:
                    if a.name.split(".")[0] == "convlab":
                        self._edge(_resolve(a.name), node.lineno)
                        aliases[a.asname or a.name] = a.name if a.asname else a.name.split(".")[0]
            elif isinstance(node, ast.ImportFrom):
                source = _absolute(module, path, node)
                if source.split(".")[0] != "convlab":
                    continue
                for a in node.names:
                    full = f"{source}.{a.name}"
                    if full in MODULES:  # a submodule
                        self._edge(full, node.lineno)
                        aliases[a.asname or a.name] = full
                    else:
                        target = _resolve(source)
                        self._edge(target, node.lineno)
                        if a.name.startswith("_") and target != module:
                            self.private.append(f"{path.name}:{node.lineno}: from {source} import {a.name}")
        for node in nodes:
            if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
                dotted = _dotted(node.value)
                if dotted is None:
                    continue
                head, _, rest = dotted.partition(".")
                if head in aliases:
                    target = ".".join(filter(None, [aliases[head], rest]))
                    if target in MODULES and target != module and f"{target}.{node.attr}" not in MODULES:
                        self.private.append(f"{path.name}:{node.lineno}: {dotted}.{node.attr}")

    def _edge(self, target: str, line: int) -> None:
        if target and target != self.module:
            self.edges.setdefault(target, line)


def _dotted(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        inner = _dotted(node.value)
        return None if inner is None else f"{inner}.{node.attr}"
    return None


GRAPH = {name: Imports(name, path) for name, path in MODULES.items()}
#: The same graph with the imports under ``if TYPE_CHECKING:`` (annotations) counted.
FULL_GRAPH = {name: Imports(name, path, annotations=True) for name, path in MODULES.items()}


def _cycles(graph: dict[str, Imports]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each a list of module names."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v].edges:
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
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_the_parser_sees_the_package():
    assert {"convlab", "convlab.engine", "convlab.transfer", "convlab.augment.functional"} <= set(MODULES)
    assert "convlab.device" in GRAPH["convlab.engine"].edges


def _detail(graph: dict[str, Imports], cycles: list[list[str]]) -> list[list[str]]:
    return [[f"{a} -> {b} (line {graph[a].edges[b]})" for a in c for b in c if b in graph[a].edges] for c in cycles]


def test_no_import_cycle_annotation_imports_included():
    cycles = _cycles(FULL_GRAPH)
    detail = _detail(FULL_GRAPH, cycles)
    assert not cycles, f"import cycles among convlab modules (TYPE_CHECKING imports count): {detail}"


def test_no_private_name_crosses_a_module_line():
    uses = [use for imports in GRAPH.values() for use in imports.private]
    assert not uses, (
        "private names used outside their module (make them public, or move them to convlab._checks): "
        + "; ".join(uses)
    )


def test_the_checker_finds_what_it_should(tmp_path):
    """The checker itself: a function-local import, an annotation import, a private import and a private attribute
    are caught, and a circle through an annotation import is a cycle."""
    code = (
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from convlab.backbones import BackboneSpec\n"
        "def f():\n    from convlab.engine import _hidden\n    from convlab import transfer\n    return transfer._x\n"
    )
    path = tmp_path / "probe.py"
    path.write_text(code)
    probe = Imports("convlab.probe", path)
    assert set(probe.edges) == {"convlab.engine", "convlab.transfer"}
    assert len(probe.private) == 2
    full = Imports("convlab.probe", path, annotations=True)
    assert set(full.edges) == {"convlab.engine", "convlab.transfer", "convlab.backbones"}
    (tmp_path / "empty.py").write_text("")
    rest = {m: Imports(m, tmp_path / "empty.py") for m in ("convlab.engine", "convlab.transfer", "convlab.backbones")}
    rest["convlab.backbones"].edges["convlab.probe"] = 1  # backbones imports the probe at run time
    assert _cycles({"convlab.probe": full, **rest}) == [["convlab.backbones", "convlab.probe"]]
    assert not _cycles({"convlab.probe": probe, **rest})


# The package's layers, lowest first, read from convlab/__init__.py's docstring (the one map of the layers): a
# ``**layer**`` line opens a layer, and every ``:mod:`convlab.x``` or ````convlab.x```` after it, up to the next
# layer, places ``x`` (a module, or a folder with all its modules) in that layer. A module imports only from its own
# layer or those below it, and every module is in exactly one layer (a new module must be placed in the docstring).
# A module's path is what learners type in the notebooks (`from convlab.transfer import freeze`), so folders group
# only what learners never type (cli/) or keep their path (augment/, exercises/, featcache/).
DOCSTRING = ast.get_docstring(ast.parse((PACKAGE / "__init__.py").read_text(encoding="utf-8")))


def _layers(doc: str) -> dict[str, tuple[str, ...]]:
    """Layer name -> the top-level names (modules or folders of ``convlab/``) the docstring places in it, in order."""
    layers: dict[str, tuple[str, ...]] = {}
    for header, body in re.findall(r"^\*\*(.+?)\*\*\n(.*?)(?=^\*\*|\Z)", doc, flags=re.M | re.S):
        named = re.findall(r"(?::mod:`|``)convlab\.(\w+)", body)
        layers[header] = tuple(dict.fromkeys(named))
    return layers


LAYERS = _layers(DOCSTRING)
FACADE = "convlab"  # the package's __init__: lazy names over the modules; `import convlab` runs it whatever one imports


def _layer_of(module: str, layers: dict[str, tuple[str, ...]] = LAYERS) -> int | None:
    """The rank of ``module``'s layer (a folder's modules take the folder's layer), or None if it has none."""
    top = module.removeprefix("convlab.").split(".")[0]
    ranks = [rank for rank, members in enumerate(layers.values()) if top in members]
    return ranks[0] if len(ranks) == 1 else None


def _upward(graph: dict[str, Imports], layers: dict[str, tuple[str, ...]] = LAYERS) -> list[str]:
    """Every import of a module from a layer above its own (the facade aside), as readable lines."""
    names = list(layers)
    return [
        f"{a} ({names[_layer_of(a, layers)]}) imports {b} ({names[_layer_of(b, layers)]}), line {line}"
        for a, imports in graph.items()
        for b, line in imports.edges.items()
        if a != FACADE and b != FACADE and _layer_of(b, layers) > _layer_of(a, layers)
    ]


def test_every_module_has_a_layer_and_imports_only_from_its_own_or_lower_ones():
    unplaced = sorted(m for m in MODULES if m != FACADE and _layer_of(m) is None)
    assert not unplaced, f"place these modules in a layer of convlab/__init__.py's docstring: {unplaced}"
    upward = _upward(GRAPH)
    assert not upward, "imports from a higher layer: " + "; ".join(upward)


def test_the_docstring_places_every_module_in_one_layer_and_names_no_missing_one():
    assert len(LAYERS) == 6 and all(LAYERS.values()), f"convlab/__init__.py's docstring: six layers expected: {LAYERS}"
    named = [top for members in LAYERS.values() for top in members]
    twice = sorted({top for top in named if named.count(top) > 1})
    assert not twice, f"convlab/__init__.py's docstring places these in more than one layer: {twice}"
    tops = {m.removeprefix("convlab.").split(".")[0] for m in MODULES if m != FACADE}
    assert set(named) <= tops, f"convlab/__init__.py's docstring names modules that do not exist: {set(named) - tops}"


def test_the_layer_reader_and_check_catch_what_they_should(tmp_path):
    """The reader places a folder's modules in the folder's layer, refuses a module named in two layers or in none,
    and the order check sees an import from a layer above."""
    doc = "Intro.\n\n**low**\n  :mod:`convlab.a` (x), ``convlab._b``\n\n**high**\n  :mod:`convlab.pkg` (``convlab.a``)"
    layers = _layers(doc)
    assert layers == {"low": ("a", "_b"), "high": ("pkg", "a")}
    assert _layer_of("convlab._b", layers) == 0 and _layer_of("convlab.pkg.inner", layers) == 1
    assert _layer_of("convlab.a", layers) is None  # in two layers
    assert _layer_of("convlab.c", layers) is None  # in none
    assert _layer_of("convlab.cli.train") == list(LAYERS).index("command line")
    assert _layer_of("convlab.augment.functional") == list(LAYERS).index("training, augmentation, evaluation")
    (tmp_path / "empty.py").write_text("")
    graph = {m: Imports(m, tmp_path / "empty.py") for m in ("convlab._b", "convlab.pkg.inner")}
    graph["convlab.pkg.inner"].edges["convlab._b"] = 1  # downward: allowed
    assert not _upward(graph, layers)
    graph["convlab._b"].edges["convlab.pkg.inner"] = 2  # upward: refused
    assert _upward(graph, layers) == ["convlab._b (low) imports convlab.pkg.inner (high), line 2"]


def test_readme_refers_to_the_docstring_for_the_layers():
    """README names the layers in order and points to the docstring for the modules in each."""
    readme = (PACKAGE.parent / "README.md").read_text(encoding="utf-8")
    layout = readme[readme.index("## Layout") :]
    assert "convlab/__init__.py" in layout and "; ".join(LAYERS) in " ".join(layout.split()), (
        f"README's layout: name the layers as convlab/__init__.py's docstring does: {'; '.join(LAYERS)}"
    )
