"""Process-group set-up and each process's share of the data under torchrun.

Run ``torchrun --nproc-per-node K -m zoo train ...``: torchrun sets ``RANK``,
``WORLD_SIZE`` and ``LOCAL_RANK``; gloo is used on CPU, nccl on GPU.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.utils.data import DistributedSampler, Sampler


@dataclass(frozen=True)
class ProcessInfo:
    """This process's ``rank`` among ``world_size`` and the ``device`` it computes on."""

    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(backend: str | None = None) -> ProcessInfo:
    """Join the process group torchrun describes (if any, and not joined yet)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend)
    return process_info()


def on_every_rank(info: ProcessInfo, check: Callable[[], object]) -> None:
    """Run ``check`` (a look at the run folder, the lock) on rank 0 only; when it raises,
    raise the same error on every rank (its type and message), so that they all stop
    together: a lone rank raising would leave the others waiting in a collective."""
    error: Exception | None = None
    if info.is_main:
        try:
            check()
        except Exception as e:  # re-raised below, on every rank
            error = e
    if info.world_size > 1:
        box: list[tuple[type[Exception], str] | None] = [
            None if error is None else (type(error), str(error))
        ]
        dist.broadcast_object_list(box, src=0)
        if box[0] is not None and error is None:
            kind, message = box[0]
            error = kind(message)
    if error is not None:
        raise error


def process_info() -> ProcessInfo:
    """Rank, world size and device of this process (rank 0 of 1 when not distributed)."""
    distributed = dist.is_available() and dist.is_initialized()
    rank = dist.get_rank() if distributed else 0
    world = dist.get_world_size() if distributed else 1
    if torch.cuda.is_available() and (not distributed or dist.get_backend() == "nccl"):
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    else:
        device = torch.device("cpu")
    return ProcessInfo(rank, world, device)


def epoch_batches(
    num_samples: int, batch_size: int, epoch: int, seed: int, info: ProcessInfo
) -> list[list[int]]:
    """This process's batches of sample indices for ``epoch`` (incomplete last batch dropped).

    A function of (seed, epoch, rank) only, so a resumed run can skip the batches it
    already trained on.
    """
    sampler: DistributedSampler[int] = DistributedSampler(
        range(num_samples),  # type: ignore[arg-type]  # only its length is used
        num_replicas=info.world_size,
        rank=info.rank,
        shuffle=True,
        seed=seed,
    )
    sampler.set_epoch(epoch)
    indices = list(sampler)
    count = len(indices) // batch_size
    return [indices[i * batch_size : (i + 1) * batch_size] for i in range(count)]


class ShardSampler(Sampler[int]):
    """Indices ``rank, rank + world, ...``: every sample exactly once over all processes.

    Unlike ``DistributedSampler`` it never pads with repeats, which would count some
    images twice in an evaluation.
    """

    def __init__(self, num_samples: int, info: ProcessInfo) -> None:
        self.indices = list(range(info.rank, num_samples, info.world_size))

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)
