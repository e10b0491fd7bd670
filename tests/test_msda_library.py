"""torch.library integration (opcheck, compile, export), backend choice, build and fallback."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings

import pytest
import torch
from msda_ops.testing import level_start_index, random_inputs

import msda_ops
from msda_ops import MSDeformAttn, build, functional, ms_deform_attn, ms_deform_attn_reference, ops


@pytest.fixture(scope="module", autouse=True)
def cpu_kernel():
    assert ops.kernel_available("cpu", True)


def small(requires_grad=True, dtype=torch.float64):
    return random_inputs(
        2,
        4,
        2,
        3,
        [(4, 5), (2, 2), (1, 1)],
        2,
        dtype=dtype,
        seed=0,
        spread=0.2,
        requires_grad=requires_grad,
    )


def test_opcheck_forward_and_backward():
    args = small()
    torch.library.opcheck(torch.ops.msda_ops.ms_deform_attn_forward.default, args)
    grad_output = torch.randn(2, 4, 6, dtype=torch.float64)
    detached = tuple(a.detach() for a in args)
    torch.library.opcheck(
        torch.ops.msda_ops.ms_deform_attn_backward.default, (grad_output, *detached)
    )
    # float32 value with float64 locations: gradients come back in each input's dtype.
    mixed = (args[0].detach().float().requires_grad_(), *args[1:])
    torch.library.opcheck(torch.ops.msda_ops.ms_deform_attn_forward.default, mixed)


def _loss_and_grads(fn, args):
    out = fn(*args)
    grads = torch.autograd.grad((out * out.detach().cos()).sum(), (args[0], args[3], args[4]))
    return out, grads


@pytest.mark.parametrize("backend", ["aot_eager", "inductor"])
def test_compile_fullgraph_matches_eager(backend):
    torch._dynamo.reset()
    args = small()
    compiled = torch.compile(ms_deform_attn, fullgraph=True, backend=backend)
    out, grads = _loss_and_grads(compiled, args)
    out_eager, grads_eager = _loss_and_grads(ms_deform_attn, args)
    torch.testing.assert_close(out, out_eager, rtol=0, atol=1e-12)
    for got, expected in zip(grads, grads_eager, strict=True):
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-12)


def _module_inputs(batch=2):
    shapes = torch.tensor([[6, 8], [3, 4], [2, 2], [1, 1]])
    length = int((shapes[:, 0] * shapes[:, 1]).sum())
    gen = torch.Generator().manual_seed(0)
    query = torch.randn(batch, 5, 32, generator=gen)
    reference = torch.rand(batch, 5, 4, 2, generator=gen)
    features = torch.randn(batch, length, 32, generator=gen)
    return query, reference, features, shapes, level_start_index(shapes)


def test_compile_module_fullgraph():
    torch._dynamo.reset()
    attn = MSDeformAttn(d_model=32, n_heads=4, n_points=2)
    inputs = _module_inputs()
    compiled = torch.compile(attn, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(*inputs), attn(*inputs))


def test_export_module():
    attn = MSDeformAttn(d_model=32, n_heads=4, n_points=2)
    inputs = _module_inputs()
    program = torch.export.export(attn, inputs)
    targets = {node.target for node in program.graph.nodes}
    assert torch.ops.msda_ops.ms_deform_attn_forward.default in targets
    torch.testing.assert_close(program.module()(*_module_inputs()), attn(*_module_inputs()))


def test_double_backward_raises_clearly():
    args = small()
    out = ms_deform_attn(*args, backend="kernel")
    (grad_value,) = torch.autograd.grad(out.square().sum(), args[0], create_graph=True)
    with pytest.raises(RuntimeError, match="double backward"):
        grad_value.sum().backward()


def _spy_reference(monkeypatch):
    calls = []

    def spy(*args, **kwargs):
        calls.append(1)
        return ms_deform_attn_reference(*args, **kwargs)

    monkeypatch.setattr(functional, "ms_deform_attn_reference", spy)
    return calls


def test_backend_precedence(monkeypatch):
    calls = _spy_reference(monkeypatch)
    args = small(requires_grad=False)
    ms_deform_attn(*args)
    assert calls == []  # auto: the kernel
    monkeypatch.setenv("MSDA_OPS_BACKEND", "reference")
    ms_deform_attn(*args)
    assert len(calls) == 1
    with msda_ops.use_backend("kernel"):  # the block beats the environment
        ms_deform_attn(*args)
        assert len(calls) == 1
        ms_deform_attn(*args, backend="reference")  # the keyword beats the block
        assert len(calls) == 2
    monkeypatch.setenv("MSDA_OPS_BACKEND", "cuda")
    with pytest.raises(ValueError, match="MSDA_OPS_BACKEND"):
        ms_deform_attn(*args)


def test_kernel_on_device_without_kernel(monkeypatch):
    assert ops.kernel_available("mps") is False  # silently the reference
    with pytest.raises(RuntimeError, match="no kernel"):
        ops.kernel_available("mps", True)


def test_failed_build_falls_back_with_one_warning(monkeypatch):
    def fail(kind):
        raise build.BuildError("the compiler exploded")

    monkeypatch.setattr(build, "load_library", fail)
    monkeypatch.setattr(ops, "_loaded", {})
    monkeypatch.setattr(ops, "_failures", {})
    monkeypatch.setattr(ops, "_warned", set())
    args = small(requires_grad=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first = ms_deform_attn(*args)
        ms_deform_attn(*args)
        MSDeformAttn(d_model=32, n_heads=4, n_points=2)(*_module_inputs())
    ours = [w for w in caught if "msda_ops" in str(w.message)]
    assert len(ours) == 1, [str(w.message) for w in ours]
    assert "the compiler exploded" in str(ours[0].message)
    torch.testing.assert_close(first, ms_deform_attn_reference(*args), rtol=0, atol=0)
    with pytest.raises(RuntimeError, match="the compiler exploded"):
        ms_deform_attn(*args, backend="kernel")


_SUBPROCESS = """
import warnings, torch, msda_ops
from msda_ops.testing import random_inputs
args = random_inputs(1, 3, 2, 4, [(3, 3)], 2, seed=0)
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    out = msda_ops.ms_deform_attn(*args)
    msda_ops.ms_deform_attn(*args)
print(sum("msda_ops" in str(w.message) for w in caught))
print(torch.equal(out, msda_ops.ms_deform_attn_reference(*args)))
"""


def test_no_compiler_end_to_end(tmp_path):
    """A fresh cache and a compiler that does not exist: the reference, one warning."""
    env = {
        **os.environ,
        "CXX": str(tmp_path / "no-such-compiler"),
        "MSDA_OPS_CACHE_DIR": str(tmp_path),
    }
    proc = subprocess.run(
        [sys.executable, "-c", _SUBPROCESS], env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["1", "True"], proc.stdout + proc.stderr


def test_cache_key_follows_sources_and_torch(tmp_path, monkeypatch):
    csrc = tmp_path / "csrc"
    (csrc / "cpu").mkdir(parents=True)
    (csrc / "cpu" / "kernel.cpp").write_text("int x;\n")
    monkeypatch.setattr(build, "CSRC", csrc)
    monkeypatch.setenv("MSDA_OPS_CACHE_DIR", str(tmp_path / "cache"))
    first = build.build_directory("cpu")
    assert first.parent == tmp_path / "cache"
    assert build.build_directory("cpu") == first
    (csrc / "cpu" / "kernel.cpp").write_text("int y;\n")
    second = build.build_directory("cpu")
    assert second != first
    monkeypatch.setattr(torch, "__version__", "9.9.9")
    assert build.build_directory("cpu") not in (first, second)


_BUILDER = """
import logging
logging.basicConfig(level=logging.INFO)
from msda_ops import build, ops
print(build.compile_library("cpu", verbose=True), flush=True)
assert ops.kernel_available("cpu", True)
"""


def test_concurrent_processes_build_once(tmp_path):
    """Two processes (as DDP ranks would) on an empty cache: one compiles, both load."""
    env = {**os.environ, "MSDA_OPS_CACHE_DIR": str(tmp_path)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _BUILDER],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    libraries = {out.strip().splitlines()[-1] for out in outputs}
    assert len(libraries) == 1, outputs
    builders = [out for out in outputs if "compiling the cpu kernels" in out]
    assert len(builders) == 1, outputs


def test_unwritable_cache_is_a_build_error(tmp_path, monkeypatch):
    """A cache folder that cannot be created ends in BuildError (hence the fallback)."""
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("MSDA_OPS_CACHE_DIR", str(blocker / "cache"))
    with pytest.raises(build.BuildError, match="cannot build"):
        build.compile_library("cpu")


def test_cuda_cache_key_follows_gpu_architecture(tmp_path, monkeypatch):
    """A library built for sm_90 is never reused on sm_80 (no kernel image there)."""
    monkeypatch.setenv("MSDA_OPS_CACHE_DIR", str(tmp_path))
    cpu = build.build_directory("cpu")
    monkeypatch.setenv("TORCH_CUDA_ARCH_LIST", "8.0")
    sm80 = build.build_directory("cuda")
    monkeypatch.setenv("TORCH_CUDA_ARCH_LIST", "9.0")
    sm90 = build.build_directory("cuda")
    # Without the variable, the visible devices decide.
    monkeypatch.delenv("TORCH_CUDA_ARCH_LIST")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 0))
    a100 = build.build_directory("cuda")
    assert build.cuda_arch_list() == "8.0+PTX"
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    h100 = build.build_directory("cuda")
    assert len({sm80, sm90, a100, h100}) == 4
    assert build.build_directory("cpu") == cpu  # the CPU library does not depend on the GPU


def test_cuda_build_without_gpu_says_what_to_set(monkeypatch, capsys):
    """No GPU and no TORCH_CUDA_ARCH_LIST: a message naming the variable, not an IndexError."""
    monkeypatch.delenv("TORCH_CUDA_ARCH_LIST", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert build.main(["--kind", "cuda"]) == 1
    err = capsys.readouterr().err
    assert "TORCH_CUDA_ARCH_LIST" in err and "index" not in err


def test_every_kernel_source_and_header_ships():
    """The sources compile on the user's machine: each file under csrc is package data."""
    import fnmatch

    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    root = build.CSRC.parents[2]  # msda_ops/
    config = tomllib.loads((root / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["msda_ops"]
    files = [p.relative_to(build.PACKAGE).as_posix() for p in build.CSRC.rglob("*") if p.is_file()]
    assert "csrc/cuda/kernels.cuh" in files and "csrc/msda_sampling.h" in files
    missing = [f for f in files if not any(fnmatch.fnmatchcase(f, p) for p in patterns)]
    assert missing == [], f"not in package-data: {missing}"
