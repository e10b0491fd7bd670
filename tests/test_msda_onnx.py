"""ONNX export of the kernel op and of MSDeformAttn, checked in onnxruntime on new sizes."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest
import torch
from msda_ops.testing import random_inputs
from torch import Tensor

import msda_ops
from msda_ops import MSDeformAttn, ms_deform_attn, ops
from msda_ops import onnx as msda_onnx

# onnx and onnxruntime are imported by the tests that use them: `make test-gpu` collects
# this file on a machine without them.
NAMES = ["value", "spatial_shapes", "level_start_index", "sampling_locations", "attention_weights"]
# (N, Lq, level sizes): the export's, then two run sizes it never saw.
EXPORT = (2, 6, [(5, 6), (3, 4), (2, 2), (1, 3)])
RUNS = [(1, 4, [(7, 3), (4, 5), (3, 1), (2, 2)]), (3, 9, [(4, 9), (2, 6), (1, 2), (3, 3)])]
HEADS, CHANNELS, POINTS = 2, 3, 3


@pytest.fixture(scope="module", autouse=True)
def cpu_kernel():
    assert ops.kernel_available("cpu", True)


class Op(torch.nn.Module):
    """The op on the default backend: the kernel, on CPU with the kernel built."""

    def forward(self, value, spatial_shapes, level_start_index, locations, weights) -> Tensor:
        return ms_deform_attn(value, spatial_shapes, level_start_index, locations, weights)


def kernel(*args: Tensor) -> Tensor:
    return ms_deform_attn(*args, backend="kernel")


def assert_kernel_traced(program) -> None:
    """What the dynamo exporter traced holds the kernel op, not the reference."""
    targets = {n.target for n in program.exported_program.graph.nodes}
    assert torch.ops.msda_ops.ms_deform_attn_forward.default in targets


def op_inputs(size, n_levels: int, seed: int) -> tuple[Tensor, ...]:
    """Locations in [-0.3, 1.3] (many outside the map), a few far away or infinite."""
    batch, queries, shapes = size
    args = random_inputs(
        batch, queries, HEADS, CHANNELS, shapes[:n_levels], POINTS, seed=seed, spread=0.3
    )
    loc = args[3]
    loc[0, 0, 0, 0, 0] = torch.tensor([-5.0, 0.5])
    loc[-1, -1, -1, -1, -1] = torch.tensor([0.5, 40.0])
    loc[0, -1, 0, -1, 0] = torch.tensor([float("inf"), 0.5])
    loc[-1, 0, -1, 0, -1] = torch.tensor([0.2, -float("inf")])
    return args


def run_onnx(path, args) -> Tensor:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feed = {i.name: a.numpy() for i, a in zip(session.get_inputs(), args, strict=True)}
    return torch.from_numpy(session.run(None, feed)[0])


def load_checked(path, full_check: bool = True) -> Any:
    import onnx

    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=full_check)
    return model


def attributes(node) -> dict[str, Any]:
    import onnx

    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def assert_standard_onnx(path) -> None:
    model = load_checked(path)
    assert {o.domain for o in model.opset_import} <= {"", "ai.onnx"}
    assert "GridSample" in {n.op_type for n in model.graph.node}


def op_dynamic_shapes():
    batch, queries, length = (torch.export.Dim(n) for n in ("N", "Lq", "S"))
    q = {0: batch, 1: queries}
    return ({0: batch, 1: length}, None, None, q, q)


OP_AXES = {
    "value": {0: "N", 1: "S"},
    "sampling_locations": {0: "N", 1: "Lq"},
    "attention_weights": {0: "N", 1: "Lq"},
}


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
@pytest.mark.parametrize("n_levels", [1, 2, 3, 4])
@pytest.mark.parametrize("dynamo", [False, True], ids=["torchscript", "dynamo"])
def test_kernel_op_exports_with_plain_torch_onnx_export(tmp_path, dynamo, n_levels):
    path = tmp_path / "op.onnx"
    args = op_inputs(EXPORT, n_levels, seed=0)
    if dynamo:
        table = msda_onnx.translation_table()
        program = torch.onnx.export(
            Op(),
            args,
            path,
            dynamo=True,
            dynamic_shapes=op_dynamic_shapes(),
            custom_translation_table=table,
        )
        assert_kernel_traced(program)
    else:  # `import msda_ops` registered the symbolic
        torch.onnx.export(
            Op(),
            args,
            path,
            dynamo=False,
            opset_version=17,
            input_names=NAMES,
            dynamic_axes=OP_AXES,
        )
    assert_standard_onnx(path)
    for seed, size in enumerate(RUNS, 1):
        run = op_inputs(size, n_levels, seed)
        expected = kernel(*run)
        torch.testing.assert_close(run_onnx(path, run), expected, rtol=0, atol=1e-5)


def test_torchscript_opset_20_names_the_mode_linear(tmp_path):
    path = tmp_path / "op.onnx"
    msda_onnx.export(
        Op(),
        op_inputs(EXPORT, 2, 0),
        path,
        dynamo=False,
        opset_version=20,
        input_names=NAMES,
        dynamic_axes=OP_AXES,
    )
    nodes = load_checked(path).graph.node
    modes = {attributes(n)["mode"] for n in nodes if n.op_type == "GridSample"}
    assert modes == {b"linear"}
    run = op_inputs(RUNS[1], 2, 1)
    torch.testing.assert_close(run_onnx(path, run), kernel(*run), rtol=0, atol=1e-5)


def random_layer() -> MSDeformAttn:
    torch.manual_seed(0)
    layer = MSDeformAttn(d_model=8, n_levels=3, n_heads=2, n_points=2).eval()
    with torch.no_grad():  # the original initialisation zeroes the weights' projections
        for p in layer.parameters():
            p.normal_(0, 0.5)
    return layer


def layer_inputs(size, seed: int) -> tuple[Tensor, ...]:
    batch, queries, shapes = size
    gen = torch.Generator().manual_seed(seed)
    spatial_shapes = torch.tensor(shapes[:3])
    length = int(spatial_shapes.prod(1).sum())
    return (
        torch.randn(batch, queries, 8, generator=gen),
        torch.rand(batch, queries, 3, 2, generator=gen),
        torch.randn(batch, length, 8, generator=gen),
        spatial_shapes,
        msda_ops.level_start_index(spatial_shapes),
    )


@pytest.mark.parametrize("dynamo", [False, True], ids=["torchscript", "dynamo"])
def test_layer_exports_on_the_default_backend(tmp_path, dynamo):
    path = tmp_path / "layer.onnx"
    layer = random_layer()
    names = ["query", "reference_points", "input_flatten", "shapes", "starts"]
    if dynamo:
        batch, queries, length = (torch.export.Dim(n) for n in ("N", "Lq", "S"))
        q = {0: batch, 1: queries}
        kwargs = {"dynamic_shapes": (q, q, {0: batch, 1: length}, None, None)}
    else:
        axes = {"query": {0: "N", 1: "Lq"}, "reference_points": {0: "N", 1: "Lq"}}
        kwargs = {"input_names": names, "dynamic_axes": {**axes, "input_flatten": {0: "N", 1: "S"}}}
    program = msda_onnx.export(layer, layer_inputs(EXPORT, 0), path, dynamo=dynamo, **kwargs)
    if dynamo:
        assert_kernel_traced(program)
    assert_standard_onnx(path)
    for seed, size in enumerate(RUNS, 1):
        run = layer_inputs(size, seed)
        with torch.no_grad():
            expected = layer(*run)
        torch.testing.assert_close(run_onnx(path, run), expected, rtol=0, atol=1e-5)


class SoftmaxOp(torch.nn.Module):
    """The kernel op on raw logits (its trailing ``softmax`` argument set)."""

    def forward(self, value, spatial_shapes, level_start_index, locations, logits) -> Tensor:
        args = (value, spatial_shapes, level_start_index, locations, logits)
        return torch.ops.msda_ops.ms_deform_attn_forward(*args, True)


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
@pytest.mark.parametrize("dynamo", [False, True], ids=["torchscript", "dynamo"])
def test_softmax_argument_lowers_to_a_softmax_over_levels_and_points(tmp_path, dynamo):
    path = tmp_path / "softmax.onnx"
    args = list(op_inputs(EXPORT, 3, 0))
    args[4] = torch.randn(args[4].shape, generator=torch.Generator().manual_seed(0)) * 3  # logits
    if dynamo:
        kwargs = {"dynamic_shapes": op_dynamic_shapes()}
    else:
        kwargs = {"input_names": NAMES, "dynamic_axes": OP_AXES}
    msda_onnx.export(SoftmaxOp(), tuple(args), path, dynamo=dynamo, **kwargs)
    assert "Softmax" in {n.op_type for n in load_checked(path).graph.node}
    for seed, size in enumerate(RUNS, 1):
        run = list(op_inputs(size, 3, seed))
        run[4] = torch.randn(run[4].shape, generator=torch.Generator().manual_seed(seed)) * 3
        n, lq, m = run[4].shape[:3]
        weights = torch.softmax(run[4].reshape(n, lq, m, -1), -1).reshape(run[4].shape)
        expected = kernel(*run[:4], weights)
        torch.testing.assert_close(run_onnx(path, run), expected, rtol=0, atol=1e-5)


def plugin_node(path) -> tuple[Any, Any]:
    model = load_checked(path, full_check=False)  # no schema for the plugin
    nodes = [n for n in model.graph.node if n.op_type == "MultiscaleDeformableAttnPlugin_TRT"]
    assert len(nodes) == 1
    assert "GridSample" not in {n.op_type for n in model.graph.node}
    return model, nodes[0]


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
@pytest.mark.parametrize("dynamo", [False, True], ids=["torchscript", "dynamo"])
def test_trt_plugin_node_takes_the_five_inputs_in_tensorrt_order(tmp_path, dynamo):
    """Structure only: TensorRT is not installed here, so the plugin never runs."""
    path = tmp_path / "trt.onnx"
    if dynamo:
        kwargs = {"dynamic_shapes": op_dynamic_shapes()}
    else:
        kwargs = {"input_names": NAMES, "dynamic_axes": OP_AXES}
    msda_onnx.export(Op(), op_inputs(EXPORT, 2, 0), path, dynamo=dynamo, plugin="trt", **kwargs)
    model, node = plugin_node(path)
    assert node.domain == "trt.plugins"
    assert ("trt.plugins", 1) in {(o.domain, o.version) for o in model.opset_import}
    assert attributes(node) == {"plugin_version": b"1", "plugin_namespace": b""}
    graph_inputs = [i.name for i in model.graph.input]
    producers = {out: n for n in model.graph.node for out in n.output}
    value, shapes, starts, loc, weights = node.input
    assert [value, loc, weights] == [graph_inputs[0], graph_inputs[3], graph_inputs[4]]
    for name, source in ((shapes, graph_inputs[1]), (starts, graph_inputs[2])):
        cast = producers[name]  # TensorRT's plugin reads int32 shapes
        assert cast.op_type == "Cast" and list(cast.input) == [source]
        assert attributes(cast) == {"to": 6}  # onnx.TensorProto.INT32
    # The plugin returns (N, Lq, M, D); one Reshape makes the op's (N, Lq, M*D).
    (reshape,) = [n for n in model.graph.node if node.output[0] in n.input]
    assert reshape.op_type == "Reshape"
    assert list(reshape.output) == [model.graph.output[0].name]


def test_bad_arguments_are_named(tmp_path):
    with pytest.raises(ValueError, match="opset_version must be >= 16"):
        msda_onnx.export(Op(), op_inputs(EXPORT, 1, 0), tmp_path / "x.onnx", opset_version=15)
    with pytest.raises(ValueError, match="plugin must be one of"):
        msda_onnx.translation_table(plugin="tensorrt")


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
def test_plain_torchscript_export_below_opset_16_says_why(tmp_path):
    with pytest.raises(Exception, match="opset_version >= 16"):
        torch.onnx.export(
            Op(), op_inputs(EXPORT, 1, 0), tmp_path / "x.onnx", dynamo=False, opset_version=15
        )


def test_import_msda_ops_imports_no_onnx_package():
    code = (
        "import sys, msda_ops\n"
        "assert 'msda_ops.onnx' in sys.modules\n"
        "bad = sorted(m for m in sys.modules\n"
        "             if m.split('.')[0] in ('onnx', 'onnxscript', 'onnxruntime', 'onnx_ir'))\n"
        "print(bad)\n"
        "assert not bad\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
