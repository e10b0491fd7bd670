"""Whole models: the zoo's two-stage Deformable DETR against transformers, same weights.

One transformers ``DeformableDetrForObjectDetection`` with the official two-stage
configuration (box refinement, two-stage, random timm ResNet-50, 300 queries, 6+6
layers, hidden 256, FFN 1024) gets random values in every weight (the ones transformers
initialises to zero or constants too), is saved with ``save_pretrained`` and loaded by
``zoo.load_transformers_folder``. Before any timing the two are checked to agree: in
float64 on a small padded batch (the two-stage top-k may pick other proposals under
float32 noise, so float64 is the equality check) and, reported only, in float32 at
the benchmark size.

Measured, zoo and transformers interleaved round by round (same process, same inputs):

- inference (``torch.no_grad``) images/s at each ``--batch-sizes`` and ``--dtypes``
  (float32, or bfloat16 autocast), median wall time and median process CPU time;
- with ``--train``, one training step at ``--train-batch`` (default 4, ~7 random boxes per
  image): forward, loss and matching, backward, AdamW step. The zoo uses its
  ``SetCriterion`` with the Rust matcher (``zoo.build_criterion``); transformers its own
  loss through ``labels=`` (scipy matcher), auxiliary losses on for both;
- on CUDA, peak memory of a call (``torch.cuda.max_memory_allocated`` above what was
  allocated just before it; for training also each model's parameters and AdamW state);
- with ``--compile``, everything again with both models under ``torch.compile`` (the
  zoo's training step also compiles its criterion, as ``zoo train --compile``);
- for each eager training step, a per-phase breakdown (backbone, encoder, decoder,
  other forward, matcher, loss, backward, optimizer) of one step profiled with
  ``torch.profiler`` ranges, for both libraries (:func:`profile_phases`).

Run::

    python benchmarks/bench_models.py --device cuda --train            # -> results/models_cuda.json
    python benchmarks/bench_models.py --device cuda --train --compile --output models_cuda_compile
    python benchmarks/bench_models.py --device cpu --batch-sizes 1 --dtypes float32 --repeats 3
    python benchmarks/bench_models.py --device cpu --quick --train     # smoke run, scratch file
    python benchmarks/bench_models.py --device cpu --size 384 512 --train --no-inference \\
        --train-batch 2 --dtypes float32 --repeats 3 --output models_cpu_train

CPU bfloat16: on a virtual machine whose CPU advertises AMX without the kernel enabling it,
oneDNN's bfloat16 matmuls die with SIGILL (any ``nn.Linear``, not this code); run with
``ONEDNN_MAX_CPU_ISA=AVX512_CORE_BF16`` there.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import importlib.util
import math
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
# The repository root only as a fallback: an installed zoo / matcher_rs (the wheel carried to
# the GPU machine, whose tree lacks the compiled matcher_rs._core) must win.
sys.path.append(str(Path(__file__).resolve().parents[1]))

from harness import format_table, results_path, time_fn, write_json

import zoo
from msda_ops import ops as msda_ops_ops

if TYPE_CHECKING:
    from transformers import DeformableDetrForObjectDetection

IMPLS = ("zoo", "transformers")
NUM_CLASSES = 91  # COCO, as the official checkpoints
# The smallest image whose encoder has at least 300 pixels (the two-stage proposals).
QUICK_SIZE = (128, 192)
CHECK_SIZES = ((128, 192), (112, 160))  # the float64 agreement batch (padded)

# The official two-stage Deformable DETR (SenseTime/deformable-detr-with-box-refine-two-stage).
OFFICIAL_TWO_STAGE: dict[str, Any] = {
    "use_timm_backbone": True,
    "backbone": "resnet50",
    "use_pretrained_backbone": False,
    "num_labels": NUM_CLASSES,
    "d_model": 256,
    "encoder_layers": 6,
    "decoder_layers": 6,
    "encoder_attention_heads": 8,
    "decoder_attention_heads": 8,
    "encoder_ffn_dim": 1024,
    "decoder_ffn_dim": 1024,
    "num_queries": 300,
    "two_stage_num_proposals": 300,
    "num_feature_levels": 4,
    "encoder_n_points": 4,
    "decoder_n_points": 4,
    "with_box_refine": True,
    "two_stage": True,
    # The official matcher weighs the focal class cost by 2 (transformers' default is 1).
    "class_cost": 2,
    "bbox_cost": 5,
    "giou_cost": 2,
    "auxiliary_loss": True,
}


# ---------------------------------------------------------------- models and inputs


def randomize_(model: nn.Module, seed: int = 0) -> None:
    """Give every float parameter and buffer random values of a sensible scale, in place.

    transformers initialises many tensors to zero or constants (sampling offsets,
    attention weights, the last box layer, frozen batch-norm statistics); random values
    everywhere make the agreement check sensitive to every weight. Matrices get
    N(0, 1/fan_in), running variances U(0.5, 1.5), other weights 1 + N(0, 0.2^2) and
    biases and means N(0, 0.2^2).
    """
    gen = torch.Generator().manual_seed(seed)
    seen: set[int] = set()
    with torch.no_grad():
        for name, t in [*model.named_parameters(), *model.named_buffers()]:
            if not t.is_floating_point() or id(t) in seen:
                continue
            seen.add(id(t))  # tied heads are one tensor under several names
            if name.endswith("running_var"):
                value = torch.rand(t.shape, generator=gen) + 0.5
            elif t.dim() >= 2:
                value = torch.randn(t.shape, generator=gen) / math.sqrt(math.prod(t.shape[1:]))
            elif name.endswith("weight"):
                value = 1 + 0.2 * torch.randn(t.shape, generator=gen)
            else:
                value = 0.2 * torch.randn(t.shape, generator=gen)
            t.copy_(value)


def build_transformers_model(seed: int = 0, **overrides: Any) -> DeformableDetrForObjectDetection:
    """transformers' two-stage Deformable DETR (official sizes), every weight random, eval mode.

    The backbone is trained as in the official recipe: stem and ``layer1`` frozen,
    ``layer2``-``layer4`` trainable (transformers 5 leaves a timm ResNet fully trainable),
    so both models update the same parameters.
    """
    import transformers

    config = transformers.DeformableDetrConfig(**{**OFFICIAL_TWO_STAGE, **overrides})
    model = transformers.DeformableDetrForObjectDetection(config)
    randomize_(model, seed)
    for name, param in model.model.backbone.named_parameters():
        param.requires_grad_(any(f"layer{i}" in name for i in (2, 3, 4)))
    return model.eval()


def build_pair(folder: Path, seed: int = 0, **overrides: Any) -> tuple[nn.Module, nn.Module]:
    """(zoo model, transformers model) with the same random weights, both float32 on the CPU.

    The transformers model is saved to ``folder`` with ``save_pretrained`` and the zoo
    model loaded from there (strictly: every key must find its place). ``overrides``
    change the transformers configuration (the tests use a tiny model).
    """
    hf = build_transformers_model(seed, **overrides)
    hf.save_pretrained(folder)
    ours = zoo.load_transformers_folder(folder)
    report: Any = ours.load_report
    if not report.ok:
        raise RuntimeError(f"the zoo did not load every weight: {report}")
    return ours.eval(), hf


def num_encoder_pixels(height: int, width: int, levels: int = 4) -> int:
    """S = sum of H_l * W_l over the levels (strides 8, 16, 32, 64) of an image."""
    total = 0
    h, w = math.ceil(height / 8), math.ceil(width / 8)
    for _ in range(levels):
        total += h * w
        h, w = math.ceil(h / 2), math.ceil(w / 2)
    return total


def random_images(
    sizes: list[tuple[int, int]],
    device: torch.device,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
) -> tuple[Tensor, Tensor]:
    """Normal-noise images of ``sizes`` zero-padded into one batch, and the real-pixel mask (1/0)."""
    gen = torch.Generator().manual_seed(seed)
    h = max(s[0] for s in sizes)
    w = max(s[1] for s in sizes)
    pixels = torch.zeros(len(sizes), 3, h, w, dtype=dtype)
    mask = torch.zeros(len(sizes), h, w, dtype=torch.long)
    for i, (hi, wi) in enumerate(sizes):
        pixels[i, :, :hi, :wi] = torch.randn(3, hi, wi, generator=gen, dtype=dtype)
        mask[i, :hi, :wi] = 1
    return pixels.to(device), mask.to(device)


def random_targets(
    batch: int, device: torch.device, seed: int = 0, mean_boxes: int = 7
) -> list[dict[str, Tensor]]:
    """Per image ``labels`` (T,) and ``boxes`` (T, 4) normalised cxcywh, T uniform in mean ± 3."""
    gen = torch.Generator().manual_seed(seed)
    targets = []
    for _ in range(batch):
        low = max(1, mean_boxes - 3)
        n = int(torch.randint(low, mean_boxes + 4, (1,), generator=gen))
        cxcy = 0.2 + 0.6 * torch.rand(n, 2, generator=gen)
        wh = 0.05 + 0.35 * torch.rand(n, 2, generator=gen)
        labels = torch.randint(0, NUM_CLASSES, (n,), generator=gen)
        targets.append({"labels": labels.to(device), "boxes": torch.cat([cxcy, wh], -1).to(device)})
    return targets


def hf_labels(targets: list[dict[str, Tensor]]) -> list[dict[str, Tensor]]:
    """The same targets in transformers' ``labels=`` layout."""
    return [{"class_labels": t["labels"], "boxes": t["boxes"]} for t in targets]


# ---------------------------------------------------------------- agreement


def _max_abs(a: Tensor, b: Tensor) -> float:
    """max |a - b|, computed in float64."""
    return float((a.double() - b.double()).abs().max())


def compare_outputs(ours: nn.Module, hf: nn.Module, pixels: Tensor, mask: Tensor) -> dict[str, Any]:
    """Max abs differences of logits, boxes and the encoder proposals' logits (no grad)."""
    with torch.no_grad():
        got = ours(pixels, mask)
        want = hf(pixel_values=pixels, pixel_mask=mask)
    return {
        "logits_max_abs_diff": _max_abs(got["pred_logits"], want.logits),
        "boxes_max_abs_diff": _max_abs(got["pred_boxes"], want.pred_boxes),
        "enc_logits_max_abs_diff": _max_abs(
            got["enc_outputs"]["pred_logits"], want.enc_outputs_class
        ),
        "logits_max_abs": float(want.logits.abs().max()),
        "shape": list(pixels.shape),
        "dtype": str(pixels.dtype).removeprefix("torch."),
    }


def check_agreement(
    ours: nn.Module, hf: nn.Module, device: torch.device, size: tuple[int, int], tol: float = 1e-6
) -> dict[str, Any]:
    """Check both models compute the same function before anything is timed.

    float64 on a small padded batch must agree to ``tol`` relative to the logits' scale
    (``RuntimeError`` otherwise); float32 at batch 1 and ``size`` is reported only (the
    two-stage top-k can pick other proposals when scores differ by float32 noise).
    Both models are left in float32 and eval mode.
    """
    ours.eval()
    hf.eval()
    pixels, mask = random_images(list(CHECK_SIZES), device, seed=1, dtype=torch.float64)
    ours.double()
    hf.double()
    try:
        f64 = compare_outputs(ours, hf, pixels, mask)
    finally:
        ours.float()  # float32 -> float64 -> float32 is exact: the weights are unchanged
        hf.float()
    scale = max(1.0, f64["logits_max_abs"])
    worst = max(
        f64[k] for k in ("logits_max_abs_diff", "boxes_max_abs_diff", "enc_logits_max_abs_diff")
    )
    f64["tolerance"] = tol * scale
    f64["equal"] = worst <= tol * scale
    if not f64["equal"]:
        raise RuntimeError(f"zoo and transformers disagree in float64: {f64}")
    pixels, mask = random_images([size], device, seed=2)
    f32 = compare_outputs(ours, hf, pixels, mask)
    return {"float64": f64, "float32": f32}


# ---------------------------------------------------------------- timing


def _sync(device: torch.device) -> None:
    """Wait for the device's queued work (no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _loadavg() -> list[float]:
    """The 1, 5 and 15 minute load averages of the machine."""
    return [round(x, 2) for x in os.getloadavg()]


class Probe:
    """Wraps a call to record, besides harness.time_fn's wall time, its CPU time and memory.

    CPU time is ``time.process_time`` of the whole process (all threads), steadier than
    wall time on a shared machine. On CUDA, ``peak_mib`` is the peak of
    ``torch.cuda.max_memory_allocated`` during the call above what was allocated before it.
    """

    def __init__(self, fn: Callable[[], Any], device: torch.device) -> None:
        self.fn = fn
        self.device = device
        self.cpu_s: list[float] = []
        self.peak_mib: list[float] = []

    def __call__(self) -> None:
        cuda = self.device.type == "cuda"
        if cuda:
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            before = torch.cuda.memory_allocated(self.device)
        t0 = time.process_time()
        self.fn()
        _sync(self.device)
        self.cpu_s.append(time.process_time() - t0)
        if cuda:
            self.peak_mib.append((torch.cuda.max_memory_allocated(self.device) - before) / 2**20)


def interleaved(
    fns: dict[str, Callable[[], Any]], device: torch.device, *, rounds: int, warmup: int
) -> dict[str, dict[str, Any]]:
    """Time each of ``fns`` ``rounds`` times, alternating between them (order flipped each round).

    Each sample is one ``harness.time_fn`` call (synchronised on CUDA). Returns per name the
    median wall and CPU seconds, every sample, and (CUDA) the peak memory of a call.
    """
    probes = {name: Probe(fn, device) for name, fn in fns.items()}
    for fn in fns.values():
        for _ in range(warmup):
            fn()
        _sync(device)
    wall: dict[str, list[float]] = {name: [] for name in fns}
    names = list(fns)
    for r in range(rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            probe = probes[name]
            wall[name].append(time_fn(probe, repeats=1, warmup=0)["median_s"])
    out: dict[str, dict[str, Any]] = {}
    for name, probe in probes.items():
        out[name] = {
            "median_s": statistics.median(wall[name]),
            "min_s": min(wall[name]),
            "cpu_median_s": statistics.median(probe.cpu_s),
            "samples_s": wall[name],
            "cpu_samples_s": probe.cpu_s,
            "peak_mib": max(probe.peak_mib) if probe.peak_mib else None,
        }
    return out


def _autocast(device: torch.device, dtype: str) -> contextlib.AbstractContextManager[Any]:
    """Autocast to ``dtype`` on ``device``; nothing for float32."""
    if dtype == "float32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=getattr(torch, dtype))


def inference_fns(
    models: dict[str, Callable[..., Any]],
    pixels: Tensor,
    mask: Tensor,
    device: torch.device,
    dtype: str,
) -> dict[str, Callable[[], Any]]:
    """One no-grad forward per implementation, under autocast unless ``dtype`` is float32."""

    def zoo_fn() -> Any:
        with torch.no_grad(), _autocast(device, dtype):
            return models["zoo"](pixels, mask)

    def hf_fn() -> Any:
        with torch.no_grad(), _autocast(device, dtype):
            return models["transformers"](pixel_values=pixels, pixel_mask=mask)

    return {"zoo": zoo_fn, "transformers": hf_fn}


def _adamw(model: nn.Module) -> torch.optim.Optimizer:
    """AdamW over the trainable parameters (the same settings for both models)."""
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.AdamW(params, lr=1e-5, weight_decay=1e-4)


def train_fns(
    models: dict[str, Callable[..., Any]],
    bases: dict[str, nn.Module],
    pixels: Tensor,
    mask: Tensor,
    targets: list[dict[str, Tensor]],
    device: torch.device,
    dtype: str,
    compile_criterion: bool = False,
) -> tuple[dict[str, Callable[[], Any]], dict[str, torch.optim.Optimizer], Any]:
    """One training step per implementation: forward, loss with matching, backward, AdamW.

    ``models`` are what is called (possibly compiled), ``bases`` the underlying modules
    whose parameters the optimisers own. Returns the steps, the optimisers and the zoo's
    criterion.
    """
    config: Any = bases["zoo"].config
    criterion = zoo.build_criterion(config)
    if compile_criterion:
        # zoo train --compile's loss: compiled, the matcher its one graph break.
        criterion.compile()
    opts = {name: _adamw(bases[name]) for name in IMPLS}
    labels = hf_labels(targets)

    # The gradients are freed after each step (not before the next), so that between steps
    # only weights and optimiser state stay allocated and a step's peak memory covers them.
    # Profiler ranges (no cost unless profiling) for profile_phases; phase_ranges adds the
    # models' own.
    def zoo_step() -> Tensor:
        with _ranges("step"):
            with _autocast(device, dtype):
                with _ranges("forward"):
                    outputs = models["zoo"](pixels, mask)
                with _ranges("criterion"):
                    loss = criterion(outputs, targets)["loss"]
            return _backward_and_step(loss, opts["zoo"])

    def hf_step() -> Tensor:
        with _ranges("step"):
            with _autocast(device, dtype), _ranges("forward"):
                out = models["transformers"](pixel_values=pixels, pixel_mask=mask, labels=labels)
            return _backward_and_step(out.loss, opts["transformers"])

    return {"zoo": zoo_step, "transformers": hf_step}, opts, criterion


def _ranges(name: str) -> torch.autograd.profiler.record_function:
    return torch.autograd.profiler.record_function(_RANGE + name)


def _backward_and_step(loss: Tensor, opt: torch.optim.Optimizer) -> Tensor:
    with _ranges("backward"):
        loss.backward()
    with _ranges("optimizer"):
        opt.step()
        opt.zero_grad(set_to_none=True)
    return loss.detach()


# ---------------------------------------------------------------- phases

PHASES = (
    "backbone",
    "encoder",
    "decoder",
    "other_forward",
    "matcher",
    "loss",
    "backward",
    "optimizer",
)
_RANGE = "phase:"


@contextlib.contextmanager
def _module_ranges(modules: dict[str, nn.Module]) -> Iterator[None]:
    """A profiler range ``phase:<name>`` around every forward call of each module."""
    handles = []
    for name, module in modules.items():
        open_ranges: list[Any] = []

        def enter(_m: nn.Module, _args: Any, name: str = name, stack: list = open_ranges) -> None:
            rf = torch.autograd.profiler.record_function(_RANGE + name)
            rf.__enter__()
            stack.append(rf)

        def leave(_m: nn.Module, _args: Any, _out: Any, stack: list = open_ranges) -> None:
            stack.pop().__exit__(None, None, None)

        handles += [module.register_forward_pre_hook(enter), module.register_forward_hook(leave)]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def _ranged(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` inside a profiler range ``phase:<name>``."""

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with torch.autograd.profiler.record_function(_RANGE + name):
            return fn(*args, **kwargs)

    return wrapper


@contextlib.contextmanager
def phase_ranges(impl: str, model: nn.Module, criterion: Any = None) -> Iterator[None]:
    """Profiler ranges for the phases of a training step of ``impl``'s ``model``.

    Both libraries: ``backbone``, ``encoder``, ``decoder`` (module forwards), ``matcher``
    and ``criterion`` (the loss including the matching). The zoo's loss is its
    ``SetCriterion`` (``criterion``), outside the forward; transformers computes its loss
    inside ``forward`` (``labels=``), through ``model.loss_function`` and its
    ``DeformableDetrHungarianMatcher``.
    """
    if impl == "zoo":
        parts = {"backbone": model.backbone, "encoder": model.encoder, "decoder": model.decoder}
        matcher = criterion.matcher
        with _module_ranges(parts):
            matcher.match_all = _ranged("matcher", matcher.match_all)
            try:
                yield
            finally:
                del matcher.match_all  # the instance attribute: the method shows again
        return
    from transformers.loss import loss_deformable_detr

    inner = model.model
    parts = {"backbone": inner.backbone, "encoder": inner.encoder, "decoder": inner.decoder}
    matcher_cls = loss_deformable_detr.DeformableDetrHungarianMatcher
    forward = matcher_cls.forward
    had_loss = "_loss_function" in vars(model)
    previous = model.loss_function
    model.loss_function = _ranged("criterion", previous)
    matcher_cls.forward = _ranged("matcher", forward)
    try:
        with _module_ranges(parts):
            yield
    finally:
        matcher_cls.forward = forward
        if had_loss:
            model.loss_function = previous
        else:
            del model._loss_function


def profile_phases(
    step: Callable[[], Any], device: torch.device, *, loss_in_forward: bool
) -> dict[str, Any]:
    """Milliseconds per phase of one ``step`` call, from the profiler's ``phase:`` ranges.

    ``step`` opens the ranges ``step``, ``forward``, ``criterion``, ``backward`` and
    ``optimizer`` itself (see :func:`train_fns`); :func:`phase_ranges` adds the model's.
    Host time of each range (on CUDA, where the host mostly queues work, also the device
    time under ``device_ms``). Exclusive phases: ``loss`` = criterion - matcher,
    ``other_forward`` = forward - backbone - encoder - decoder (- criterion when the loss is
    computed inside the forward, ``loss_in_forward``); ``unattributed`` = step - the phases.
    """
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as prof:
        step()
        _sync(device)
    host: dict[str, float] = {}
    dev: dict[str, float] = {}
    for event in prof.key_averages():
        if event.key.startswith(_RANGE):
            name = event.key.removeprefix(_RANGE)
            host[name] = host.get(name, 0.0) + event.cpu_time_total / 1e3
            dev[name] = dev.get(name, 0.0) + getattr(event, "device_time_total", 0.0) / 1e3
    out: dict[str, Any] = _exclusive(host, loss_in_forward)
    if device.type == "cuda":
        out["device_ms"] = _exclusive(dev, loss_in_forward)
    return out


def add_phases(
    entry: dict[str, Any],
    fns: dict[str, Callable[[], Any]],
    bases: dict[str, nn.Module],
    criterion: Any,
    device: torch.device,
) -> None:
    """Add ``phases_ms`` (:func:`profile_phases`, one profiled step) to each result."""
    for name in IMPLS:
        if "error" in entry[name]:
            continue
        with phase_ranges(name, bases[name], criterion):
            entry[name]["phases_ms"] = profile_phases(
                fns[name], device, loss_in_forward=name == "transformers"
            )


def _exclusive(ranges: dict[str, float], loss_in_forward: bool) -> dict[str, float]:
    """Inclusive range times -> the exclusive :data:`PHASES`, ``step`` and ``unattributed``."""
    t = {k: ranges.get(k, 0.0) for k in (*PHASES, "step", "forward", "criterion")}
    out = {
        "backbone": t["backbone"],
        "encoder": t["encoder"],
        "decoder": t["decoder"],
        "other_forward": t["forward"]
        - t["backbone"]
        - t["encoder"]
        - t["decoder"]
        - (t["criterion"] if loss_in_forward else 0.0),
        "matcher": t["matcher"],
        "loss": t["criterion"] - t["matcher"],
        "backward": t["backward"],
        "optimizer": t["optimizer"],
    }
    out["step"] = t["step"]
    out["unattributed"] = t["step"] - sum(out[p] for p in PHASES)
    return out


def state_mib(model: nn.Module, opt: torch.optim.Optimizer | None = None) -> float:
    """Parameters, buffers and optimiser state of one model, MiB (resident between calls)."""
    total = sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])
    for state in opt.state.values() if opt is not None else []:
        total += sum(v.numel() * v.element_size() for v in state.values() if torch.is_tensor(v))
    return total / 2**20


def _summary(entry: dict[str, Any], batch: int) -> None:
    """Add images/s and the zoo/transformers ratios to a result entry, in place."""
    z, t = entry["zoo"], entry["transformers"]
    if "error" in z or "error" in t:
        return
    for r in (z, t):
        r["images_per_s"] = batch / r["median_s"]
    entry["speedup"] = t["median_s"] / z["median_s"]  # > 1: the zoo is faster
    entry["cpu_time_speedup"] = t["cpu_median_s"] / z["cpu_median_s"]
    if z.get("peak_mib") is not None and t.get("peak_mib"):
        key = "total_mib" if "total_mib" in z else "peak_mib"
        entry["memory_ratio"] = z[key] / t[key]  # < 1: the zoo needs less


def _print(kind: str, entry: dict[str, Any]) -> None:
    """One line per measurement: times, ratios, memory and load."""
    z, t = entry["zoo"], entry["transformers"]
    head = f"{kind:9s} b={entry['batch']} {entry['dtype']:8s} compiled={entry['compiled']!s:5s}"
    if "speedup" not in entry:
        print(f"{head} error: zoo {z.get('error')} / transformers {t.get('error')}", flush=True)
        return
    mem = ""
    if "memory_ratio" in entry:
        key = "total_mib" if "total_mib" in z else "peak_mib"
        mem = f"  mem {z[key]:.0f}/{t[key]:.0f} MiB (x{entry['memory_ratio']:.2f})"
    print(
        f"{head} zoo {z['median_s'] * 1e3:9.1f} ms (cpu {z['cpu_median_s']:.2f} s)  "
        f"transformers {t['median_s'] * 1e3:9.1f} ms (cpu {t['cpu_median_s']:.2f} s)  "
        f"x{entry['speedup']:.2f} wall, x{entry['cpu_time_speedup']:.2f} cpu{mem}  "
        f"load {entry['load_average_after']}",
        flush=True,
    )
    for name in IMPLS:
        if "phases_ms" in entry[name]:
            phases = entry[name]["phases_ms"]
            listed = "  ".join(f"{p} {phases[p]:.0f}" for p in (*PHASES, "unattributed"))
            print(f"{'':9s} {name} phases (ms of a {phases['step']:.0f} ms step): {listed}")


def _measure(
    fns: dict[str, Callable[[], Any]], device: torch.device, rounds: int, warmup: int
) -> dict[str, dict[str, Any]]:
    """``interleaved``, with an implementation that fails recorded as an error, not fatal."""
    ok: dict[str, Callable[[], Any]] = {}
    out: dict[str, dict[str, Any]] = {}
    for name, fn in fns.items():
        try:
            fn()  # also the first warm-up call (compilation happens here)
            ok[name] = fn
        except Exception as exc:  # a compile or autocast failure of one side is a result too
            out[name] = {"error": f"{type(exc).__name__}: {exc}"[:500]}
    if ok:
        out.update(interleaved(ok, device, rounds=rounds, warmup=max(0, warmup - 1)))
    return out


# ---------------------------------------------------------------- environment


def versions() -> dict[str, Any]:
    """Versions of the libraries compared (torch's is in the harness environment)."""
    out: dict[str, Any] = {}
    # detr-zoo is the distribution of zoo and matcher_rs.
    for dist in ("transformers", "timm", "torchvision", "scipy", "msda-ops", "detr-zoo"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = None
    return out


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo on Linux)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def backends(device: torch.device) -> dict[str, str]:
    """The deformable-attention implementation each model uses on ``device``."""
    kernel = msda_ops_ops.kernel_available(device.type, False)  # builds it if it can
    hub = "installed" if importlib.util.find_spec("kernels") is not None else "not installed"
    return {
        "zoo_msda": f"msda_ops {'kernel' if kernel else 'reference (no kernel could be built)'}",
        "transformers_msda": (
            "MultiScaleDeformableAttention's pure PyTorch grid_sample path (the model is "
            f"built directly, not kernelized with use_kernels=True; `kernels` {hub})"
        ),
        "zoo_matcher": "matcher_rs (batched, Rust)",
        "transformers_matcher": "scipy.optimize.linear_sum_assignment per image",
    }


# ---------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options (see the module docstring)."""
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument(
        "--batch-sizes", type=int, nargs="+", default=None, help="default 1 8 (quick: 1)"
    )
    p.add_argument(
        "--size", type=int, nargs=2, metavar=("H", "W"), default=None, help="default 800 1216"
    )
    p.add_argument("--dtypes", nargs="+", choices=("float32", "bfloat16", "float16"), default=None)
    p.add_argument(
        "--compile", action="store_true", help="also time both models under torch.compile"
    )
    p.add_argument("--train", action="store_true", help="also time training steps")
    p.add_argument("--no-inference", action="store_true", help="only the training steps")
    p.add_argument("--train-batch", type=int, default=None, help="default 4 (quick: 2)")
    p.add_argument(
        "--repeats", type=int, default=None, help="interleaved rounds (default 10, quick 1)"
    )
    p.add_argument("--warmup", type=int, default=None, help="untimed calls (default 3, CPU 1)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--quick", action="store_true", help=f"smoke run at {QUICK_SIZE}, writes nothing by default"
    )
    p.add_argument(
        "--output",
        default=None,
        help="results name in results/ or a .json path (default models_<device>; quick: a "
        "scratch file)",
    )
    args = p.parse_args(argv)
    quick = args.quick
    args.size = tuple(args.size or (QUICK_SIZE if quick else (800, 1216)))
    args.batch_sizes = args.batch_sizes or ([1] if quick else [1, 8])
    args.dtypes = args.dtypes or (["float32"] if quick else ["float32", "bfloat16"])
    args.train_batch = args.train_batch or (2 if quick else 4)
    args.repeats = args.repeats or (1 if quick else 10)
    if args.warmup is None:
        args.warmup = 1 if quick or args.device == "cpu" else 3
    if args.output is None and not quick:
        args.output = f"models_{torch.device(args.device).type}"
    if num_encoder_pixels(*args.size) < OFFICIAL_TWO_STAGE["two_stage_num_proposals"]:
        p.error(f"--size {args.size}: fewer encoder pixels than the 300 two-stage proposals")
    return args


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Build, check and time both models; returns the results payload."""
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    load_start = _loadavg()
    payload: dict[str, Any] = {
        "description": (
            "zoo vs transformers DeformableDetrForObjectDetection, official two-stage "
            "configuration (box refine + two-stage, random ResNet-50, 300 queries, 6+6 layers, "
            "hidden 256, FFN 1024), the same random weights; speedup = transformers time / zoo "
            "time (> 1: the zoo is faster); rounds interleaved zoo/transformers"
        ),
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "quick": args.quick,
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_model(),
        "versions": versions(),
        "backends": backends(device),
        "settings": {
            "size": list(args.size),
            "encoder_pixels": num_encoder_pixels(*args.size),
            "batch_sizes": args.batch_sizes,
            "dtypes": args.dtypes,
            "train_batch": args.train_batch if args.train else None,
            "rounds": args.repeats,
            "warmup": args.warmup,
            "warmup_compiled": _warmup(args, True) if args.compile else None,
            "torch_threads": torch.get_num_threads(),
            "float32_matmul_precision": torch.get_float32_matmul_precision(),
            "cudnn_benchmark": torch.backends.cudnn.benchmark,
        },
        "load_average_start": load_start,
        "timing_note": (
            "median_s: wall time (perf_counter) per call; cpu_median_s: process CPU time "
            "(time.process_time, all threads) per call, steadier than wall time when other "
            "processes share the cores; load averages (1, 5, 15 min) recorded through the run"
        ),
    }
    print(f"device {payload['device_name']}, load average {load_start}", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench_models_") as tmp:
        ours, hf = build_pair(Path(tmp), seed=args.seed)
    ours.to(device)
    hf.to(device)
    payload["agreement"] = check_agreement(ours, hf, device, args.size)
    a = payload["agreement"]
    print(
        "agreement: float64 max |diff| logits {logits_max_abs_diff:.1e} boxes {boxes_max_abs_diff:.1e}".format(
            **a["float64"]
        )
        + "; float32 {logits_max_abs_diff:.1e} / {boxes_max_abs_diff:.1e}".format(**a["float32"]),
        flush=True,
    )
    bases = {"zoo": ours, "transformers": hf}
    variants = [False, True] if args.compile else [False]
    payload["inference"], payload["training"] = [], []
    for compiled in variants:
        models = {k: torch.compile(m) if compiled else m for k, m in bases.items()}
        if not args.no_inference:
            for dtype in args.dtypes:
                for batch in args.batch_sizes:
                    pixels, mask = random_images([args.size] * batch, device, seed=3)
                    entry = _entry(batch, dtype, compiled)
                    entry.update(
                        _measure(
                            inference_fns(models, pixels, mask, device, dtype),
                            device,
                            args.repeats,
                            _warmup(args, compiled),
                        )
                    )
                    _add_state_memory(entry, bases)
                    entry["load_average_after"] = _loadavg()
                    _summary(entry, batch)
                    _print("inference", entry)
                    payload["inference"].append(entry)
                    del pixels, mask
        if args.train:
            for dtype in args.dtypes:
                entry = _train_entry(args, models, bases, device, dtype, compiled)
                payload["training"].append(entry)
                _print("training", entry)
        for m in bases.values():
            m.eval()
    payload["load_average_end"] = _loadavg()
    # ru_maxrss: the whole process's high-water mark (both models, every step), KiB on Linux.
    payload["process_maxrss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if device.type != "cuda":
        payload["memory_note"] = (
            "peak_mib is not measured on CPU: the only process-wide measure (ru_maxrss, above) "
            "is a high-water mark over both models and cannot be split between them"
        )
    return payload


def _add_state_memory(
    entry: dict[str, Any],
    bases: dict[str, nn.Module],
    opts: dict[str, torch.optim.Optimizer] | None = None,
) -> None:
    """Add each model's resident state and, on CUDA, ``total_mib`` = call peak + state."""
    for name in IMPLS:
        result = entry[name]
        if "error" in result:
            continue
        result["state_mib"] = state_mib(bases[name], opts[name] if opts else None)
        if result["peak_mib"] is not None:
            result["total_mib"] = result["peak_mib"] + result["state_mib"]


def _warmup(args: argparse.Namespace, compiled: bool) -> int:
    """Untimed calls: at least 3 under torch.compile (on CPU the call after the compiling one
    was seen to run far slower than the later ones on a cold compile cache)."""
    return max(args.warmup, 3) if compiled else args.warmup


def _entry(batch: int, dtype: str, compiled: bool) -> dict[str, Any]:
    """The keys that identify a measurement."""
    return {"batch": batch, "dtype": dtype, "compiled": compiled}


def _train_entry(
    args: argparse.Namespace,
    models: dict[str, Callable[..., Any]],
    bases: dict[str, nn.Module],
    device: torch.device,
    dtype: str,
    compiled: bool,
) -> dict[str, Any]:
    """One training-step measurement (both models in train mode, fresh AdamW states)."""
    batch = args.train_batch
    pixels, mask = random_images([args.size] * batch, device, seed=4)
    targets = random_targets(batch, device, seed=5)
    for m in bases.values():
        m.train()
    fns, opts, criterion = train_fns(
        models, bases, pixels, mask, targets, device, dtype, compile_criterion=compiled
    )
    entry = _entry(batch, dtype, compiled)
    entry["boxes_per_image"] = [len(t["labels"]) for t in targets]
    entry.update(_measure(fns, device, args.repeats, _warmup(args, compiled)))
    if not compiled:  # the hooks would break the compiled graphs
        add_phases(entry, fns, bases, criterion, device)
    _add_state_memory(entry, bases, opts)
    entry["load_average_after"] = _loadavg()
    entry["note"] = (
        "zoo: SetCriterion with aux and two-stage encoder losses (matcher_rs); transformers: "
        "its labels= loss with aux losses (no encoder loss, scipy matcher). Both: AdamW, no "
        "gradient clipping, dropout 0.1, same trainable parameters."
    )
    _summary(entry, batch)
    return entry


def main(argv: list[str] | None = None) -> int:
    """Entry point: run, print, write ``benchmarks/results/<output>.json`` (quick: scratch)."""
    args = parse_args(argv)
    payload = run(args)
    # A quick run without --output goes to a scratch file, never over the committed results.
    device = torch.device(args.device).type
    path = write_json(results_path(args.output, f"models_{device}_quick", scratch=True), payload)
    rows = [
        {"kind": kind, **{k: e.get(k) for k in ("batch", "dtype", "compiled", "speedup")}}
        for kind in ("inference", "training")
        for e in payload.get(kind, [])
    ]
    print(format_table(rows, ["kind", "batch", "dtype", "compiled", "speedup"]))
    print(f"wrote {path}")
    if plot_speedups(rows, path.with_suffix(".png")):
        print(f"wrote {path.with_suffix('.png')}")
    return 0


def plot_speedups(rows: list[dict[str, Any]], path: Path) -> bool:
    """One bar per measurement: transformers time / zoo time (False: no matplotlib or data)."""
    rows = [r for r in rows if r.get("speedup") is not None]
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot")
        return False
    if not rows:
        return False
    labels = [
        f"{r['kind']}\nb={r['batch']} {r['dtype']}" + (" compiled" if r["compiled"] else "")
        for r in rows
    ]
    fig, ax = plt.subplots(figsize=(max(4, 1.2 * len(rows)), 4))
    ax.bar(range(len(rows)), [r["speedup"] for r in rows], color="tab:blue")
    ax.axhline(1.0, color="gray", linewidth=0.8)
    ax.set_xticks(range(len(rows)), labels, fontsize=8)
    ax.set(ylabel="speedup (transformers time / zoo time)", title="zoo vs transformers")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


if __name__ == "__main__":
    raise SystemExit(main())
