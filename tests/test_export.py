"""zoo.export and ``zoo export``: ONNX files run in onnxruntime and agree with PyTorch at
batch and image sizes not used at export; the TensorRT variant holds the plugin node;
``.pt2`` programs reload and agree too."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
import torch
from support.tiny import randomize_, tiny_model

import zoo
from zoo.cli import main as run
from zoo.export import (
    EXAMPLE_SIZE,
    OutputsOnly,
    export_onnx,
    export_pt2,
    load_onnx_session,
    run_onnx,
)

# Neither the traced batch (2) nor the traced size EXAMPLE_SIZE.
CHECK_SHAPES = [(1, 96, 128), (3, 192, 136)]
assert all(s[1:] != EXAMPLE_SIZE for s in CHECK_SHAPES)
FAST = {"ddetr"}  # the slower exporters in `make test` (the TorchScript one runs them all)


def _model(name: str) -> torch.nn.Module:
    model = tiny_model(name)
    randomize_(model, seed=1)
    return model.eval()


def _assert_agrees(model: torch.nn.Module, run_exported) -> None:
    gen = torch.Generator().manual_seed(3)
    for n, h, w in CHECK_SHAPES:
        images = torch.randn(n, 3, h, w, generator=gen)
        with torch.no_grad():
            want = OutputsOnly(model)(images)
        got = run_exported(images)
        for name, g, ref in zip(("pred_logits", "pred_boxes"), got, want, strict=True):
            assert g.shape == ref.shape, (name, (n, h, w))
            torch.testing.assert_close(g, ref, rtol=0, atol=1e-4, msg=f"{name} at {(n, h, w)}")


@pytest.mark.parametrize("name", zoo.list_variants())
def test_onnx_runs_in_onnxruntime_at_other_sizes(name: str, tmp_path: Path) -> None:
    model = _model(name)
    path = export_onnx(model, tmp_path / "m.onnx")
    graph = onnx.load(str(path)).graph
    ops = {node.op_type for node in graph.node}
    assert not any(node.domain.startswith("msda") for node in graph.node)
    if name.startswith("ddetr"):
        assert "GridSample" in ops  # the deformable attention, lowered to standard ONNX
    session = load_onnx_session(path)
    _assert_agrees(model, lambda x: run_onnx(session, x))


@pytest.mark.parametrize(
    "name",
    [pytest.param(n, marks=() if n in FAST else pytest.mark.slow) for n in zoo.list_variants()],
)
def test_onnx_dynamo_exporter_runs_at_other_sizes(name: str, tmp_path: Path) -> None:
    model = _model(name)
    path = export_onnx(model, tmp_path / "m.onnx", dynamo=True)
    session = load_onnx_session(path)
    _assert_agrees(model, lambda x: run_onnx(session, x))


def test_dynamo_below_opset_18_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="opset >= 18"):
        export_onnx(_model("ddetr"), tmp_path / "m.onnx", dynamo=True, opset=17)
    with pytest.raises(ValueError, match="msda_op"):
        export_onnx(_model("ddetr"), tmp_path / "m.onnx", msda_op="tensorrt")  # type: ignore[arg-type]


def test_trt_export_holds_the_plugin_node(tmp_path: Path) -> None:
    model = _model("ddetr")
    graph = onnx.load(str(export_onnx(model, tmp_path / "m.onnx", msda_op="trt"))).graph
    plugins = [n for n in graph.node if n.op_type == "MultiscaleDeformableAttnPlugin_TRT"]
    # One per deformable attention: encoder self-attention and decoder cross-attention.
    assert len(plugins) == 1 + 2
    assert "GridSample" not in {n.op_type for n in graph.node}
    dims = graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in dims] == ["batch", 3, "height", "width"]


@pytest.mark.parametrize(
    "name",
    [pytest.param(n, marks=() if n in FAST else pytest.mark.slow) for n in zoo.list_variants()],
)
def test_pt2_reloads_and_runs_at_other_sizes(name: str, tmp_path: Path) -> None:
    model = _model(name)
    program = torch.export.load(str(export_pt2(model, tmp_path / "m.pt2"))).module()
    _assert_agrees(model, program)


def test_export_command_writes_a_checked_onnx_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    zoo.save_pretrained(_model("ddetr-two-stage"), tmp_path / "model")
    out = tmp_path / "model.onnx"
    assert run(["export", str(tmp_path / "model"), str(out), "--check"]) == 0
    printed = capsys.readouterr().out
    assert out.is_file() and "onnxruntime vs PyTorch" in printed
    error = float(printed.rsplit("difference", 1)[1])
    assert error < 1e-4
