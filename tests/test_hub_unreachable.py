"""An unreachable Hub fails fast: a name that is not cached raises ``WeightsNotFoundError``
in under 2 s (huggingface_hub alone retries for ~35 s), with ``HF_HUB_OFFLINE=1`` and with
the network unreachable (``HF_ENDPOINT`` at a closed local port, ``HF_HUB_OFFLINE`` unset);
a cached model still loads from the cache while the Hub is unreachable."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from support.hub_cache import add_snapshot, folder_files
from support.tiny import tiny_model

import zoo
from zoo.weights.hub import hub_reachable

ROOT = Path(__file__).resolve().parents[1]
LIMIT_S = 2.0

# Times zoo.load alone (imports done first): the bound is on the failure, not on startup.
CHILD = r"""
import json, sys, time
import huggingface_hub
import zoo
import zoo.models
import zoo.weights.hub
out = {}
for name in sys.argv[1:]:
    start = time.perf_counter()
    try:
        zoo.load(name)
        out[name] = ["loaded", time.perf_counter() - start, ""]
    except Exception as e:
        out[name] = [type(e).__name__, time.perf_counter() - start, str(e)]
print(json.dumps(out))
"""


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # closed when the block ends: connections refused


def _run(env_changes: dict[str, str | None], *names: str) -> dict[str, list]:
    env = dict(os.environ)
    for key, value in env_changes.items():
        env.pop(key, None)
        if value is not None:
            env[key] = value
    for key in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy"):
        env.pop(key, None)
    paths = [str(ROOT), str(ROOT / "msda_ops" / "src"), env.get("PYTHONPATH", "")]
    env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    done = subprocess.run(
        [sys.executable, "-c", CHILD, *names], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Hub cache holding one small zoo-format repository, ``someone/cached``."""
    root = tmp_path_factory.mktemp("hub")
    saved = zoo.save_pretrained(tiny_model("ddetr"), root / "saved")
    add_snapshot(root / "cache", "someone/cached", folder_files(saved), "5" * 40)
    return root / "cache"


@pytest.mark.parametrize(
    "env",
    [
        pytest.param({"HF_HUB_OFFLINE": "1"}, id="HF_HUB_OFFLINE=1"),
        pytest.param({"HF_HUB_OFFLINE": None, "HF_ENDPOINT": "closed"}, id="unreachable"),
    ],
)
def test_not_cached_fails_fast_cached_loads(env: dict[str, str | None], cache: Path) -> None:
    if env.get("HF_ENDPOINT") == "closed":
        env = {**env, "HF_ENDPOINT": f"http://127.0.0.1:{_closed_port()}"}
    results = _run(
        {**env, "HF_HUB_CACHE": str(cache), "HF_HOME": None}, "ddetr-two-stage", "someone/cached"
    )
    kind, seconds, message = results["ddetr-two-stage"]
    assert kind == "WeightsNotFoundError", message
    assert "not in the Hugging Face cache" in message
    assert seconds < LIMIT_S, f"took {seconds:.1f} s to fail"
    kind, seconds, message = results["someone/cached"]
    assert kind == "loaded", message
    assert seconds < 30


def test_hub_reachable_opens_one_connection() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        assert hub_reachable(f"http://127.0.0.1:{server.getsockname()[1]}")
    assert not hub_reachable(f"http://127.0.0.1:{_closed_port()}")
    # An unresolvable name is unreachable, within the timeout.
    assert not hub_reachable("https://no-such-host.invalid", timeout=0.5)
