"""The package's import structure (read from the source, nothing imported): no import cycles,
heads independent of models, no private names imported across modules."""

import ast
import os

import pytest

ROOT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "keras_segattn")


def _modules():
    modules = {}
    for folder, _, files in os.walk(ROOT):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                rel = os.path.relpath(path, os.path.dirname(ROOT))[:-3].replace(os.sep, ".")
                modules[rel[:-len(".__init__")] if rel.endswith(".__init__") else rel] = path
    return modules


MODULES = _modules()


def _imports(path):
    """``[(imported module, imported name or None, lineno)]`` of every import in the file
    (function-level ones included), resolved to modules of the package."""
    found = []
    for node in ast.walk(ast.parse(open(path).read())):
        if isinstance(node, ast.Import):
            found += [(alias.name, None, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.append((sub, None, node.lineno) if sub in MODULES
                             else (node.module, alias.name, node.lineno))
    return [(m, n, line) for m, n, line in found if m.split(".")[0] == "keras_segattn"]


def _graph():
    """Module -> modules it imports; a package ``__init__`` is not an edge target for its
    own submodules (``from keras_segattn import heads`` means the ``heads`` package)."""
    graph = {}
    for module, path in MODULES.items():
        targets = set()
        for target, _, _ in _imports(path):
            while target not in MODULES and "." in target:
                target = target.rsplit(".", 1)[0]
            if target != module and not module.startswith(target + "."):
                targets.add(target)
        graph[module] = targets
    return graph


def test_no_import_cycles():
    graph = _graph()
    state, cycles = {}, []

    def visit(node, stack):
        state[node] = "open"
        for target in sorted(graph.get(node, ())):
            if state.get(target) == "open":
                cycles.append(stack[stack.index(target):] + [target])
            elif target not in state:
                visit(target, stack + [target])
        state[node] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not cycles, cycles


@pytest.mark.parametrize("package", ["keras_segattn.heads", "keras_segattn.layers",
                                     "keras_segattn.backbones"])
def test_lower_layers_do_not_import_models(package):
    offenders = [(module, target) for module, targets in _graph().items()
                 if module == package or module.startswith(package + ".")
                 for target in targets if target.startswith("keras_segattn.models")]
    assert not offenders, offenders


def test_no_private_names_imported_across_modules():
    offenders = [
        (module, f"{target}.{name}", line)
        for module, path in MODULES.items() for target, name, line in _imports(path)
        if name and name.startswith("_") and not name.startswith("__") and target != module
        and not target.startswith("keras_segattn.layers._")  # the layers' shared helpers
        and target not in ("keras_segattn._backend",)
    ]
    assert not offenders, offenders
