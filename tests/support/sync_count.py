"""Count the host synchronisations of a step without a GPU.

The step runs on the ``meta`` device: tensors have shapes and no data, so whatever would
make a GPU wait for its queue (reading a value: ``.item()``, ``.tolist()``, ``int(t)``,
``bool(t)``; a data-dependent shape: ``nonzero``, boolean masks; a device->host copy; a
blocking host->device copy, which CUDA orders behind the queued work) passes through the
dispatcher as an operation on a meta tensor, where :class:`SyncCounter` records it with
the Python stack that made it. Device->host copies get seeded random values, so code that
reads them (the matcher) keeps running; other reads get 0 and run on.

``torch.tensor(data, device=...)`` copies from the host below the dispatcher (blocking,
so on CUDA it waits for the queue): it is counted by wrapping ``torch.tensor`` and
``torch.as_tensor`` while the counter is open.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

aten = torch.ops.aten

# Ops whose output shape depends on the values of an input (a device would have to finish
# computing them before the host can allocate the result).
_DATA_DEPENDENT = {
    "aten::nonzero",
    "aten::nonzero_static",
    "aten::masked_select",
    "aten::_unique2",
    "aten::unique_consecutive",
    "aten::unique_dim",
    "aten::repeat_interleave",
    "aten::bincount",
    "aten::histc",
}


@dataclass(frozen=True)
class SyncEvent:
    """One synchronising operation: what it was and the (project) frames that made it."""

    kind: str  # "read", "data-dependent", "device->host", "blocking host->device"
    op: str
    stack: str

    def __str__(self) -> str:
        return f"{self.kind} ({self.op}) at\n{self.stack}"


def _is_host(x: Any) -> bool:
    return not isinstance(x, torch.Tensor) or x.device.type == "cpu"


def _project_stack() -> str:
    """The frames of the project (not torch's, not this module's): where to look."""
    frames = traceback.extract_stack()[:-3]
    keep = [
        f
        for f in frames
        if ("/zoo/" in f.filename or "/msda_ops/" in f.filename or "/benchmarks/" in f.filename)
        and "site-packages/torch" not in f.filename
    ]
    return "".join(traceback.format_list(keep[-6:])) or "".join(traceback.format_list(frames[-4:]))


class SyncCounter(TorchDispatchMode):
    """Record every operation that synchronises the host with a (meta-emulated) device.

    Use as a context manager around code whose tensors live on ``meta``; ``events`` lists
    what was found, in order.
    """

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        self.events: list[SyncEvent] = []
        self._gen = torch.Generator().manual_seed(seed)
        self._saved: dict[str, Callable[..., Any]] = {}

    def _record(self, kind: str, op: str) -> None:
        self.events.append(SyncEvent(kind, op, _project_stack()))

    def _host_copy(self, like: torch.Tensor, dtype: torch.dtype | None) -> torch.Tensor:
        dtype = dtype or like.dtype
        if dtype.is_floating_point:
            return torch.rand(like.shape, generator=self._gen).to(dtype)
        return torch.zeros(like.shape, dtype=dtype)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        kwargs = kwargs or {}
        name = func._schema.name
        if func is aten._local_scalar_dense.default and not _is_host(args[0]):
            self._record("read", name)
            return False if args[0].dtype == torch.bool else 0
        if name in _DATA_DEPENDENT and not _is_host(args[0]):
            self._record("data-dependent", name)
        if name in ("aten::index", "aten::index_put", "aten::index_put_", "aten::_index_put_impl_"):
            # A boolean index selects a data-dependent number of elements (nonzero inside).
            if any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in args[1] or ()):
                if not _is_host(args[0]):
                    self._record("data-dependent", f"{name} (boolean index)")
        if func is aten._to_copy.default:
            src = args[0]
            dst = kwargs.get("device") or src.device
            if not _is_host(src) and torch.device(dst).type == "cpu":
                self._record("device->host", name)
                return self._host_copy(src, kwargs.get("dtype"))
            if _is_host(src) and torch.device(dst).type != "cpu":
                if not kwargs.get("non_blocking", False):
                    self._record("blocking host->device", name)
        if func is aten.copy_.default:
            dst, src = args[0], args[1]
            non_blocking = args[2] if len(args) > 2 else kwargs.get("non_blocking", False)
            if _is_host(dst) and not _is_host(src):
                self._record("device->host", name)
                return dst.copy_(self._host_copy(src, dst.dtype))
            if _is_host(src) and not _is_host(dst) and not non_blocking:
                self._record("blocking host->device", name)
        return func(*args, **kwargs)

    def _wrap_factory(self, name: str) -> None:
        original = getattr(torch, name)
        self._saved[name] = original

        def factory(*args: Any, **kwargs: Any) -> Any:
            device = kwargs.get("device")
            if device is not None and torch.device(device).type != "cpu":
                self._record("blocking host->device", f"torch.{name}")
            return original(*args, **kwargs)

        setattr(torch, name, factory)

    def __enter__(self) -> SyncCounter:
        self._wrap_factory("tensor")
        self._wrap_factory("as_tensor")
        return super().__enter__()  # type: ignore[no-any-return]

    def __exit__(self, *exc: Any) -> None:
        super().__exit__(*exc)
        for name, original in self._saved.items():
            setattr(torch, name, original)
        self._saved.clear()

    def report(self) -> str:
        """Every event, numbered, for an assertion message."""
        return "\n".join(f"[{i}] {e}" for i, e in enumerate(self.events)) or "(none)"
