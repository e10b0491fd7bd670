"""The papers' claims as numbers: per seed from the AP curves, then across seeds.

Pure functions over the curves that ``bench_convergence.py`` records (one evaluation per
epoch: ``epochs`` and one list per metric), so that the bookkeeping is tested apart from
any training. A claim about DETR is stated only when DETR has learnt: its final AP50 on
the validation images is at least :data:`DETR_GATE_AP50` in every seed.
"""

from __future__ import annotations

from typing import Any

METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")
BASELINE = "detr"
DETR_GATE_AP50 = 0.3
# The paper's factor: Deformable DETR at 50 epochs against DETR(-DC5) at 500.
PAPER_FRACTION = 0.1
# The ablation claims: summary key, the variant, the one it extends.
ABLATIONS = (
    ("multi_scale", "ddetr", "ddetr-single-scale"),
    ("refinement", "ddetr-refine", "ddetr"),
    ("two_stage", "ddetr-two-stage", "ddetr-refine"),
)

# The published figures on COCO val2017 (ResNet-50), from the official repository's
# "Main Results" table (fundamentalvision/Deformable-DETR): DETR-DC5 at 500 epochs (and
# at 50, ``AP_50_epochs``), single-scale Deformable DETR on the DC5 map, the others on
# C3-C5, all at 50 epochs.
PAPER = {
    "detr": {
        "epochs": 500,
        "AP": 43.3,
        "APs": 22.5,
        "APm": 47.3,
        "APl": 61.1,
        "AP_50_epochs": 35.3,
    },
    "ddetr-single-scale": {"epochs": 50, "AP": 41.5, "APs": 24.1, "APm": 45.3, "APl": 56.0},
    "ddetr": {"epochs": 50, "AP": 44.5, "APs": 27.1, "APm": 47.6, "APl": 59.6},
    "ddetr-refine": {"epochs": 50, "AP": 46.2, "APs": 28.3, "APm": 49.2, "APl": 61.5},
    "ddetr-two-stage": {"epochs": 50, "AP": 46.9, "APs": 29.6, "APm": 50.1, "APl": 61.6},
}


def epochs_to_reach(epochs: list[int], values: list[float], target: float) -> int | None:
    """The first evaluated epoch whose value is at least ``target`` (None: never)."""
    return next((e for e, v in zip(epochs, values, strict=True) if v >= target), None)


def value_at(epochs: list[int], values: list[float], epoch: int) -> float | None:
    """The value at the last evaluation at or before ``epoch`` (None: none that early)."""
    earlier = [v for e, v in zip(epochs, values, strict=True) if e <= epoch]
    return earlier[-1] if earlier else None


def final(curve: dict[str, Any]) -> dict[str, float]:
    """The last evaluation of every metric."""
    return {m: curve[m][-1] for m in METRICS if curve.get(m)}


def _gain(results: dict[str, Any], better: str, base: str, metric: str) -> dict[str, Any] | None:
    if not (results.get(better, {}).get(metric) and results.get(base, {}).get(metric)):
        return None
    a, b = results[better][metric][-1], results[base][metric][-1]
    return {better: a, base: b, "difference": a - b, "agrees_with_paper": a > b}


def summarize(results: dict[str, Any]) -> dict[str, Any]:
    """One seed's answer to each claim, from its curves (variant label -> curve).

    - ``final``: every variant's last evaluation.
    - ``detr_learnt``: DETR's final AP50 against the gate.
    - ``epochs_to_detr_final_AP``: per variant, the first epoch at or above DETR's final
      AP and that epoch over DETR's epochs (the paper: 0.1).
    - ``ap_at_equal_epochs``: each variant's final AP and DETR's AP at the same epoch.
    - ``small_objects``: final APs of DETR and multi-scale Deformable DETR, and DETR's at
      the latter's last epoch.
    - ``multi_scale``, ``refinement``, ``two_stage``: final AP and APs of a variant
      against the one it extends.
    """
    summary: dict[str, Any] = {"final": {name: final(res) for name, res in results.items()}}
    base = results.get(BASELINE)
    if base and base.get("AP"):
        summary["detr_learnt"] = {
            "AP50": base["AP50"][-1],
            "gate": DETR_GATE_AP50,
            "passed": base["AP50"][-1] >= DETR_GATE_AP50,
        }
        target, base_epochs = base["AP"][-1], base["epochs"][-1]
        reach: dict[str, Any] = {"baseline_final_AP": target, "baseline_epochs": base_epochs}
        equal: dict[str, Any] = {}
        for name, res in results.items():
            reached = epochs_to_reach(res["epochs"], res["AP"], target)
            fraction = None if reached is None else reached / base_epochs
            reach[name] = {
                "epochs": reached,
                "fraction_of_detr_epochs": fraction,
                "within_paper_fraction": fraction is not None and fraction <= PAPER_FRACTION,
            }
            if name != BASELINE:
                epoch = res["epochs"][-1]
                detr_ap = value_at(base["epochs"], base["AP"], epoch)
                equal[name] = {
                    "epoch": epoch,
                    "AP": res["AP"][-1],
                    "detr_AP": detr_ap,
                    "difference": None if detr_ap is None else res["AP"][-1] - detr_ap,
                }
        summary["epochs_to_detr_final_AP"] = reach
        summary["ap_at_equal_epochs"] = equal
        ms = results.get("ddetr")
        if ms and ms.get("APs"):
            epoch = ms["epochs"][-1]
            summary["small_objects"] = {
                "final_APs": {BASELINE: base["APs"][-1], "ddetr": ms["APs"][-1]},
                "at_epoch": epoch,
                "detr_APs_at_epoch": value_at(base["epochs"], base["APs"], epoch),
                "difference": ms["APs"][-1] - base["APs"][-1],
                "agrees_with_paper": ms["APs"][-1] > base["APs"][-1],
            }
    for claim, better, base_name in ABLATIONS:
        entry = {m: _gain(results, better, base_name, m) for m in ("AP", "APs")}
        if entry["AP"] is not None:
            summary[claim] = entry
    return summary


def spread(values: list[float | None]) -> dict[str, Any]:
    """Mean, min and max of the values present, with the values themselves."""
    present = [v for v in values if v is not None]
    if not present:
        return {"values": values, "mean": None, "min": None, "max": None}
    return {
        "values": values,
        "mean": sum(present) / len(present),
        "min": min(present),
        "max": max(present),
    }


def _verdict(flags: list[bool]) -> str:
    """ "agrees" only when every seed agrees; "disagrees" when none does; else "mixed"."""
    if flags and all(flags):
        return "agrees"
    return "disagrees" if not any(flags) else "mixed"


def combine(per_seed: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """The claims across seeds (seed -> :func:`summarize`), each with mean and spread.

    A claim "agrees" only when it agrees in every seed. Claims about DETR are marked
    ``tested`` only when DETR passed the AP50 gate in every seed that ran it.
    """
    seeds = sorted(per_seed)
    out: dict[str, Any] = {"seeds": seeds}
    variants = sorted({v for s in seeds for v in per_seed[s]["final"]})
    out["final"] = {
        v: {
            m: spread([per_seed[s]["final"].get(v, {}).get(m) for s in seeds])
            for m in METRICS
            if any(m in per_seed[s]["final"].get(v, {}) for s in seeds)
        }
        for v in variants
    }
    with_detr = [s for s in seeds if "detr_learnt" in per_seed[s]]
    if with_detr:
        passed = [per_seed[s]["detr_learnt"]["passed"] for s in with_detr]
        tested = all(passed)
        out["detr_learnt"] = {
            "AP50": spread([per_seed[s]["detr_learnt"]["AP50"] for s in with_detr]),
            "gate": DETR_GATE_AP50,
            "seeds": with_detr,
            "passed": passed,
            "tested": tested,
        }
        reach: dict[str, Any] = {"tested": tested}
        for v in variants:
            if v == BASELINE:
                continue
            entries = [per_seed[s]["epochs_to_detr_final_AP"].get(v) for s in with_detr]
            if any(e is None for e in entries):
                continue
            reach[v] = {
                "epochs": [e["epochs"] for e in entries],
                "fraction": spread([e["fraction_of_detr_epochs"] for e in entries]),
                "verdict": _verdict([e["within_paper_fraction"] for e in entries]),
            }
            equal = [per_seed[s]["ap_at_equal_epochs"].get(v) for s in with_detr]
            reach[v]["equal_epochs_difference"] = spread([e["difference"] for e in equal])
        out["epochs_to_detr_final_AP"] = reach
        small = [per_seed[s]["small_objects"] for s in with_detr if "small_objects" in per_seed[s]]
        if small and len(small) == len(with_detr):
            out["small_objects"] = {
                "difference": spread([e["difference"] for e in small]),
                "verdict": _verdict([e["agrees_with_paper"] for e in small]),
                "tested": tested,
            }
    for claim, _, _ in ABLATIONS:
        entries = [per_seed[s].get(claim) for s in seeds]
        if not all(entries):
            continue
        out[claim] = {
            m: {
                "difference": spread([e[m]["difference"] for e in entries]),
                "verdict": _verdict([e[m]["agrees_with_paper"] for e in entries]),
            }
            for m in ("AP", "APs")
        }
    return out
