"""The apps stand in layers, each importing only from its own layer and those below, with no import circle
between modules: core < accounts < gpu_nodes < jobs < avatars < videos < chat < talkforge (the project
package: settings, urls, asgi/wsgi and the observability wiring, on top).

Read from the source with ``ast``, every import counts, function-level ones included: a lazy import is
still a dependency. Where a lower app needs something from a higher one at run time, the higher one fills
a registry from its ``AppConfig.ready()`` (jobs/kinds.py ``register``, gpu_nodes/engine_catalog.py).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
LAYERS = ["core", "accounts", "gpu_nodes", "jobs", "avatars", "videos", "chat", "talkforge"]

# (importer, imported) → why it is allowed. Each entry must still exist (a stale one fails the test).
UPWARD_EXCEPTIONS: dict[tuple[str, str], str] = {}


def _modules() -> dict[str, Path]:
    modules = {}
    for layer in LAYERS:
        for path in sorted((ROOT / layer).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


MODULES = _modules()


def _resolve(name: str) -> str | None:
    """The longest project module that ``name`` names (``a.b.func`` → ``a.b``)."""
    parts = name.split(".")
    while parts:
        if ".".join(parts) in MODULES:
            return ".".join(parts)
        parts.pop()
    return None


def _imports(module: str, path: Path) -> dict[str, int]:
    """The project modules ``module`` imports, each with the line of its first import."""
    found: dict[str, int] = {}
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
            # ``from pkg import sub`` imports the submodule; ``from mod import name``, the module.
            names = [f"{base}.{alias.name}" if base else alias.name for alias in node.names]
            names = [name if name in MODULES else base for name in names]
        for name in names:
            target = _resolve(name)
            if target and target != module:
                found.setdefault(target, node.lineno)
    return found


GRAPH = {module: _imports(module, path) for module, path in MODULES.items()}


def _layer(module: str) -> int:
    return LAYERS.index(module.split(".")[0])


def test_no_import_goes_up_the_layers():
    upward = {
        (module, target): line
        for module, targets in GRAPH.items()
        for target, line in targets.items()
        if _layer(target) > _layer(module)
    }
    unexpected = [
        f"{a}:{line} imports {b}"
        for (a, b), line in sorted(upward.items())
        if (a, b) not in UPWARD_EXCEPTIONS
    ]
    assert not unexpected, "imports up the layers (" + " < ".join(LAYERS) + "):\n" + "\n".join(unexpected)
    stale = sorted(set(UPWARD_EXCEPTIONS) - set(upward))
    assert not stale, f"exceptions that no longer happen, remove them: {stale}"


def _circles() -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles = []
    for root in GRAPH:
        if root in index:
            continue
        work = [(root, iter(GRAPH[root]))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(GRAPH[child])))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    circles.append(sorted(component))
    return circles


def test_no_import_circle_between_modules():
    circles = _circles()
    described = [
        " ↔ ".join(circle)
        + "".join(
            f"\n    {a}:{GRAPH[a][b]} imports {b}" for a in circle for b in sorted(GRAPH[a]) if b in circle
        )
        for circle in circles
    ]
    assert not circles, "import circles:\n" + "\n".join(described)


def test_the_reader_sees_function_level_and_relative_imports():
    # The known lazy imports of the apps' ready() are found, and relative imports resolve.
    assert "accounts.deletion" in GRAPH["avatars.apps"]
    assert "jobs.console" in GRAPH["jobs.kinds"]
    assert "gpu_nodes.ssh" in GRAPH["gpu_nodes.connect"]
