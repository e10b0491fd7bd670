"""msda_ops' import structure: no cycle and no upward import, counting imports inside
functions; every module placed in a layer and under the size limit."""

from __future__ import annotations

from pathlib import Path

from support.import_graph import find_cycle, import_graph, module_files, upward_imports

SRC = Path(__file__).resolve().parents[1] / "msda_ops" / "src"
MAX_LINES = 400
# Bottom first. A module imports its own layer or lower ones only.
LAYERS = [
    # leaves: the reference, the checks, the toolkit lookup, Triton's sampling and launch
    # shapes, the ONNX lowering
    {
        "msda_ops.reference",
        "msda_ops.checks",
        "msda_ops.cuda_home",
        "msda_ops.triton_sampling",
        "msda_ops.triton_tuning",
        "msda_ops.onnx_lowering",
    },
    {"msda_ops.triton_forward", "msda_ops.triton_backward"},
    {"msda_ops.triton_kernels", "msda_ops.build"},
    # the custom ops (compiled kernels, Triton) and the choice between backends
    {"msda_ops.ops"},
    {"msda_ops.triton_ops"},
    {"msda_ops.dispatch"},
    # the public entry, then what is built on it
    {"msda_ops.functional"},
    {"msda_ops.module", "msda_ops.testing", "msda_ops.availability", "msda_ops.onnx"},
    # the package facade and the command lines
    {"msda_ops", "msda_ops.__main__", "msda_ops.cuda_toolkit"},
]


def test_msda_ops_has_no_import_cycle() -> None:
    graph = import_graph(SRC, "msda_ops")
    assert "msda_ops.build" in graph["msda_ops.ops"]  # an import inside a function counts
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph) or [])


def test_msda_ops_imports_only_downwards() -> None:
    assert upward_imports(import_graph(SRC, "msda_ops"), LAYERS) == []


def test_the_layer_check_finds_upward_imports_and_cycles(tmp_path: Path) -> None:
    """The checks above on a package with a cycle (build <-> toolkit, the one msda_ops had),
    an import from a lower layer to a higher one inside a function, and an unplaced module."""
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "toolkit.py").write_text("def check():\n    from pkg import build\n")
    (pkg / "build.py").write_text("from pkg.toolkit import check\n")
    (pkg / "api.py").write_text("import pkg.build\n")
    (pkg / "new.py").write_text("")
    graph = import_graph(tmp_path, "pkg")
    assert find_cycle(graph) == ["pkg.build", "pkg.toolkit", "pkg.build"]
    layers = [{"pkg.toolkit"}, {"pkg.build"}, {"pkg.api", "pkg"}]
    assert upward_imports(graph, layers) == [
        "pkg.new is in no layer",
        "pkg.toolkit (layer 0) -> pkg.build (layer 1)",
    ]
    assert (
        upward_imports(graph, [{"pkg.toolkit", "pkg.build"}, {"pkg.api", "pkg", "pkg.new"}]) == []
    )
    assert upward_imports({"a": set()}, [{"a"}, {"a"}]) == ["a is in layers 0 and 1"]


def test_modules_stay_small() -> None:
    sizes = {
        name: len(path.read_text().splitlines())
        for name, path in module_files(SRC, "msda_ops").items()
    }
    assert {name: n for name, n in sizes.items() if n > MAX_LINES} == {}
