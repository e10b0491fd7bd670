"""Every ``python`` and ``bash`` block of README.md runs, as extracted from the file.

Blocks run in one temporary folder holding stand-ins for what they need: the demo images
(``demo-output/images/``, as ``python -m zoo.demo`` writes them), ``model.onnx`` (the
bundled model exported) and a Hub cache in which every named model is a tiny random
transformers model at its pinned revision (``HF_HUB_OFFLINE=1``: nothing reaches the
network). A block the test cannot run carries ``<!-- readme-test: skip (reason) -->``;
``<!-- readme-test: slow -->`` puts a block in ``make test-slow``. The plain onnxruntime
script is also checked against the PyTorch model's detections.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from support.hub_cache import add_snapshot, folder_files

import zoo

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
FENCE = re.compile(
    r"(?:<!-- readme-test: (?P<marker>[^\n]*?) -->\n)?^```(?P<lang>[^\n]*)\n(?P<code>.*?)^```$",
    re.S | re.M,
)
RUN = {"python", "bash"}
# Names the README loads from the Hub, and the tiny architecture standing in for each.
HUB_NAMES = {"ddetr-two-stage": "ddetr-two-stage"}


@dataclass(frozen=True)
class Block:
    line: int
    lang: str
    code: str
    marker: str

    @property
    def id(self) -> str:
        return f"line{self.line}-{self.lang}"


def readme_blocks() -> list[Block]:
    text = README.read_text()
    return [
        Block(text.count("\n", 0, m.start("code")), m["lang"], m["code"], m["marker"] or "")
        for m in FENCE.finditer(text)
    ]


def _param(block: Block):
    marks = [pytest.mark.slow] if block.marker == "slow" else []
    return pytest.param(block, id=block.id, marks=marks)


RUNNABLE = [b for b in readme_blocks() if b.lang in RUN and not b.marker.startswith("skip")]


def test_every_block_is_run_or_says_why() -> None:
    blocks = readme_blocks()
    assert len(blocks) >= 8
    for block in blocks:
        assert block.lang in RUN | {"text"}, (
            f"README line {block.line}: fence language {block.lang!r}"
        )
        if block.marker:
            assert block.marker == "slow" or re.fullmatch(r"skip \(.{10,}\)", block.marker), (
                f"README line {block.line}: a skip marker gives its reason: {block.marker!r}"
            )
    assert len(RUNNABLE) >= 5


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("transformers")
    from support.transformers_models import build_hf

    from zoo.demo import generate_images
    from zoo.export import export_onnx

    work = tmp_path_factory.mktemp("readme")
    generate_images(work / "demo-output" / "images", 6, seed=0)
    export_onnx(zoo.load("shapes-demo"), work / "model.onnx")
    cache = work.parent / f"{work.name}-hub"
    for name, case in HUB_NAMES.items():
        folder = tmp_path_factory.mktemp(case)
        build_hf(case, seed=0).save_pretrained(folder)
        info = zoo.get_variant(name)
        add_snapshot(cache, info.hf_hub_id, folder_files(folder), info.hf_revision or "0" * 40)
    (work / ".hub").symlink_to(cache)
    return work


def _env(work: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        HF_HUB_OFFLINE="1",
        HF_HUB_CACHE=str(work / ".hub"),
        MPLBACKEND="Agg",
        PATH=os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]),
        PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "msda_ops" / "src")]),
    )
    env.pop("HF_HOME", None)
    return env


def run_block(block: Block, work: Path) -> str:
    command = (
        [sys.executable, "-c", block.code]
        if block.lang == "python"
        else ["bash", "-euo", "pipefail", "-c", block.code]
    )
    done = subprocess.run(
        command, cwd=work, env=_env(work), capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 0, f"README line {block.line}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.mark.parametrize("block", [_param(b) for b in RUNNABLE])
def test_readme_block_runs(block: Block, workdir: Path) -> None:
    out = run_block(block, workdir)
    if "onnxruntime.InferenceSession" in block.code:
        _check_plain_onnxruntime_script(out, workdir)


def _check_plain_onnxruntime_script(out: str, work: Path) -> None:
    """The script's detections are the PyTorch model's (same names, boxes within 1 px)."""
    got: list[tuple[str, float, list[float]]] = []
    for line in out.strip().splitlines():
        name, *numbers = line.split()
        got.append((name, float(numbers[0]), [float(v) for v in numbers[1:]]))
    model: Any = zoo.load("shapes-demo")
    (want,) = model.predict(work / "demo-output" / "images" / "shapes_01.png", threshold=0.5)
    assert len(got) == len(want["names"]) > 0, out
    expected = sorted(
        zip(want["names"], want["scores"].tolist(), want["boxes"].tolist(), strict=True)
    )
    for (name, score, box), (w_name, w_score, w_box) in zip(sorted(got), expected, strict=True):
        assert name == w_name
        assert score == pytest.approx(w_score, abs=0.01)
        assert box == pytest.approx(w_box, abs=1.0)
