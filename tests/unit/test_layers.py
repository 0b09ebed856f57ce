"""The package layout is a stack: a module imports only from its own package or from packages
in lower layers (top-level and function-level imports alike). See docs/architecture.md."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import REPO

#: Bottom to top. ``features.identity`` is standard-library only and names what the settings
#: hash (the CNN's identity, the extractor version), so it sits with the settings;
#: ``labels`` (the label rule, errors only) sits there too, for the warehouse's feedback, and so
#: does ``features.precision`` (what ``auto`` means in a deployment, recorded with the storage
#: layer), which the settings resolve. ``hardware`` reads ``/proc`` with the standard library.
LAYERS: list[set[str]] = [
    {"errors", "text", "hardware"},
    {"storage", "progress", "tfenv", "config", "features.identity", "features.precision", "labels"},
    {"warehouse", "media"},
    {"features"},
    {"model"},
    {"registry"},
    {"training"},
    {"ingest", "extract", "scoring", "reporting", "monitoring"},
    {"stages"},
    {"cli", "__main__", "__init__"},
]


def _unit(module: str) -> str:
    """The layer unit of a dotted module name: its package (or top-level module)."""
    parts = module.split(".")[1:]
    if not parts:
        return "__init__"
    if ".".join(parts[:2]) in set().union(*LAYERS):
        return ".".join(parts[:2])
    return parts[0]


def _layer(unit: str) -> int:
    for level, units in enumerate(LAYERS):
        if unit in units:
            return level
    raise AssertionError(f"{unit!r} is in no layer: add it to LAYERS (and docs/architecture.md)")


def _imports(path: Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "pipeline":
                found += [(node.lineno, f"pipeline.{alias.name}") for alias in node.names]
            elif node.module.startswith("pipeline."):
                found.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.startswith("pipeline.")]
    return found


def test_every_import_points_down_or_sideways_within_a_package() -> None:
    upward = []
    for path in sorted((REPO / "pipeline").rglob("*.py")):
        module = ".".join(path.relative_to(REPO).with_suffix("").parts)
        source = _unit(module)
        for line, target in _imports(path):
            if _unit(target) != source and _layer(_unit(target)) > _layer(source):
                upward.append(f"{path.relative_to(REPO)}:{line} ({source}) imports {target}")
    assert upward == [], "imports that point up the stack:\n" + "\n".join(upward)


def test_the_layer_check_sees_an_upward_import() -> None:
    assert _layer(_unit("pipeline.training.trainer")) > _layer(_unit("pipeline.registry.gate"))
    assert _unit("pipeline.features.identity") == "features.identity"
    assert _layer(_unit("pipeline.features.identity")) < _layer(_unit("pipeline.media.decode"))
