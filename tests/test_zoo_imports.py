"""zoo's import graph has no cycle and goes only downward through the floor plan below,
counting imports inside functions; the registry imports no model module; every module
stays under the size limit."""

from __future__ import annotations

from pathlib import Path

from support.import_graph import find_cycle, import_graph, module_files, reachable
from support.layers import layering_violations

ROOT = Path(__file__).resolve().parents[1]
MAX_LINES = 400

# zoo's rooms, lowest floor first: a room imports only its own modules and lower floors.
FLOORS = [
    ["zoo.models.config"],
    ["zoo.models.parts"],
    ["zoo.models.pipeline"],
    ["zoo.models.detr", "zoo.models.deformable"],
    ["zoo.models.registry"],
    ["zoo.models"],
    ["zoo.loss", "zoo.weights", "zoo.data", "zoo.detect", "zoo.curves"],
    ["zoo.training", "zoo.export", "zoo"],
    ["zoo.cli"],
    ["zoo.demo", "zoo.__main__"],
]


def test_the_graph_sees_function_level_and_relative_imports(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("from . import b\n")
    (pkg / "a.py").write_text("def f():\n    from pkg.sub import b\n")
    (pkg / "sub" / "b.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import pkg.a\n"
    )
    graph = import_graph(tmp_path, "pkg")
    assert graph == {
        "pkg": set(),
        "pkg.a": {"pkg.sub.b"},
        "pkg.sub": {"pkg.sub.b"},
        "pkg.sub.b": {"pkg.a"},
    }
    assert find_cycle(graph) == ["pkg.a", "pkg.sub.b", "pkg.a"]
    assert find_cycle({"x": {"y"}, "y": set()}) is None


def test_zoo_has_no_import_cycle() -> None:
    graph = import_graph(ROOT, "zoo")
    # The walk reaches imports inside functions (the CLI imports lazily).
    assert "zoo.training.trainer" in reachable(graph, "zoo.cli.training")
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph) or [])


def test_registry_imports_no_model_module() -> None:
    graph = import_graph(ROOT, "zoo")
    assert reachable(graph, "zoo.models.registry.catalog") == {"zoo.models.config"}


def test_modules_stay_small() -> None:
    sizes = {
        name: len(path.read_text().splitlines()) for name, path in module_files(ROOT, "zoo").items()
    }
    assert {name: n for name, n in sizes.items() if n > MAX_LINES} == {}


def test_the_floor_plan_catches_upward_and_sideways_imports() -> None:
    floors = [["p.low"], ["p.mid_a", "p.mid_b"], ["p.high"]]
    graph = {
        "p.low.x": {"p.high.y"},  # up
        "p.mid_a.x": {"p.mid_b.y", "p.low.x", "p.mid_a.z"},  # sideways, down, own room
        "p.mid_a.z": set(),
        "p.mid_b.y": set(),
        "p.high.y": {"p.low.x"},
    }
    assert layering_violations(graph, floors) == ["p.low.x -> p.high.y", "p.mid_a.x -> p.mid_b.y"]


def test_zoo_imports_go_only_downward() -> None:
    graph = import_graph(ROOT, "zoo")
    assert layering_violations(graph, FLOORS) == []
