"""The training loop: mixed precision, DDP, exact resume, checkpoints, COCO evaluation.

One :class:`Trainer` per process. Under torchrun every process builds the same model,
calls :func:`zoo.training.distributed.init_distributed` first, and trains its share of
every epoch's batches; rank 0 writes checkpoints, the metrics log and the progress bar.

A resumed run continues exactly: the weights, optimizer, scheduler, gradient scaler and
RNG states come from the checkpoint, the epoch's batches are a function of (seed, epoch)
(:func:`~zoo.training.distributed.epoch_batches`) so the ones already trained on are
skipped, and augmentation is seeded per sample (:class:`zoo.data.coco.CocoDetection`).
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from zoo.data.batching import DetectionBatch, collate
from zoo.data.coco import CocoDetection
from zoo.data.coco_eval import evaluate, format_metric
from zoo.training.checkpoint import (
    capture_rng,
    find_checkpoint,
    read_state,
    restore_rng,
    save_checkpoint,
)
from zoo.training.compile import compile_for_training, pad_to_bucket
from zoo.training.config import TrainConfig
from zoo.training.distributed import (
    ProcessInfo,
    ShardSampler,
    epoch_batches,
    on_every_rank,
    process_info,
)
from zoo.training.lock import RunLock
from zoo.training.log import MetricsLog
from zoo.training.optim import build_optimizer, build_scheduler
from zoo.training.run import check_belongs, check_unused, new_run_id, write_run
from zoo.training.step import Criterion, mean_over_processes, training_step
from zoo.weights.zoo_format import load_pretrained

_AMP = {"bf16": torch.bfloat16, "fp16": torch.float16}


class Trainer:
    """Train ``model`` with ``criterion`` on ``train_set``, evaluating on ``val_set``.

    Args:
        model: a zoo detector (``model.config`` is saved with checkpoints).
        criterion: ``(outputs, targets) -> dict`` holding the weighted total ``loss``.
        out_dir: checkpoints under ``out_dir/checkpoints``, metrics in
            ``out_dir/metrics.jsonl``; locked (:class:`~zoo.training.lock.RunLock`) from
            construction to the end of :meth:`fit`, so two runs never share it.
        info: this process's rank and device (default: from the process group).
        run_options: what started the run (the command line's options), recorded in
            ``out_dir/run.json`` and in every checkpoint, so a resume can restore them.

    The run has an id (:mod:`zoo.training.run`): a new run refuses a folder that holds
    another one, and :meth:`resume` takes the id of the checkpoint it continues.
    Operational events (resumed, a damaged checkpoint skipped) are printed and written
    to the metrics log as ``resume`` / ``skipped`` records, whatever the warning filters.

    Raises:
        RunLockedError: another live run holds ``out_dir`` (on every rank under DDP).
    """

    def __init__(
        self,
        model: nn.Module,
        criterion: Criterion,
        train_set: CocoDetection,
        config: TrainConfig,
        out_dir: str | Path,
        val_set: CocoDetection | None = None,
        info: ProcessInfo | None = None,
        run_options: dict[str, Any] | None = None,
    ) -> None:
        self.info = info or process_info()
        self.run_id = new_run_id()
        self.run_options = dict(run_options or {})
        self._claimed = False
        self.config = config
        self.out_dir = Path(out_dir)
        self._lock = RunLock(self.out_dir)
        self._locked = False
        self._take_lock()
        self.model = model.to(self.info.device)
        self.criterion = criterion
        if config.compile:
            compile_for_training(self.model, self.criterion)
        self.train_set = train_set
        self.val_set = val_set
        self.optimizer = build_optimizer(self.model, config)
        self.scheduler = build_scheduler(self.optimizer, config)
        self.amp_dtype = _AMP.get(config.amp or "")
        self.scaler = torch.amp.GradScaler(self.info.device.type, enabled=config.amp == "fp16")
        self.log = MetricsLog(
            self.out_dir / "metrics.jsonl",
            enabled=self.info.is_main,
            tensorboard_dir=self.out_dir / "tensorboard" if config.tensorboard else None,
        )
        self.epoch = 0
        self.batches_done = 0  # within self.epoch
        self.step = 0
        self.last_metrics: dict[str, float] | None = None
        if self.info.world_size > 1:
            device_ids = [self.info.device.index] if self.info.device.type == "cuda" else None
            self.ddp: nn.Module = DistributedDataParallel(
                self.model,
                device_ids=device_ids,
                find_unused_parameters=config.find_unused_parameters,
            )
        else:
            self.ddp = self.model

    # ------------------------------------------------------------ the run lock
    def _take_lock(self) -> None:
        """Rank 0 takes the folder's lock; every rank learns the outcome."""
        on_every_rank(self.info, self._lock.acquire)
        self._locked = True  # on every rank (only rank 0 holds the file lock)

    def event(self, kind: str, message: str, **fields: Any) -> None:
        """Print an operational event and record it in the metrics log (rank 0)."""
        if self.info.is_main:
            tqdm.write(message)
            self.log.write(kind, message=message, **fields)

    def close(self) -> None:
        """Release the output folder (:meth:`fit` does it when it returns)."""
        self._lock.release()
        self._locked = False

    # ------------------------------------------------------------ checkpoints
    def save(self) -> Path | None:
        """Checkpoint the current state (every rank must call it: RNG states are gathered)."""
        rng: list[Any] = [capture_rng()]
        if self.info.world_size > 1:
            gathered: list[Any] = [None] * self.info.world_size
            dist.all_gather_object(gathered, rng[0])
            rng = gathered
        if not self.info.is_main:
            return None
        state = {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "epoch": self.epoch,
            "batches_done": self.batches_done,
            "step": self.step,
            "rng": rng,
            "train_config": _plain(asdict(self.config)),
            "run": {"id": self.run_id, "options": _plain(self.run_options)},
        }
        report = lambda message: self.event("set_aside", message, step=self.step)  # noqa: E731
        root, keep = self.out_dir / "checkpoints", self.config.keep_checkpoints
        return save_checkpoint(root, self.step, self.model, state, keep, report)

    def resume(self, path: str | Path, skipped: Sequence[str] = ()) -> None:
        """Continue from the checkpoint at ``path`` (a checkpoint, or a run's output folder).

        The newest intact checkpoint there is used; each newer one skipped (and each of
        ``skipped``, reasons a caller found) is a ``skipped`` event. The checkpoint must
        belong to the folder's run (or the folder hold none), whose id the run keeps. The
        metrics logged after its step (by the interrupted run) are removed.

        Raises:
            CheckpointError: no intact checkpoint, or a state the safe loader refuses.
            RunFolderInUseError: the output folder holds another run.
        """
        folder, found = find_checkpoint(path)
        state = read_state(folder)
        run: dict[str, Any] = state["run"] if isinstance(state.get("run"), dict) else {}
        run_id = run.get("id")
        on_every_rank(self.info, lambda: check_belongs(self.out_dir, folder, run_id))
        self.model.load_state_dict(load_pretrained(folder).state_dict())
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.epoch, self.batches_done, self.step = (
            state["epoch"],
            state["batches_done"],
            state["step"],
        )
        rng = state["rng"]
        # Each process continues its own random stream when the world size is unchanged.
        restore_rng(rng[self.info.rank] if len(rng) == self.info.world_size else rng[0])
        if run_id is not None:
            self.run_id = run_id
        if not self.run_options:
            self.run_options = dict(run.get("options") or {})
        self._claimed = True
        self.log.truncate_after(self.step)
        if self.info.is_main:
            # The folder's record names the run it now holds (a new --out gets one too).
            write_run(self.out_dir, self.run_id, _plain(self.run_options))
        for reason in [*skipped, *found]:
            self.event("skipped", f"skipped: {reason} (left in place)", step=self.step)
        self.event(
            "resume",
            f"resuming from step {self.step} (epoch {self.epoch + 1}) of {folder}",
            step=self.step,
            checkpoint=str(folder),
            run_id=self.run_id,
        )

    # ------------------------------------------------------------ loop
    def fit(self) -> dict[str, float] | None:
        """Train until ``config.epochs`` or ``config.max_steps``; returns the last COCO metrics."""
        if not self._locked:
            self._take_lock()
        try:
            if not self._claimed and self.step == 0:
                on_every_rank(self.info, lambda: check_unused(self.out_dir))
                if self.info.is_main:
                    write_run(self.out_dir, self.run_id, _plain(self.run_options))
                self._claimed = True  # a second fit() of this trainer continues its run
                self.event(
                    "start", f"starting run {self.run_id} in {self.out_dir}", run_id=self.run_id
                )
            return self._fit()
        finally:
            self.close()

    def _fit(self) -> dict[str, float] | None:
        cfg = self.config
        if cfg.max_steps is not None and self.step >= cfg.max_steps:
            return self.last_metrics
        while self.epoch < cfg.epochs:
            finished = self._train_epoch()
            if not finished:
                self.save()
                return self.last_metrics
            self.scheduler.step()
            self.epoch += 1
            self.batches_done = 0
            self.save()
            if self.val_set is not None and cfg.eval_every and self.epoch % cfg.eval_every == 0:
                self.evaluate()
            if cfg.max_steps is not None and self.step >= cfg.max_steps:
                break
        return self.last_metrics

    def _loader(self) -> DataLoader:
        cfg = self.config
        self.train_set.set_epoch(self.epoch)
        batches = epoch_batches(
            len(self.train_set), cfg.batch_size, self.epoch, cfg.seed, self.info
        )
        # A generator of its own keeps the loader from drawing on the global RNG.
        generator = torch.Generator().manual_seed(cfg.seed + self.epoch)
        return DataLoader(
            self.train_set,
            batch_sampler=batches[self.batches_done :],
            collate_fn=collate,
            num_workers=cfg.num_workers,
            generator=generator,
            pin_memory=self.info.device.type == "cuda",
        )

    def _train_epoch(self) -> bool:
        """Train the rest of the current epoch; False when ``max_steps`` stopped it early."""
        cfg = self.config
        self.ddp.train()
        loader = self._loader()
        total = self.batches_done + len(loader)
        bar = tqdm(
            loader,
            # 1-based like "eval after epoch N"; the records keep the 0-based epoch index.
            desc=f"epoch {self.epoch + 1}/{cfg.epochs}",
            initial=self.batches_done,
            total=total,
            disable=not (cfg.progress and self.info.is_main),
            dynamic_ncols=True,
        )
        tic = time.perf_counter()
        # Loss sums since the last log line, kept on the device: the host reads them
        # every ``log_every`` steps (and at the end), not every step.
        sums: dict[str, Tensor] = {}
        pending = 0
        for batch in bar:
            losses = self.train_step(batch.to(self.info.device))
            sums = {k: sums[k] + v if k in sums else v for k, v in losses.items()}
            pending += 1
            self.batches_done += 1
            self.step += 1
            stop = cfg.max_steps is not None and self.step >= cfg.max_steps
            if self.step % cfg.log_every == 0 or stop or self.batches_done == total:
                tic = self._log_train(bar, sums, pending, tic)
                sums, pending = {}, 0
            if cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0:
                self.save()
            if stop:
                bar.close()
                return self.batches_done == total
        bar.close()
        return True

    def _log_train(self, bar: tqdm, sums: dict[str, Tensor], steps: int, tic: float) -> float:
        """Log the mean losses of the last ``steps`` steps (a host read); returns the time.

        Raises:
            FloatingPointError: the loss was not finite at one of those steps.
        """
        losses = mean_over_processes(sums, steps)
        now = time.perf_counter()
        if not math.isfinite(losses["loss"]):
            first = self.step - steps + 1
            when = f"step {self.step}" if steps == 1 else f"one of steps {first}-{self.step}"
            raise FloatingPointError(f"loss is {losses['loss']} at {when}: {losses}")
        speed = steps * self.config.batch_size * self.info.world_size / max(now - tic, 1e-9)
        lrs = {f"lr_{g['name']}": g["lr"] for g in self.optimizer.param_groups}
        self.log.write(
            "train", epoch=self.epoch, step=self.step, **losses, **lrs, images_per_s=speed
        )
        bar.set_postfix(loss=f"{losses['loss']:.4f}", img_s=f"{speed:.1f}")
        return now

    def train_step(self, batch: DetectionBatch) -> dict[str, Tensor]:
        """One optimizer step on ``batch``; returns this process's losses, on the device."""
        pixels, mask = batch.pixel_values, batch.pixel_mask
        if self.config.size_bucket:
            pixels, mask = pad_to_bucket(pixels, mask, self.config.size_bucket)
        return training_step(
            self.ddp,
            self.criterion,
            self.optimizer,
            self.scaler,
            pixels,
            mask,
            batch.targets,
            amp_dtype=self.amp_dtype,
            clip_max_norm=self.config.clip_max_norm,
        )

    def evaluate(self) -> dict[str, float]:
        """COCO metrics on ``val_set`` (every process predicts its share); logged and printed."""
        if self.val_set is None:
            raise ValueError("no validation set")
        self.val_set.set_epoch(0)
        loader = DataLoader(
            self.val_set,
            batch_size=self.config.batch_size,
            sampler=ShardSampler(len(self.val_set), self.info),
            collate_fn=collate,
            num_workers=self.config.num_workers,
            generator=torch.Generator().manual_seed(0),
            pin_memory=self.info.device.type == "cuda",
        )
        metrics = evaluate(
            self.model,
            loader,
            self.val_set.coco,
            self.val_set.label_to_category,
            self.info.device,
            self.amp_dtype,
            area_thresholds=self.config.eval_area_thresholds,
        )
        self.last_metrics = metrics
        if self.info.is_main:
            self.log.write("eval", epoch=self.epoch, step=self.step, **metrics)
            summary = "  ".join(f"{k} {format_metric(v, k)}" for k, v in metrics.items())
            tqdm.write(f"eval after epoch {self.epoch} (step {self.step}): {summary}")
            self._plot_curves()
        return metrics

    def _plot_curves(self) -> None:
        """Redraw ``OUT/curves.png`` (loss and AP) when matplotlib is there; a plot that
        fails warns and never stops the run."""
        from zoo.curves import have_matplotlib, plot_run

        if not have_matplotlib():
            return
        try:
            plot_run(self.out_dir)
        except Exception as exc:  # a picture is not worth a training run
            warnings.warn(f"could not draw {self.out_dir / 'curves.png'}: {exc}", stacklevel=2)


def _plain(value: Any) -> Any:
    """Tuples to lists, so the state holds only what ``weights_only`` loading accepts."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
