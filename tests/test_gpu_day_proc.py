"""benchmarks/gpu_day_proc.py: whole-tree kills, atomic summaries, recorded late compiles."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import gpu_day_proc


def _alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie waiting for a reaper counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def test_a_timed_out_step_takes_its_grandchildren_with_it(tmp_path: Path) -> None:
    # The step's child starts a grandchild that sleeps (as make starts pytest); the limit is 2 s.
    pid_file = tmp_path / "grandchild.pid"
    child = textwrap.dedent(f"""
        import subprocess, sys, time
        p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        open({str(pid_file)!r}, "w").write(str(p.pid))
        time.sleep(60)
    """)
    log = open(tmp_path / "log", "w")
    started = time.monotonic()
    result = gpu_day_proc.run_command(
        "sleepy", [sys.executable, "-c", child], 2.0, dict(os.environ), tmp_path, log
    )
    assert result["status"] == "timed out after 2 s"
    assert time.monotonic() - started < 2.0 + 3 * gpu_day_proc.KILL_GRACE_S + 5
    grandchild = int(pid_file.read_text())
    deadline = time.monotonic() + 5
    while _alive(grandchild) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(grandchild), "the grandchild outlived its step's limit"


def test_a_grandchild_that_ignores_sigint_and_sigterm_is_killed(tmp_path: Path) -> None:
    pid_file = tmp_path / "stubborn.pid"
    stubborn = (
        "import signal, time, os\n"
        "signal.signal(signal.SIGINT, signal.SIG_IGN); signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        f"open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(60)\n"
    )
    child = f"import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', {stubborn!r}]); time.sleep(60)"
    result = gpu_day_proc.run_command(
        "stubborn",
        [sys.executable, "-c", child],
        2.0,
        dict(os.environ),
        tmp_path,
        open(tmp_path / "log", "w"),
    )
    assert result["status"].startswith("timed out")
    pid = int(pid_file.read_text())
    deadline = time.monotonic() + 5
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(pid)


def test_a_passing_and_a_failing_step(tmp_path: Path) -> None:
    log = open(tmp_path / "log", "w+")
    ok = gpu_day_proc.run_command("ok", ["true"], 10, dict(os.environ), tmp_path, log)
    bad = gpu_day_proc.run_command("bad", ["false"], 10, dict(os.environ), tmp_path, log)
    gone = gpu_day_proc.run_command("gone", ["/no/such/tool"], 10, {}, tmp_path, log)
    assert (ok["status"], bad["status"]) == ("passed", "failed (exit 1)")
    assert gone["status"].startswith("could not start")
    log.seek(0)
    assert "===== bad: failed (exit 1)" in log.read()


_WRITER = """
import sys
sys.path.insert(0, {bench!r})
from pathlib import Path
import gpu_day_proc
path = Path({path!r})
i = 0
while True:
    i += 1
    {write}
"""


@pytest.mark.parametrize("atomic", [True, False])
def test_a_summary_killed_mid_write_stays_readable(tmp_path: Path, atomic: bool) -> None:
    """SIGKILL a process rewriting a 4 MB summary in a loop: the file must always parse.

    The in-place write (``atomic=False``) is the control: it leaves truncated JSON, which
    shows that the kill lands mid-write and that the atomic case is not passing by luck.
    """
    path = tmp_path / "summary.json"
    payload = "{'steps': {'x': 'y' * 4_000_000}, 'n': i}"
    # The control writes in place in 4 kB chunks (a large write flushed piecewise, as any
    # buffered writer does), its text built once: the file is then mid-write (or just
    # truncated) all the time but a few microseconds per loop, so a kill lands there however
    # fast the machine is. One 4 MB ``write_text``, or building the text again in each loop
    # (the file complete while ``json.dumps`` ran), made it a race that CI lost twice.
    chunked = (
        "TEXT = globals().get('TEXT') or __import__('json').dumps(" + payload + ")\n"
        "    text = TEXT\n"
        "    with open(path, 'w') as f:\n"
        "        for s in range(0, len(text), 4096):\n"
        "            f.write(text[s:s + 4096]); f.flush()"
    )
    write = f"gpu_day_proc.write_json_atomic(path, {payload})" if atomic else chunked
    script = _WRITER.format(
        bench=str(Path(gpu_day_proc.__file__).parent), path=str(path), write=write
    )
    broken = 0
    for _ in range(8):
        proc = subprocess.Popen([sys.executable, "-c", script])
        while not path.exists():
            time.sleep(0.01)
        time.sleep(0.3)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        try:
            json.loads(path.read_text())
        except ValueError:
            broken += 1
    if atomic:
        assert broken == 0
        # A kill between mkstemp and rename may leave a temp file beside it, never a bad summary.
        assert all(
            p.name.startswith((".summary.json.", "summary.json")) for p in tmp_path.iterdir()
        )
    else:
        assert broken > 0, "the control never caught a write in progress: the test proves nothing"


def test_write_json_atomic_leaves_no_temp_file_on_failure(tmp_path: Path) -> None:
    path = tmp_path / "summary.json"
    gpu_day_proc.write_json_atomic(path, {"a": 1})
    with pytest.raises(TypeError):
        gpu_day_proc.write_json_atomic(path, {"a": object()})
    assert json.loads(path.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]


def test_the_compiler_shims_record_each_call_and_run_the_real_tool(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (real / "ninja").write_text('#!/bin/sh\necho real ninja "$@"\n')
    (real / "ninja").chmod(0o755)
    record = tmp_path / "compiles.log"
    shims = gpu_day_proc.compiler_shims(tmp_path / "shims", record)
    env = {**os.environ, "PATH": f"{shims}:{real}:{os.environ['PATH']}", "GPU_DAY_STEP": "smoke"}
    out = subprocess.run(
        ["ninja", "-v", "all"], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout == "real ninja -v all\n"
    calls, offset = gpu_day_proc.compiles_since(record, 0)
    assert calls == ["smoke ninja -v all"]
    assert gpu_day_proc.compiles_since(record, offset) == ([], offset)
