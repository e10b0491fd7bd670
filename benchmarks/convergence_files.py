"""The convergence benchmark's files: one per finished (variant, seed) run, and the summary
rebuilt from them (resumable: a finished run is never trained again)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from convergence_claims import PAPER, combine, summarize
from convergence_protocol import VARIANTS, label
from harness import write_json


def run_file(folder: Path, name: str, seed: int) -> Path:
    return folder / f"{label(name)}_seed{seed}.json"


def finished(path: Path, protocol: dict[str, Any]) -> bool:
    """Whether ``path`` holds a finished run of ``protocol``; SystemExit for another one."""
    if not path.exists():
        return False
    recorded = json.loads(path.read_text()).get("protocol")
    if recorded != protocol:
        differ = sorted(
            k
            for k in set(recorded or {}) | set(protocol)
            if (recorded or {}).get(k) != protocol.get(k)
        )
        raise SystemExit(
            f"{path} holds a run of another protocol (differs in {differ}): move it away or "
            "pass another --name"
        )
    return True


def collect(folder: Path, protocol: dict[str, Any]) -> dict[int, dict[str, Any]]:
    """seed -> variant label -> curve, from the run files of ``protocol`` in ``folder``."""
    runs: dict[int, dict[str, Any]] = {}
    for path in sorted(folder.glob("*_seed*.json")):
        data = json.loads(path.read_text())
        if data.get("protocol") == protocol:
            runs.setdefault(data["seed"], {})[data["label"]] = data["result"]
    order = [label(n) for n in VARIANTS]
    return {seed: {v: runs[seed][v] for v in order if v in runs[seed]} for seed in sorted(runs)}


def write_summary(
    path: Path, folder: Path, protocol: dict[str, Any], stats: dict[str, Any], start: float
) -> dict[str, Any]:
    """Rebuild the summary file from every run file of ``protocol``."""
    runs = collect(folder, protocol)
    per_seed = {seed: summarize(results) for seed, results in runs.items()}
    payload = {
        "protocol": protocol,
        "dataset": stats,
        "paper": PAPER,
        "run_files": str(folder.name),
        "wall_seconds_this_call": time.perf_counter() - start,
        "runs": {str(seed): results for seed, results in runs.items()},
        "summary_per_seed": {str(seed): s for seed, s in per_seed.items()},
        "summary": combine(per_seed) if per_seed else {},
    }
    write_json(path, payload)
    return payload
