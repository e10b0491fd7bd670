"""Training hyper-parameters; the defaults are the official Deformable DETR recipe."""

from __future__ import annotations

from dataclasses import dataclass

from zoo.data.areas import check_area_thresholds

AMP_DTYPES = ("bf16", "fp16")


@dataclass(frozen=True)
class TrainConfig:
    """How to train (the model's own sizes live in :mod:`zoo.models.config`).

    Official recipe: AdamW at ``lr`` 2e-4, the backbone at ``lr_backbone`` 2e-5, the
    parameters whose names contain one of ``slow_names`` (the deformable attention's
    sampling offsets and reference points) at ``slow_lr_mult`` x ``lr``; weight decay
    1e-4; gradients clipped to norm 0.1; the learning rate times ``lr_gamma`` every
    ``lr_drop`` epochs; 2 images per process.

    Attributes:
        amp: None, ``"bf16"`` or ``"fp16"`` autocast (fp16 adds a gradient scaler).
        max_steps: stop (and checkpoint) after this many optimizer steps in total.
        checkpoint_every: also checkpoint every this many steps (0: at epoch ends only).
        eval_every: evaluate every this many epochs (0: never).
        eval_area_thresholds: the (small, medium) area thresholds, in pixels, of the
            APs/APm/APl buckets: COCO's 32^2 and 96^2 unless the images are much
            smaller (:func:`zoo.data.areas.size_buckets`).
        keep_checkpoints: how many checkpoints to keep (the newest).
        log_every: log the mean losses every this many steps (and at the end of an
            epoch or run); the host reads the losses only then, so on a GPU a larger
            interval leaves the matcher's transfer as the step's only synchronisation.
        compile: compile the model and the criterion (:mod:`zoo.training.compile`).
        size_bucket: pad every batch to a multiple of this many pixels (0: no padding
            beyond the batch's largest image): few distinct shapes for compiled graphs.
        tensorboard: also log the metrics for TensorBoard in ``OUT/tensorboard``.
    """

    epochs: int = 50
    batch_size: int = 2
    lr: float = 2e-4
    lr_backbone: float = 2e-5
    slow_lr_mult: float = 0.1
    slow_names: tuple[str, ...] = ("sampling_offsets", "reference_points")
    weight_decay: float = 1e-4
    clip_max_norm: float = 0.1
    lr_drop: int = 40
    lr_gamma: float = 0.1
    amp: str | None = None
    seed: int = 42
    num_workers: int = 2
    max_steps: int | None = None
    checkpoint_every: int = 0
    eval_every: int = 1
    eval_area_thresholds: tuple[float, float] = (32.0**2, 96.0**2)
    keep_checkpoints: int = 2
    log_every: int = 1
    compile: bool = False
    size_bucket: int = 0
    progress: bool = True
    tensorboard: bool = False
    find_unused_parameters: bool = False

    def __post_init__(self) -> None:
        if self.amp is not None and self.amp not in AMP_DTYPES:
            raise ValueError(f"amp must be one of {AMP_DTYPES} or None, got {self.amp!r}")
        at_least = {
            "epochs": (self.epochs, 0),
            "batch_size": (self.batch_size, 1),
            "lr_drop": (self.lr_drop, 1),
            "num_workers": (self.num_workers, 0),
            "checkpoint_every": (self.checkpoint_every, 0),
            "eval_every": (self.eval_every, 0),
            "keep_checkpoints": (self.keep_checkpoints, 1),
            "log_every": (self.log_every, 1),
            "size_bucket": (self.size_bucket, 0),
            "seed": (self.seed, 0),
            "lr_backbone": (self.lr_backbone, 0),
            "weight_decay": (self.weight_decay, 0),
            "clip_max_norm": (self.clip_max_norm, 0),
            "slow_lr_mult": (self.slow_lr_mult, 0),
        }
        if self.max_steps is not None:
            at_least["max_steps"] = (self.max_steps, 1)
        for name, (value, low) in at_least.items():
            # "not >=" also refuses NaN.
            if not value >= low:
                raise ValueError(f"TrainConfig.{name} must be >= {low}, got {value!r}")
        if not self.seed < 2**32:  # numpy's legacy generator's bound (torch's is 2**64)
            raise ValueError(f"TrainConfig.seed must be < 2**32, got {self.seed!r}")
        # Checked here, at construction, not at the first evaluation hours later.
        check_area_thresholds(self.eval_area_thresholds)
        if not self.lr > 0:
            raise ValueError(f"TrainConfig.lr must be > 0, got {self.lr!r}")
