"""The package reads bottom-up along the data flow text -> tokens -> batches -> device -> vectors:
no import cycle, and no module imports one that sits above it (lazy imports included)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import ferris_jax

PACKAGE = Path(ferris_jax.__file__).parent

# The declared order, bottom first. A module may import modules of its own layer or below.
LAYERS = (
    ("errors", "_compat", "_version"),
    ("platforms", "placement", "files"),
    ("ops",),
    ("pooling", "similarity", "quantization"),
    ("weights",),
    ("models",),
    ("tokenize",),
    ("batching",),
    ("loading",),
    ("runtime",),
    ("programs",),
    ("pipeline",),
    ("encoder", "reranker"),
    ("api",),
    ("retrieval", "train"),  # the jobs users embed for, over the public pipeline
    ("integrations",),  # adapters to other frameworks (LangChain, LlamaIndex, Ray Data)
    ("serve",),  # the HTTP server: OpenAI and TEI APIs over the batcher and an Index
    ("doctor", "cli", "__init__", "__main__"),
)
LAYER_OF = {name: i for i, names in enumerate(LAYERS) for name in names}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_module(name: str) -> bool:
    relative = Path(*name.split(".")[1:]) if "." in name else Path()
    return (PACKAGE / relative).with_suffix(".py").is_file() or (
        PACKAGE / relative / "__init__.py"
    ).is_file()


def _imports(path: Path) -> set[str]:
    """The ferris_jax modules `path` imports, at module level or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "ferris_jax")
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = _module_name(path if path.name == "__init__.py" else path.parent)
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            if base.split(".")[0] != "ferris_jax":
                continue
            for alias in node.names:
                child = f"{base}.{alias.name}"
                found.add(child if _is_module(child) else base)
    return found


def _graph() -> dict[str, set[str]]:
    return {_module_name(p): _imports(p) for p in sorted(PACKAGE.rglob("*.py"))}


def _layer(module: str) -> int:
    parts = module.split(".")
    top = parts[1] if len(parts) > 1 else "__init__"
    assert top in LAYER_OF, f"{module} is in no layer: add {top!r} to LAYERS in {__file__}"
    return LAYER_OF[top]


def test_every_module_has_a_layer():
    for module in _graph():
        _layer(module)


def test_no_module_imports_one_above_it():
    upward = [
        f"{module} ({LAYERS[_layer(module)]}) imports {target} ({LAYERS[_layer(target)]})"
        for module, targets in _graph().items()
        for target in targets
        if _layer(target) > _layer(module)
    ]
    assert not upward, "imports against the data flow:\n" + "\n".join(upward)


def test_no_import_cycle():
    graph = _graph()
    state: dict[str, str] = {}
    path: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = "open"
        path.append(module)
        for target in sorted(graph.get(module, ())):
            if target == module:
                continue
            if state.get(target) == "open":
                return [*path[path.index(target) :], target]
            if target not in state and (cycle := visit(target)):
                return cycle
        state[module] = "done"
        path.pop()
        return None

    for module in sorted(graph):
        if module not in state:
            cycle = visit(module)
            assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_checker_sees_lazy_and_relative_imports(tmp_path):
    source = tmp_path / "probe.py"
    source.write_text(
        "def f():\n    from ferris_jax.encoder import Encoder\n"
        "import ferris_jax.ops.impl\nfrom ferris_jax import ops\n"
    )
    assert _imports(source) == {"ferris_jax.encoder", "ferris_jax.ops.impl", "ferris_jax.ops"}


# Modules that may look at devices, and why; placing arrays is `placement.py`'s alone.
DEVICE_LOOKUPS = {
    "ferris_jax.placement": "the one owner of where arrays live",
    "ferris_jax.runtime.backend": "chooses the platform and device, probes capabilities",
    "ferris_jax.platforms": "names the default device's platform",
    "ferris_jax.ops.attention": "asks whether CUDA devices exist (cuDNN attention)",
}
PLACING = re.compile(r"jax\.device_put\(|\.devices\(\)|jax\.devices\(|jax\.local_devices\(")


def test_only_the_placement_puts_arrays_on_devices():
    """No module finds a device on its own: it asks the `Placement` it was given."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = _module_name(path)
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            code = line.split("#", 1)[0]
            if not PLACING.search(code):
                continue
            allowed = module in DEVICE_LOOKUPS and (
                module in ("ferris_jax.placement", "ferris_jax.runtime.backend")
                or "jax.devices(" in code
            )
            if not allowed:
                found.append(f"{path.relative_to(PACKAGE.parent)}:{number}: {line.strip()}")
    assert not found, "devices picked outside ferris_jax/placement.py:\n" + "\n".join(found)
