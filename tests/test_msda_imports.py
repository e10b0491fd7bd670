"""msda_ops' import structure: no cycle, no upward or sideways import through the floor plan
below (tests/support/layers.py, as for zoo), counting imports inside functions; every module
named in the plan and under the size limit."""

from __future__ import annotations

from pathlib import Path

from support.import_graph import find_cycle, import_graph, module_files
from support.layers import layering_violations

SRC = Path(__file__).resolve().parents[1] / "msda_ops" / "src"
MAX_LINES = 400
# Lowest floor first; each module is its own room: it imports lower floors only.
FLOORS = [
    # leaves: the reference, the checks, the toolkit lookup, Triton's sampling and launch
    # shapes, the ONNX lowering
    [
        "msda_ops.reference",
        "msda_ops.checks",
        "msda_ops.cuda_home",
        "msda_ops.triton_sampling",
        "msda_ops.triton_tuning",
        "msda_ops.onnx_lowering",
    ],
    ["msda_ops.triton_forward", "msda_ops.triton_backward"],
    ["msda_ops.triton_kernels", "msda_ops.build"],
    # the custom ops (compiled kernels, Triton) and the choice between backends
    ["msda_ops.ops"],
    ["msda_ops.triton_ops"],
    ["msda_ops.dispatch"],
    # the public entry, then what is built on it
    ["msda_ops.functional"],
    ["msda_ops.module", "msda_ops.testing", "msda_ops.availability", "msda_ops.onnx"],
    # the package facade and the command lines
    ["msda_ops", "msda_ops.__main__", "msda_ops.cuda_toolkit"],
]


def test_msda_ops_has_no_import_cycle() -> None:
    graph = import_graph(SRC, "msda_ops")
    assert "msda_ops.build" in graph["msda_ops.ops"]  # an import inside a function counts
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph) or [])


def test_msda_ops_imports_only_downwards() -> None:
    graph = import_graph(SRC, "msda_ops")
    planned = {module for floor in FLOORS for module in floor}
    assert set(graph) - planned == set(), "place the new modules in FLOORS"
    assert layering_violations(graph, FLOORS) == []


def test_the_checks_find_the_cycle_and_the_upward_import_msda_ops_had(tmp_path: Path) -> None:
    """build <-> toolkit, the toolkit's import of build inside a function: both are caught."""
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "toolkit.py").write_text("def check():\n    from pkg import build\n")
    (pkg / "build.py").write_text("from pkg.toolkit import check\n")
    (pkg / "api.py").write_text("import pkg.build\n")
    graph = import_graph(tmp_path, "pkg")
    assert find_cycle(graph) == ["pkg.build", "pkg.toolkit", "pkg.build"]
    floors = [["pkg.toolkit"], ["pkg.build"], ["pkg.api", "pkg"]]
    assert layering_violations(graph, floors) == ["pkg.toolkit -> pkg.build"]
    # The same modules side by side on one floor: a sideways import, caught too.
    side_by_side = [["pkg.toolkit", "pkg.build"], ["pkg.api", "pkg"]]
    assert layering_violations(graph, side_by_side) == [
        "pkg.build -> pkg.toolkit",
        "pkg.toolkit -> pkg.build",
    ]


def test_modules_stay_small() -> None:
    sizes = {
        name: len(path.read_text().splitlines())
        for name, path in module_files(SRC, "msda_ops").items()
    }
    assert {name: n for name, n in sizes.items() if n > MAX_LINES} == {}
