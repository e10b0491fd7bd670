"""Tables and plots of the convergence study, from ``bench_convergence.py``'s summary file.

The README's summary table (one row per claim) and ``docs/convergence.md``'s tables are
rewritten between their markers; the plots (AP and APs against epochs, one line per
variant with the band of its seeds, and the final metrics with their spread) are written
beside the results. Run after ``make bench-convergence`` (or while it runs: the summary
file is rebuilt after every finished run)::

    python benchmarks/report_convergence.py benchmarks/results/convergence_cpu.json \\
        --readme README.md --doc docs/convergence.md
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from convergence_claims import ABLATIONS, METRICS, PAPER_FRACTION

NAMES = {
    "detr": "DETR-DC5",
    "ddetr-single-scale": "Deformable DETR, single-scale (DC5)",
    "ddetr": "Deformable DETR, multi-scale",
    "ddetr-refine": "+ box refinement",
    "ddetr-two-stage": "+ two-stage",
}
TITLES = {
    "multi_scale": "Multi-scale beats single-scale",
    "refinement": "Box refinement adds AP",
    "two_stage": "Two-stage adds AP",
}
SUMMARY_MARKERS = ("<!-- convergence-summary:start -->", "<!-- convergence-summary:end -->")
TABLES_MARKERS = ("<!-- convergence-tables:start -->", "<!-- convergence-tables:end -->")


def _fmt(value: float | None, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _band(stat: dict[str, Any] | None, digits: int = 3, signed: bool = False) -> str:
    """``mean [min, max]`` of a :func:`convergence_claims.spread` (the mean alone for one)."""
    if not stat or stat.get("mean") is None:
        return "—"
    sign = "+" if signed else ""
    mean = f"{stat['mean']:{sign}.{digits}f}"
    if len([v for v in stat["values"] if v is not None]) < 2:
        return mean
    return f"{mean} [{stat['min']:{sign}.{digits}f}, {stat['max']:{sign}.{digits}f}]"


def _seeds(payload: dict[str, Any]) -> str:
    seeds = payload.get("summary", {}).get("seeds", [])
    if not seeds:
        return "no finished run yet"
    return f"{len(seeds)} seed{'s' if len(seeds) != 1 else ''} ({', '.join(map(str, seeds))})"


def _only(seeds: list[Any], every: list[Any]) -> str:
    """`` (seed 0 only)`` when a figure comes from fewer seeds than the header names."""
    if not seeds or list(seeds) == list(every):
        return ""
    return f" (seed{'s' if len(seeds) != 1 else ''} {', '.join(map(str, seeds))} only)"


def summary_rows(payload: dict[str, Any]) -> list[str]:
    """The README's table: one row per claim, the measured value and the verdict."""
    s = payload.get("summary", {})
    paper = payload["paper"]
    rows = [
        f"| claim ({_seeds(payload)}, mean [min, max]) | measured | COCO (paper) | verdict |",
        "|---|---|---|---|",
    ]
    gate = s.get("detr_learnt")
    untested = "not tested: DETR did not pass the AP50 gate"
    # DETR's runs are the longest: its claims may rest on fewer seeds than the others'.
    detr_only = _only((gate or {}).get("seeds", []), s.get("seeds", []))
    if gate is None:
        rows.append(f"| DETR learns (AP50 ≥ 0.3) | — | {paper['detr']['AP']} AP | pending |")
    else:
        verdict = "yes" if gate["tested"] else "**no**"
        rows.append(
            f"| DETR learns (final AP50 ≥ {gate['gate']}) | {_band(gate['AP50'])}{detr_only} | "
            f"{paper['detr']['AP']} AP | {verdict} |"
        )
    reach = s.get("epochs_to_detr_final_AP", {}).get("ddetr")
    if reach is None:
        rows.append(
            "| Deformable DETR reaches DETR's final AP in a tenth of the epochs | — | "
            "50 vs 500 epochs | pending |"
        )
    else:
        verdict = reach["verdict"] if s["epochs_to_detr_final_AP"]["tested"] else untested
        rows.append(
            "| Deformable DETR reaches DETR's final AP in a tenth of the epochs | "
            f"{_band(reach['fraction'], 2)} of DETR's epochs{detr_only} | {PAPER_FRACTION} | "
            f"{verdict} |"
        )
    small = s.get("small_objects")
    pub = paper["ddetr"]["APs"] - paper["detr"]["APs"]
    if small is None:
        rows.append(f"| Better on small objects (APs) | — | {pub:+.1f} | pending |")
    else:
        verdict = small["verdict"] if small["tested"] else untested
        rows.append(
            f"| Better on small objects (APs) | {_band(small['difference'], signed=True)}"
            f"{detr_only} | "
            f"{pub:+.1f} | {verdict} |"
        )
    for claim, better, base in ABLATIONS:
        pub = paper[better]["AP"] - paper[base]["AP"]
        entry = s.get(claim)
        if entry is None:
            rows.append(f"| {TITLES[claim]} | — | {pub:+.1f} | pending |")
            continue
        rows.append(
            f"| {TITLES[claim]} | {_band(entry['AP']['difference'], signed=True)} AP | "
            f"{pub:+.1f} | {entry['AP']['verdict']} |"
        )
    return rows


def tables(payload: dict[str, Any]) -> list[str]:
    """``docs/convergence.md``'s tables: final metrics, the headline, small objects, ablations."""
    s = payload.get("summary", {})
    paper = payload["paper"]
    if not s.get("final"):
        return ["No finished run yet: the tables appear as the runs finish."]
    out = [
        f"**Final metrics** after each variant's last epoch, {_seeds(payload)}: "
        "mean [min, max] over the seeds",
        "",
    ]
    cols = ["variant", "epochs", *METRICS, "COCO AP / APs (paper)"]
    out += ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    epochs = payload["protocol"]["epochs_per_variant"]
    for name, title in NAMES.items():
        final = s.get("final", {}).get(name)
        if not final:
            continue
        pub = paper[name]
        values = zip(s["seeds"], final["AP"]["values"], strict=True)
        ran = [seed for seed, v in values if v is not None]
        title += _only(ran, s["seeds"])
        cells = [title, str(epochs.get(name, "—")), *[_band(final.get(m)) for m in METRICS]]
        cells.append(f"{pub['AP']} / {pub['APs']} ({pub['epochs']} ep)")
        out.append("| " + " | ".join(cells) + " |")
    out.append("")
    reach = s.get("epochs_to_detr_final_AP")
    detr_only = _only(s.get("detr_learnt", {}).get("seeds", []), s.get("seeds", []))
    if reach:
        tested = "" if reach["tested"] else " — **not tested**: DETR did not pass the AP50 gate"
        tested += detr_only
        out += [
            "**Epochs to DETR's final AP** (first evaluation at or above it, per seed; "
            f"fraction of DETR's epochs; the paper: {PAPER_FRACTION}), and AP at equal epochs "
            f"(the variant's final AP minus DETR's at the same epoch){tested}",
            "",
            "| variant | epochs per seed | fraction | verdict | AP − DETR's at equal epochs |",
            "|---|---|---|---|---|",
        ]
        for name, title in NAMES.items():
            entry = reach.get(name)
            if name == "detr" or entry is None:
                continue
            per_seed = ", ".join("never" if e is None else str(e) for e in entry["epochs"])
            out.append(
                f"| {title} | {per_seed} | {_band(entry['fraction'], 2)} | "
                f"{entry['verdict'] if reach['tested'] else 'not tested'} | "
                f"{_band(entry['equal_epochs_difference'], signed=True)} |"
            )
        out.append("")
    small = s.get("small_objects")
    if small:
        out += [
            "**Small objects**: final APs of multi-scale Deformable DETR minus DETR's: "
            f"{_band(small['difference'], signed=True)}{detr_only} "
            f"({small['verdict'] if small['tested'] else 'not tested'}; COCO: "
            f"{paper['ddetr']['APs'] - paper['detr']['APs']:+.1f})",
            "",
        ]
    out += [
        "**Ablations**: difference in final AP and APs",
        "",
        "| claim | AP | APs | COCO AP / APs (paper) | verdict (AP / APs) |",
        "|---|---|---|---|---|",
    ]
    for claim, better, base in ABLATIONS:
        entry = s.get(claim)
        if entry is None:
            continue
        pub = [paper[better][m] - paper[base][m] for m in ("AP", "APs")]
        out.append(
            f"| {TITLES[claim]} | {_band(entry['AP']['difference'], signed=True)} | "
            f"{_band(entry['APs']['difference'], signed=True)} | {pub[0]:+.1f} / {pub[1]:+.1f} | "
            f"{entry['AP']['verdict']} / {entry['APs']['verdict']} |"
        )
    out.append("")
    seconds = [
        (name, run["train_seconds"])
        for runs in payload["runs"].values()
        for name, run in runs.items()
        if "train_seconds" in run
    ]
    if seconds:
        per = {n: [t for m, t in seconds if m == n] for n in NAMES}
        out.append(
            "Training time per run (minutes, mean over seeds; one thread, on a shared CPU): "
            + ", ".join(f"{NAMES[n]} {sum(t) / len(t) / 60:.0f}" for n, t in per.items() if t)
            + "."
        )
    return out


def replace_block(text: str, markers: tuple[str, str], lines: list[str]) -> str:
    """``text`` with the lines between ``markers`` replaced; ValueError without them."""
    start, end = markers
    if start not in text or end not in text:
        raise ValueError(f"markers {start!r} ... {end!r} not found")
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    return head + start + "\n" + "\n".join(lines) + "\n" + end + tail


def plot(payload: dict[str, Any], path: Path) -> list[Path]:
    """AP/AP50 and APs/APm against epochs (seed bands), final metrics with their spread."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    runs = payload["runs"]
    written = []
    for suffix, metrics in (("", ("AP", "AP50")), ("_small", ("APs", "APm"))):
        fig, axes = plt.subplots(1, 2, figsize=(11, 4))
        for metric, ax in zip(metrics, axes, strict=True):
            for name, title in NAMES.items():
                curves = [r[name] for r in runs.values() if name in r]
                if not curves:
                    continue
                length = min(len(c["epochs"]) for c in curves)
                xs = curves[0]["epochs"][:length]
                ys = [[c[metric][i] for c in curves] for i in range(length)]
                mean = [sum(y) / len(y) for y in ys]
                (line,) = ax.plot(xs, mean, marker=".", label=f"{title} ({len(curves)})")
                if len(curves) > 1:
                    ax.fill_between(
                        xs,
                        [min(y) for y in ys],
                        [max(y) for y in ys],
                        alpha=0.2,
                        color=line.get_color(),
                    )
            detr = [r["detr"] for r in runs.values() if "detr" in r]
            if metric == "AP" and detr:
                # The headline's target and the paper's budget: DETR's final AP, a tenth
                # of DETR's epochs.
                target = sum(c["AP"][-1] for c in detr) / len(detr)
                ax.axhline(target, color="gray", linestyle="--", linewidth=0.8)
                ax.axvline(PAPER_FRACTION * detr[0]["epochs"][-1], color="gray", linestyle=":")
            ax.set_xlabel("epoch")
            ax.set_ylabel(f"{metric} (mean, band: min-max over seeds)")
            ax.grid(alpha=0.3)
        axes[0].legend(fontsize=7)
        fig.tight_layout()
        out = path.with_name(path.stem + suffix + ".png")
        fig.savefig(out, dpi=110)
        plt.close(fig)
        written.append(out)
    final = payload.get("summary", {}).get("final", {})
    names = [n for n in NAMES if n in final]
    if names:
        fig, ax = plt.subplots(figsize=(11, 4))
        bars = ("AP", "APs", "APm", "APl")
        width = 0.8 / len(names)
        for i, name in enumerate(names):
            stats = [final[name].get(b) or {"mean": 0.0, "min": 0.0, "max": 0.0} for b in bars]
            xs = [j + i * width for j in range(len(bars))]
            means = [st["mean"] for st in stats]
            errs = [
                [m - st["min"] for m, st in zip(means, stats, strict=True)],
                [st["max"] - m for m, st in zip(means, stats, strict=True)],
            ]
            ax.bar(xs, means, width, yerr=errs, capsize=2, label=NAMES[name])
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(bars))], bars)
        ax.set_ylabel("final value (mean, bars: min-max over seeds)")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3, axis="y")
        fig.tight_layout()
        out = path.with_name(path.stem + "_ablation.png")
        fig.savefig(out, dpi=110)
        plt.close(fig)
        written.append(out)
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("results", type=Path, help="bench_convergence's summary JSON")
    parser.add_argument("--readme", type=Path, default=None, help="rewrite its summary table")
    parser.add_argument("--doc", type=Path, default=None, help="rewrite its tables")
    parser.add_argument("--no-plots", action="store_true")
    args = parser.parse_args(argv)
    payload = json.loads(args.results.read_text())
    summary, body = summary_rows(payload), tables(payload)
    print("\n".join([*summary, "", *body]))
    for target, markers, lines in (
        (args.readme, SUMMARY_MARKERS, summary),
        (args.doc, TABLES_MARKERS, body),
    ):
        if target is not None:
            target.write_text(replace_block(target.read_text(), markers, lines))
            print(f"wrote {target}")
    if not args.no_plots:
        for figure in plot(payload, args.results):
            print(f"wrote {figure}")


if __name__ == "__main__":
    main()
