"""Training: the official recipe, mixed precision, DDP, exact resume, atomic verified
checkpoints, one run per output folder."""

from zoo.training.checkpoint import (
    load_checkpoint_weights,
    load_model,
    resolve_checkpoint,
    save_checkpoint,
)
from zoo.training.config import TrainConfig
from zoo.training.distributed import ProcessInfo, init_distributed, process_info
from zoo.training.lock import RunLock, RunLockedError
from zoo.training.log import MetricsLog, read_metrics
from zoo.training.manifest import CheckpointError, CheckpointNotFoundError
from zoo.training.optim import build_optimizer, build_scheduler, param_groups
from zoo.training.trainer import Trainer

__all__ = [
    "CheckpointError",
    "CheckpointNotFoundError",
    "MetricsLog",
    "ProcessInfo",
    "RunLock",
    "RunLockedError",
    "TrainConfig",
    "Trainer",
    "build_optimizer",
    "build_scheduler",
    "init_distributed",
    "load_checkpoint_weights",
    "load_model",
    "param_groups",
    "process_info",
    "read_metrics",
    "resolve_checkpoint",
    "save_checkpoint",
]
