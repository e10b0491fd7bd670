"""Backend choice on CUDA (kernel, else Triton, else reference; one warning saying why),
``msda_ops.backends()`` and ``python -m msda_ops``, and msda_ops without Triton.

The CUDA choice is decided by :func:`msda_ops.dispatch.auto_backend` from what can be
loaded; here the loaders are replaced so every branch runs on a machine without a GPU.
"""

from __future__ import annotations

import re
import subprocess
import sys
import warnings

import pytest

import msda_ops
from msda_ops import availability, dispatch, ops


@pytest.fixture
def fresh_dispatch(monkeypatch):
    """No warning given yet and Triton's availability not yet known."""
    monkeypatch.setattr(dispatch, "_warned", set())
    monkeypatch.setattr(dispatch, "_triton_state", {})
    return monkeypatch


def _no_cuda_kernel(monkeypatch, reason="no CUDA toolkit (nvcc) found"):
    monkeypatch.setattr(ops, "load", lambda kind: False)
    monkeypatch.setattr(ops, "_failures", {"cuda": reason})


def _choose_twice(device_type, half_or_float):
    """auto's choice for two calls, and the msda_ops warnings they gave."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first = dispatch.auto_backend(device_type, half_or_float)
        second = dispatch.auto_backend(device_type, half_or_float)
    assert first == second
    return first, [str(w.message) for w in caught if "msda_ops" in str(w.message)]


def test_cuda_prefers_the_compiled_kernel_silently(fresh_dispatch):
    fresh_dispatch.setattr(ops, "load", lambda kind: kind == "cuda")
    assert _choose_twice("cuda", True) == ("kernel", [])


def test_cuda_without_kernel_runs_triton_and_says_why(fresh_dispatch):
    _no_cuda_kernel(fresh_dispatch)
    fresh_dispatch.setattr(dispatch, "triton_unavailable_reason", lambda: None)
    chosen, messages = _choose_twice("cuda", True)
    assert chosen == "triton"
    assert len(messages) == 1, messages
    assert "Triton kernels" in messages[0] and "no CUDA toolkit (nvcc) found" in messages[0]
    assert "cuda-toolkit[nvcc,cccl]" in messages[0]  # how to get the faster one


def test_cuda_float64_without_kernel_runs_the_reference(fresh_dispatch):
    _no_cuda_kernel(fresh_dispatch)
    fresh_dispatch.setattr(dispatch, "triton_unavailable_reason", lambda: None)
    chosen, messages = _choose_twice("cuda", False)
    assert chosen == "reference"
    assert len(messages) == 1 and "float64" in messages[0], messages


def test_cuda_without_kernel_or_triton_runs_the_reference(fresh_dispatch):
    _no_cuda_kernel(fresh_dispatch, reason="ninja is not installed (pip install ninja)")
    fresh_dispatch.setattr(
        dispatch,
        "triton_unavailable_reason",
        lambda: "triton is not installed (pip install triton)",
    )
    chosen, messages = _choose_twice("cuda", True)
    assert chosen == "reference"
    assert len(messages) == 1, messages
    assert "ninja is not installed" in messages[0] and "triton is not installed" in messages[0]


def test_cpu_choice_is_unchanged(fresh_dispatch):
    assert _choose_twice("cpu", True) == ("kernel", [])
    assert _choose_twice("mps", True) == ("reference", [])


def test_backends_report_this_machine():
    rows = msda_ops.backends()
    assert all(isinstance(r, msda_ops.BackendStatus) for r in rows)
    cpu = {r.backend: r for r in rows if r.device == "cpu"}
    assert set(cpu) == {"kernel", "triton", "reference"}
    assert cpu["reference"].available
    assert cpu["kernel"].available  # the suite builds it (test_msda_library)
    assert not cpu["triton"].available and "CUDA" in cpu["triton"].detail
    assert availability.auto_choice(rows, "cpu") == "kernel"


def test_backends_report_a_missing_toolchain(monkeypatch):
    monkeypatch.setattr(ops, "_loaded", {})
    monkeypatch.setenv("MSDA_OPS_CACHE_DIR", "/nonexistent/msda-cache")  # nothing built
    monkeypatch.setattr(availability, "_ninja", lambda: None)
    status = availability._kernel_status("cpu")
    assert not status.available and "ninja (pip install ninja)" in status.detail


def test_python_m_msda_ops_prints_the_table():
    proc = subprocess.run(
        [sys.executable, "-m", "msda_ops"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert "cpu: auto runs" in proc.stdout
    assert "reference  yes" in proc.stdout


_WITHOUT_TRITON = """
import sys
sys.modules["triton"] = None  # import triton now raises ImportError
import torch, msda_ops
from msda_ops.testing import random_inputs
args = random_inputs(1, 3, 2, 4, [(3, 3)], 2, seed=0)
out = msda_ops.ms_deform_attn(*args, backend="reference", softmax=True)
print(tuple(out.shape))
print([r.detail for r in msda_ops.backends() if r.backend == "triton"])
try:
    msda_ops.ms_deform_attn(*args, backend="triton")
except RuntimeError as exc:
    print("raised:", exc)
"""


def test_msda_ops_works_without_triton():
    proc = subprocess.run(
        [sys.executable, "-c", _WITHOUT_TRITON], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "(1, 3, 8)"
    assert "triton is not installed" in lines[1]
    assert lines[2].startswith("raised:") and "triton backend is unavailable" in lines[2]


def test_first_use_build_says_what_where_and_how_long(tmp_path, monkeypatch, capfd):
    """The one stderr line of a first-use build (the compiler itself replaced by a stub)."""
    from torch.utils import cpp_extension

    from msda_ops import build

    monkeypatch.setenv("MSDA_OPS_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(cpp_extension, "load", lambda **kwargs: None)
    directory = build.build_directory("cpu")
    build.compile_library("cpu")
    line = capfd.readouterr().err
    expected = rf"msda_ops: compiling the cpu kernels into {re.escape(str(directory))} \(.*\) \.\.\. done in \d+ s\n"
    assert re.fullmatch(expected, line), line

    def broken(**kwargs):
        raise RuntimeError("error: expected ';'")

    monkeypatch.setattr(cpp_extension, "load", broken)
    monkeypatch.setenv("MSDA_OPS_CACHE_DIR", str(tmp_path / "second"))
    with pytest.raises(build.BuildError, match="compiling the cpu kernels failed"):
        build.compile_library("cpu")
    assert re.fullmatch(
        r"msda_ops: compiling .* \.\.\. failed \(log: .*build\.log\)\n", capfd.readouterr().err
    )


_WAITER = """
from msda_ops import build
print(build.compile_library("cpu"), flush=True)
"""


def test_a_second_process_says_it_is_waiting(tmp_path, monkeypatch):
    """While one process holds the build lock, another says it waits, then loads its result."""
    from msda_ops import build

    monkeypatch.setenv("MSDA_OPS_CACHE_DIR", str(tmp_path))
    directory = build.build_directory("cpu")
    library = directory / (directory.name.split("-")[0] + ".so")
    with build._exclusive(directory.with_name(directory.name + ".lock")):
        waiter = subprocess.Popen(
            [sys.executable, "-c", _WAITER],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert waiter.stderr is not None
        first = waiter.stderr.readline()  # blocks until the waiter speaks (or dies)
        assert first.startswith("msda_ops: waiting for another process to compile the cpu"), first
        # Finish "our" build while the waiter waits: it must load it, not compile again.
        directory.mkdir(parents=True)
        library.write_bytes(b"")
        (directory / "BUILT").write_text("test\n")
    out, err = waiter.communicate(timeout=120)
    assert waiter.returncode == 0, err
    assert out.strip() == str(library)
    assert "compiling" not in err


def test_constant_under_compile_marks_as_torch_does():
    """Our mark is exactly the attribute torch's decorator sets (else torch changed it)."""
    import torch

    def ours():
        return 1

    def theirs():
        return 1

    ops.constant_under_compile(ours)
    torch.compiler.assume_constant_result(theirs)
    assert vars(ours) == vars(theirs) and vars(ours)
    assert vars(ops.kernel_available) == vars(theirs) == vars(dispatch.auto_backend)


def test_import_does_not_load_dynamo():
    # torch.compile imports Dynamo when it is used; importing the op alone must not (1.7 s).
    code = "import sys, msda_ops; print('torch._dynamo' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
