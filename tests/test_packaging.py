"""The packaging contract of DESIGN.md, checked on the built wheels."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_PIP_WHEEL = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation"]


def _metadata(whl: Path) -> tuple[list[str], dict[str, list[str]]]:
    with zipfile.ZipFile(whl) as zf:
        names = zf.namelist()
        meta_name = next(n for n in names if n.endswith(".dist-info/METADATA"))
        msg = Parser().parsestr(zf.read(meta_name).decode())
    fields: dict[str, list[str]] = {}
    for key, value in msg.items():
        fields.setdefault(key, []).append(value)
    return names, fields


@pytest.fixture(scope="module")
def msda_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("msda_wheel")
    # Build from a copy: an in-tree build would leave build/ and egg-info behind.
    src = out / "src"
    shutil.copytree(
        ROOT / "msda_ops",
        src,
        ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__", "*.so"),
    )
    subprocess.run(
        [*_PIP_WHEEL, "-w", str(out), str(src)],
        check=True,
    )
    return next(out.glob("msda_ops-*.whl"))


def test_msda_ops_wheel_ships_sources_and_depends_on_torch_and_ninja(msda_wheel: Path) -> None:
    names, meta = _metadata(msda_wheel)
    assert meta["Name"] == ["msda-ops"]
    # Sources travel inside the wheel, compiled on first use; no binary is prebuilt.
    assert any(n.startswith("msda_ops/csrc/cpu/") and n.endswith(".cpp") for n in names)
    assert any(n.startswith("msda_ops/csrc/cuda/") and n.endswith(".cu") for n in names)
    assert "msda_ops/py.typed" in names
    assert not any(n.endswith(".so") for n in names)
    runtime = [r for r in meta.get("Requires-Dist", []) if "extra ==" not in r]
    # ninja so that the kernels compile on first use with no extra step.
    assert [r.split(">")[0].split("=")[0].strip() for r in runtime] == ["torch", "ninja"]
    assert "msda_ops/triton_kernels.py" in names
    assert msda_wheel.name.endswith("-py3-none-any.whl")


def test_root_wheel_is_abi3_with_stubs(tmp_path: Path) -> None:
    maturin = Path(sys.executable).with_name("maturin")
    subprocess.run(
        [str(maturin), "build", "--release", "--quiet", "--out", str(tmp_path)],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    whl = next(tmp_path.glob("detr_zoo-*.whl"))
    assert "-cp310-abi3-" in whl.name
    names, meta = _metadata(whl)
    assert "matcher_rs/_core.pyi" in names
    assert "matcher_rs/py.typed" in names
    assert any(n.startswith("matcher_rs/_core") and n.endswith(".so") for n in names)
    assert "zoo/__init__.py" in names
    # Rust sources and the msda_ops tree do not leak into this wheel.
    assert not any(n.endswith((".rs", "Cargo.toml")) for n in names)
    assert not any(n.startswith("msda_ops/") for n in names)
    deps = {r.split(";")[0].strip() for r in meta["Requires-Dist"] if "extra ==" not in r}
    names_only = {d.split("[")[0].split(">")[0].split("=")[0].strip() for d in deps}
    assert {"msda-ops", "torch", "torchvision", "safetensors", "huggingface-hub"} <= names_only
    assert "pycocotools" in names_only
    test_extra = [r for r in meta["Requires-Dist"] if "extra ==" in r and "test" in r.split(";")[1]]
    assert {r.split(">")[0].strip() for r in test_extra} >= {"pytest", "hypothesis", "scipy"}
    assert not {"pytest", "hypothesis", "scipy", "transformers", "timm"} & names_only
