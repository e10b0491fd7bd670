"""bench_msda's bookkeeping: cells checked against the reference, speedups, their plot."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from msda_match import Impl, compare_to_reference
from torch import Tensor

OURS = ("kernel", "triton")  # must run and match the reference; the rest are anchors


def check_cells(
    impls: dict[str, Impl], inputs: tuple[Tensor, ...], softmax: bool, key: dict[str, Any]
) -> tuple[list[dict[str, Any]], set[str]]:
    """Each implementation's forward + backward against the float64 reference, as cells.

    An anchor that raises is "skipped: <error>" (it cannot run this dtype or shape); one of
    ours that raises or disagrees is "failed". Returns the cells and the names that ran.
    """
    cells: list[dict[str, Any]] = []
    ran: set[str] = set()
    for name, impl in impls.items():
        cell: dict[str, Any] = {**key, "impl": name}
        try:
            cell.update(compare_to_reference(impl, inputs, softmax))
        except Exception as exc:
            cell["status"] = f"{'failed' if name in OURS else 'skipped'}: {exc!r}"
        else:
            ran.add(name)
            ok = cell["matched"] or name not in OURS
            cell["status"] = "ran" if ok else "failed: does not match the reference"
        cells.append(cell)
    return cells, ran


def record_error(
    cells: list[dict[str, Any]], key: dict[str, Any], name: str, mode: str, error: object
) -> None:
    """A timing call that raised: the cell of ``name`` becomes failed (ours) or skipped."""
    for cell in cells:
        if cell["impl"] == name and all(cell[k] == v for k, v in key.items()):
            verdict = "failed" if name in OURS else "skipped"
            cell["status"] = f"{verdict}: {mode}: {error}"
    print(f"{key['case']} {key['dtype']} {mode} {name}: {error}", flush=True)


def speedups(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each implementation's time over msda_ops' fastest backend, per case, dtype, mode."""
    groups: dict[tuple[Any, ...], dict[str, float]] = {}
    for r in rows:
        k = (r["case"], r["dtype"], r["mode"], r["softmax"])
        groups.setdefault(k, {})[r["impl"]] = r["median_s"]
    out = []
    for (case, dtype, mode, softmax), times in groups.items():
        ours = {k: v for k, v in times.items() if k in ("kernel", "triton")}
        if not ours:
            continue
        best_name = min(ours, key=ours.__getitem__)
        for name, t in times.items():
            if name != best_name:
                out.append(
                    {
                        "case": case,
                        "dtype": dtype,
                        "mode": mode,
                        "softmax": softmax,
                        "ours": best_name,
                        "versus": name,
                        "speedup": t / ours[best_name],
                    }
                )
    return out


def plot_speedups(rows: list[dict[str, Any]], path: Path) -> bool:
    """Each anchor's time over our fastest backend, one bar per (case, dtype, mode, softmax)
    and anchor, on a log axis (False: no matplotlib, or nothing to draw)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot")
        return False
    versus = sorted({r["versus"] for r in rows})
    groups = sorted({(r["case"], r["dtype"], r["mode"], r["softmax"]) for r in rows})
    if not groups:
        return False
    fig, ax = plt.subplots(figsize=(max(6, 0.35 * len(groups) * len(versus)), 4))
    width = 0.8 / len(versus)
    for i, name in enumerate(versus):
        found = {
            (r["case"], r["dtype"], r["mode"], r["softmax"]): r["speedup"]
            for r in rows
            if r["versus"] == name
        }
        heights = [found.get(g, 0.0) for g in groups]
        ax.bar([j + i * width for j in range(len(groups))], heights, width, label=name)
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_yscale("log")
    ax.set_ylabel("anchor time / our time (> 1: ours faster)")
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(groups))])
    ax.set_xticklabels(
        [f"{c} {d} {m}{' sm' if sm else ''}" for c, d, m, sm in groups], rotation=60, ha="right"
    )
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True
