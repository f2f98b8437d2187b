"""Imports run one way: no cycles in cnnlab, and the training layers in their order."""

import ast
from pathlib import Path

import cnnlab

ROOT = Path(cnnlab.__file__).parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """module -> the cnnlab modules it imports anywhere (function bodies included)."""
    modules = {_module_name(p): p for p in ROOT.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                base = node.module
                targets = [base] + [f"{base}.{a.name}" for a in node.names]
            else:
                continue
            deps |= {t for t in targets if t in modules}
        graph[name] = deps - {name}
    return graph


def _cycle(graph) -> list[str] | None:
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == "open":
                return stack[stack.index(dep):] + [dep]
            if dep not in state and (found := visit(dep)):
                return found
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_training_stack_has_no_import_cycle():
    graph = import_graph()
    train = {k: {d for d in v if d.startswith("cnnlab.train")} for k, v in graph.items()
             if k.startswith("cnnlab.train.")}
    assert _cycle(train) is None, " -> ".join(_cycle(train))


def test_each_training_layer_imports_only_layers_below_it():
    order = ["config", "schedule", "distributed", "checkpoint", "loop", "logging", "inference",
             "run"]
    graph = import_graph()
    for i, layer in enumerate(order):
        deps = {d.split(".")[2] for d in graph[f"cnnlab.train.{layer}"]
                if d.startswith("cnnlab.train.")}
        assert deps <= set(order[:i]), f"{layer} imports {deps - set(order[:i])}"
    assert not {d for d in graph["cnnlab.train.loop"] if d.startswith("cnnlab.train.run")}


def test_lower_packages_never_import_the_training_stack():
    graph = import_graph()
    for low in ("cnnlab.models", "cnnlab.data", "cnnlab.analysis", "cnnlab.layers"):
        for mod, deps in graph.items():
            if mod == low or mod.startswith(low + "."):
                assert not {d for d in deps if d.startswith("cnnlab.train")}, mod
