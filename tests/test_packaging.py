"""The packaging contract of DESIGN.md, checked on the built wheels."""

from __future__ import annotations

import json
import os
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
def root_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("root_wheel")
    maturin = Path(sys.executable).with_name("maturin")
    subprocess.run(
        [str(maturin), "build", "--release", "--quiet", "--out", str(out)],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    return next(out.glob("detr_zoo-*.whl"))


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
    # Every source and header the JIT build compiles or includes (a missing one fails there).
    package = ROOT / "msda_ops" / "src" / "msda_ops"
    kernel_files = {
        f"msda_ops/{p.relative_to(package).as_posix()}"
        for p in (package / "csrc").rglob("*")
        if p.suffix in (".h", ".cuh", ".cpp", ".cu")
    }
    assert kernel_files <= set(names), sorted(kernel_files - set(names))
    assert "msda_ops/py.typed" in names
    assert not any(n.endswith(".so") for n in names)
    runtime = [r for r in meta.get("Requires-Dist", []) if "extra ==" not in r]
    # ninja so that the kernels compile on first use with no extra step.
    assert [r.split(">")[0].split("=")[0].strip() for r in runtime] == ["torch", "ninja"]
    assert "msda_ops/triton_kernels.py" in names
    assert msda_wheel.name.endswith("-py3-none-any.whl")


def test_root_wheel_is_abi3_with_stubs(root_wheel: Path) -> None:
    whl = root_wheel
    assert "-cp311-abi3-" in whl.name
    names, meta = _metadata(whl)
    assert "matcher_rs/_core.pyi" in names
    assert "matcher_rs/py.typed" in names
    assert any(n.startswith("matcher_rs/_core") and n.endswith(".so") for n in names)
    assert "zoo/__init__.py" in names
    # The bundled demo model travels as package data (zoo.load("shapes-demo"), the demo).
    for data in ("config.json", "model.safetensors"):
        assert f"zoo/pretrained/shapes-ddetr/{data}" in names
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


@pytest.mark.slow
def test_both_wheels_install_and_run_outside_the_checkout(
    msda_wheel: Path, root_wheel: Path, tmp_path: Path
) -> None:
    """The user's install: both wheels in a fresh venv, then the demo from another folder.

    pip resolves the two wheels given in one command (detr-zoo's msda-ops requirement met
    by the msda_ops wheel beside it, torch & co. from PyPI) in a dry run; the install
    itself takes our two wheels without dependencies and borrows torch and the other
    dependencies from the development venv through a .pth line (no 2 GB download). Path
    lines in a .pth do not run that venv's own .pth files, so its editable zoo and msda_ops
    stay out: the test checks that zoo, msda_ops and matcher_rs come from the new venv.
    """
    venv = tmp_path / "venv"
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", str(venv)], check=True)
    py = venv / "bin" / "python"
    pip = [str(py), "-m", "pip", "--disable-pip-version-check", "-q"]
    wheels = [str(msda_wheel), str(root_wheel)]
    try:
        report = tmp_path / "report.json"
        subprocess.run(
            [*pip, "install", "--dry-run", "--ignore-installed", "--report", str(report), *wheels],
            check=True,
            capture_output=True,
            timeout=300,
        )
    except subprocess.CalledProcessError as error:
        pytest.fail(f"pip could not resolve the two wheels together: {error.stderr.decode()}")
    resolved = {
        item["metadata"]["name"].lower(): item["download_info"]["url"]
        for item in json.loads(report.read_text())["install"]
    }
    assert resolved["msda-ops"].startswith("file://") and resolved["torch"].startswith("http")
    subprocess.run([*pip, "install", "--no-deps", *wheels], check=True)
    site_packages = next((venv / "lib").glob("python3*/site-packages"))
    shared = next(p for p in map(Path, sys.path) if p.name == "site-packages" and p.is_dir())
    (site_packages / "shared-deps.pth").write_text(f"{shared}\n")

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"HF_HUB_OFFLINE": "1"}
    check = (
        "import zoo, msda_ops, matcher_rs, sys\n"
        "for m in (zoo, msda_ops, matcher_rs): assert m.__file__.startswith(sys.argv[1]), m\n"
        "model = zoo.load('shapes-demo')\n"
        "print(sum(p.numel() for p in model.parameters()))"
    )
    out = subprocess.run(
        [str(py), "-c", check, str(site_packages)],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    assert int(out.stdout) > 1_000_000
    demo = subprocess.run(
        [str(py), "-m", "zoo.demo", "--out", "demo-output"],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
    )
    assert demo.returncode == 0, demo.stderr
    assert "found" in demo.stdout and (elsewhere / "demo-output" / "detections.json").is_file()
    listed = subprocess.run(
        [str(venv / "bin" / "zoo"), "list"], cwd=elsewhere, env=env, capture_output=True, text=True
    )
    assert listed.returncode == 0 and "shapes-demo" in listed.stdout
    # The benchmarks import the installed packages (the checkout's matcher_rs/ has no _core).
    for script in ("bench_matcher.py", "bench_models.py"):
        bench = subprocess.run(
            [str(py), str(ROOT / "benchmarks" / script), "--help"],
            cwd=elsewhere,
            env=env,
            capture_output=True,
            text=True,
        )
        assert bench.returncode == 0, bench.stderr
