"""Training curves: the loss and COCO AP of a run's ``metrics.jsonl``, drawn as one PNG.

``zoo plot RUN_DIR`` draws ``RUN_DIR/curves.png``; the trainer can call :func:`plot_run`
after every evaluation. matplotlib is optional (``pip install 'detr-zoo[plot]'``):
:func:`have_matplotlib` says whether it is there, :func:`plot_metrics` raises
:class:`ModuleNotFoundError` with that command when it is not.
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

AP_KEYS = ("AP", "AP50", "AP75")
INSTALL_HINT = (
    "drawing curves needs matplotlib: pip install 'matplotlib>=3.7' (the 'detr-zoo[plot]' extra; "
    "from a checkout: pip install ./msda_ops '.[plot]')"
)


def have_matplotlib() -> bool:
    """Whether :func:`plot_metrics` can draw (matplotlib importable)."""
    return importlib.util.find_spec("matplotlib") is not None


def read_records(path: str | Path) -> list[dict[str, Any]]:
    """The JSON records of a metrics file, one per line (blank lines skipped).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: a line is not JSON (its number is named).
    """
    records = []
    for number, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}:{number} is not a JSON record ({error})") from None
    return records


def smooth(values: Sequence[float], window: int) -> list[float]:
    """Trailing moving average over ``window`` values (the first ones over fewer)."""
    if window < 1:
        raise ValueError(f"smooth: window must be >= 1, got {window}")
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def plot_metrics(records: Sequence[dict[str, Any]], out: str | Path, title: str = "") -> Path:
    """Draw the ``train`` losses and the ``eval`` AP against steps into the PNG ``out``.

    Left panel: ``loss`` of every ``train`` record (light) and its moving average; right
    panel: AP, AP50 and AP75 of every ``eval`` record. A kind of record that is absent
    has no panel.

    Raises:
        ModuleNotFoundError: matplotlib is missing.
        ValueError: no ``train`` nor ``eval`` record.
    """
    if not have_matplotlib():
        raise ModuleNotFoundError(INSTALL_HINT)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [r for r in records if r.get("event") == "train" and "loss" in r]
    evals = [r for r in records if r.get("event") == "eval"]
    if not train and not evals:
        raise ValueError("plot_metrics: no 'train' or 'eval' record to draw")
    # One panel per kind of record present: a run logged without losses gets AP only.
    kinds = [k for k, records_of in (("loss", train), ("ap", evals)) if records_of]
    fig, axes = plt.subplots(1, len(kinds), figsize=(5 * len(kinds), 4), squeeze=False)
    panels = dict(zip(kinds, axes[0], strict=True))
    if "loss" in panels:
        ax_loss = panels["loss"]
        steps = [r["step"] for r in train]
        losses = [float(r["loss"]) for r in train]
        ax_loss.plot(steps, losses, color="tab:blue", alpha=0.25, linewidth=0.8)
        window = max(1, len(losses) // 50)
        ax_loss.plot(steps, smooth(losses, window), color="tab:blue", label=f"mean of {window}")
        ax_loss.set_yscale("log")
        ax_loss.legend()
        ax_loss.set(title="training loss", xlabel="step")
    if "ap" in panels:
        ax_ap = panels["ap"]
        steps = [r["step"] for r in evals]
        for key in AP_KEYS:
            if all(key in r for r in evals):
                ax_ap.plot(steps, [r[key] for r in evals], marker="o", markersize=3, label=key)
        ax_ap.set_ylim(0, 1)
        ax_ap.legend()
        ax_ap.grid(alpha=0.3)
        ax_ap.set(title="COCO box AP (validation)", xlabel="step")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def plot_run(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """``run_dir/metrics.jsonl`` drawn to ``out`` (default ``run_dir/curves.png``)."""
    run = Path(run_dir)
    metrics = run / "metrics.jsonl"
    if not metrics.is_file():
        raise FileNotFoundError(
            f"no metrics.jsonl in {str(run)!r} (is it a training run's folder?)"
        )
    return plot_metrics(read_records(metrics), out or run / "curves.png", title=run.name)
