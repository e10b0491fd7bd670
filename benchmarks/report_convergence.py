"""The README's convergence tables, from ``bench_convergence.py``'s result files.

One column per result file (one seed each), then the mean and the spread (max - min)
when there is more than one, then the published COCO figure and whether the measured
direction agrees with it (on the mean; flagged when the seeds disagree in sign). Run after ``make bench-convergence``::

    python benchmarks/report_convergence.py benchmarks/results/convergence_cpu.json \\
        benchmarks/results/convergence_cpu_seed1.json
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench_convergence import ABLATIONS

NAMES = {
    "detr": "DETR",
    "ddetr-single-scale": "Deformable DETR, single-scale",
    "ddetr": "Deformable DETR, multi-scale",
    "ddetr-refine": "+ box refinement",
    "ddetr-two-stage": "+ two-stage",
}
TITLES = {
    "multi_scale": "multi-scale against single-scale",
    "refinement": "box refinement against none",
    "two_stage": "two-stage against refinement alone",
}


def _fmt(value: float | None, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _stats(values: list[float | None]) -> tuple[float | None, float | None]:
    """Mean and max - min of the values present (None when none are)."""
    present = [v for v in values if v is not None]
    if not present:
        return None, None
    return sum(present) / len(present), max(present) - min(present)


def _row(label: str, values: list[float | None], extra: list[str], digits: int = 3) -> str:
    cells = [_fmt(v, digits) for v in values]
    if len(values) > 1:
        mean, spread = _stats(values)
        cells += [_fmt(mean, digits), _fmt(spread, digits)]
    return "| " + " | ".join([label, *cells, *extra]) + " |"


def _header(first: str, runs: list[dict[str, Any]], extra: list[str]) -> list[str]:
    seeds = [f"seed {run['settings']['seed']}" for run in runs]
    if len(runs) > 1:
        seeds += ["mean", "spread"]
    cols = [first, *seeds, *extra]
    return ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]


def _final(run: dict[str, Any], name: str, metric: str) -> float | None:
    res = run["results"].get(name)
    return res[metric][-1] if res and res.get(metric) else None


def _agree(measured: float | None, paper: float | None, sign: Callable[[float], bool]) -> str:
    if measured is None or paper is None:
        return "—"
    return "yes" if sign(measured) == sign(paper) else "**no**"


def report(runs: list[dict[str, Any]]) -> str:
    """Markdown: one table per claim."""
    paper = runs[0]["paper"]
    out: list[str] = []

    seeds = ", ".join(str(run["settings"]["seed"]) for run in runs)
    note = " (mean ± half the spread)" if len(runs) > 1 else ""
    word = "seeds" if len(runs) > 1 else "seed"
    out += [f"**Final metrics** after each variant's last epoch, {word} {seeds}{note}", ""]
    metrics = ("AP", "AP50", "AP75", "APs", "APm", "APl")
    cols = ["variant", "epochs", *metrics, "COCO AP / APs (paper)"]
    out += ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for name, title in NAMES.items():
        if name not in runs[0]["results"]:
            continue
        cells = [title, str(runs[0]["results"][name]["epochs"][-1])]
        for metric in metrics:
            mean, spread = _stats([_final(run, name, metric) for run in runs])
            cells.append(
                _fmt(mean)
                if len(runs) == 1 or spread is None
                else f"{_fmt(mean)} ± {_fmt(spread / 2)}"
            )
        pub = paper.get(name, {})
        cells.append(f"{pub.get('AP', '—')} / {pub.get('APs', '—')} ({pub.get('epochs')} ep)")
        out.append("| " + " | ".join(cells) + " |")
    out.append("")

    out += ["**Steps to DETR's final AP** (fraction of DETR's steps; the paper: 0.1)", ""]
    out += _header("variant", runs, ["within a fifth"])
    for name, title in NAMES.items():
        if name == "detr" or name not in runs[0]["results"]:
            continue
        reach = [run["summary"].get("epochs_to_detr_final_AP", {}).get(name, {}) for run in runs]
        fractions = [r.get("fraction_of_detr_steps") for r in reach]
        within = ", ".join("yes" if r.get("within_a_fifth") else "no" for r in reach)
        out.append(_row(title, fractions, [within], digits=2))
    out.append("")

    out += ["**Small objects**: APs, DETR against multi-scale Deformable DETR", ""]
    out += _header("", runs, ["COCO (paper)"])
    small = [run["summary"].get("small_objects", {}) for run in runs]
    steps = small[0].get("at_step")
    out.append(
        _row(
            "DETR, final",
            [s.get("final_APs", {}).get("detr") for s in small],
            [str(paper["detr"]["APs"])],
        )
    )
    out.append(
        _row(
            f"DETR at step {steps}",
            [s.get("APs_at_step", {}).get("detr") for s in small],
            ["—"],
        )
    )
    out.append(
        _row(
            "Deformable DETR, final",
            [s.get("final_APs", {}).get("ddetr") for s in small],
            [str(paper["ddetr"]["APs"])],
        )
    )
    out.append("")

    out += ["**Ablations**: difference in final AP and APs", ""]
    out += _header("claim", runs, ["COCO (paper)", "agrees"])
    for claim, better, base in ABLATIONS:
        for metric in ("AP", "APs"):
            # bench_convergence.summarize's differences, None where a variant is missing.
            gains = [(run["summary"].get(claim) or {}).get(metric) for run in runs]
            diffs = [None if g is None else g["difference"] for g in gains]
            published = paper.get(better, {}).get(metric), paper.get(base, {}).get(metric)
            pub = None if None in published else published[0] - published[1]  # type: ignore[operator]
            mean, _ = _stats(diffs)
            agree = _agree(mean, pub, lambda x: x > 0)
            signs = {d > 0 for d in diffs if d is not None}
            if len(signs) > 1:
                agree += " (the seeds disagree)"
            pub_text = "—" if pub is None else f"{pub:+.1f}"
            out.append(_row(f"{TITLES[claim]}, {metric}", diffs, [pub_text, agree]))
    out.append("")
    minutes = [run["wall_seconds"] / 60 for run in runs]
    env = runs[0]["environment"]
    out.append(
        f"Wall time: {', '.join(f'{m:.0f}' for m in minutes)} min "
        f"({runs[0]['protocol']['concurrency']}; {env.get('cpu_count')} CPUs, "
        f"{env.get('processor')}, torch {env.get('torch')})."
    )
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("results", nargs="+", type=Path, help="bench_convergence JSON files")
    args = parser.parse_args(argv)
    runs = [json.loads(path.read_text()) for path in args.results]
    partial = [str(p) for p, run in zip(args.results, runs, strict=True) if run.get("partial")]
    if partial:
        parser.error(f"unfinished runs (partial results): {', '.join(partial)}")
    print(report(runs), end="")


if __name__ == "__main__":
    main()
