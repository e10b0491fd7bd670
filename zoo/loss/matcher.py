"""The Hungarian matcher of DETR and Deformable DETR, solved by ``matcher_rs``.

Each image's predictions are matched one-to-one with its targets by minimising a weighted
sum of a class cost, the L1 distance of (cx, cy, w, h) boxes and the negative generalised
IoU. Unlike the original implementation, only each image's own (Q, T_i) block is computed
(targets padded to the batch's largest T, batched ops, no B*Q x sum(T) matrix), and
:meth:`HungarianMatcher.match_all` takes every matching of a training step (each decoder
layer, the two-stage proposals, each image): their costs reach the host in one transfer,
the step's only synchronisation, and are solved in one parallel Rust call.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from itertools import islice

import numpy as np
import torch
from torch import Tensor, nn
from torchvision.ops import box_convert

from matcher_rs import linear_sum_assignment_batch
from zoo.models.config import LossConfig

__all__ = ["HungarianMatcher"]

# Padding targets get a valid box so the padded (never read) costs stay finite.
_PAD_CENTRE, _PAD_SIZE = 0.5, 1.0

Outputs = dict[str, Tensor]
Targets = list[dict[str, Tensor]]
Indices = list[tuple[Tensor, Tensor]]


def padded_targets(
    targets: Targets, device: torch.device, dtype: torch.dtype = torch.float32
) -> tuple[Tensor, Tensor]:
    """The batch's targets padded to its largest T: labels (B, T) int64 (0 on padding) and
    boxes (B, T, 4) ``dtype`` cxcywh (a whole-image box on padding), on ``device``.

    Built by fills and device copies only (no host->device copy, nothing read back).
    """
    t_max = max((len(t["boxes"]) for t in targets), default=0)
    labels = torch.zeros(len(targets), t_max, dtype=torch.int64, device=device)
    boxes = torch.full((len(targets), t_max, 4), _PAD_CENTRE, dtype=dtype, device=device)
    boxes[..., 2:] = _PAD_SIZE
    for b, t in enumerate(targets):
        n = len(t["boxes"])
        labels[b, :n] = t["labels"].to(device, non_blocking=True)
        boxes[b, :n] = t["boxes"].to(device=device, dtype=dtype, non_blocking=True)
    return labels, boxes


def pairwise_giou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """Generalised IoU of every pair: (B, Q, 4) and (B, T, 4) cxcywh boxes -> (B, Q, T).

    torchvision's ``generalized_box_iou`` arithmetic, operation for operation (so equal to
    it bit for bit), but on (B, Q, 1) x (B, 1, T) coordinate planes: torchvision
    broadcasts (..., 2) corner pairs, whose 2-wide inner dimension the CPU cannot
    vectorise (2-3x slower at DETR's sizes), and its intermediates stay allocated.
    """
    # Contiguous coordinate planes: strided ones would keep the inner loop from vectorising.
    x0, y0, x1, y1 = box_convert(boxes1, "cxcywh", "xyxy").mT.contiguous().unsqueeze(-1).unbind(-3)
    u0, v0, u1, v1 = box_convert(boxes2, "cxcywh", "xyxy").mT.contiguous().unsqueeze(-2).unbind(-3)
    inter = (torch.minimum(x1, u1) - torch.maximum(x0, u0)).clamp_(min=0)
    inter *= (torch.minimum(y1, v1) - torch.maximum(y0, v0)).clamp_(min=0)
    union = ((x1 - x0) * (y1 - y0)) + ((u1 - u0) * (v1 - v0))
    union -= inter
    enclosing = (torch.maximum(x1, u1) - torch.minimum(x0, u0)).clamp_(min=0)
    enclosing *= (torch.maximum(y1, v1) - torch.minimum(y0, v0)).clamp_(min=0)
    giou = inter.div_(union)
    giou -= (enclosing - union).div_(enclosing)
    return giou


def _to_host(costs: Tensor) -> np.ndarray:
    """The training step's one device->host transfer: every matching's costs at once."""
    return costs.cpu().numpy()


def _autocast_off(device: torch.device) -> contextlib.AbstractContextManager:
    """Autocast disabled on ``device`` (the costs are compared, so kept in float32)."""
    if torch.amp.is_autocast_available(device.type):
        return torch.autocast(device.type, enabled=False)
    return contextlib.nullcontext()


class HungarianMatcher(nn.Module):
    """One-to-one matching of predictions to targets (DETR's bipartite matching).

    Args:
        cost_class: weight of the class cost (-p(target class); focal variant when ``focal``).
        cost_bbox: weight of the L1 distance between normalised (cx, cy, w, h) boxes.
        cost_giou: weight of the negative generalised IoU of the (x0, y0, x1, y1) boxes.
        focal: Deformable DETR's class cost on sigmoid probabilities,
            ``alpha (1-p)^gamma (-log p) - (1-alpha) p^gamma (-log(1-p))``;
            otherwise DETR's ``-softmax(logits)[target]``.
        focal_alpha: focal cost alpha.
        focal_gamma: focal cost gamma.
        n_threads: solver threads (``None``: one per core, see
            :func:`matcher_rs.linear_sum_assignment_batch`).
    """

    def __init__(
        self,
        cost_class: float = 1.0,
        cost_bbox: float = 5.0,
        cost_giou: float = 2.0,
        *,
        focal: bool = False,
        focal_alpha: float = 0.25,
        focal_gamma: float = 2.0,
        n_threads: int | None = None,
    ) -> None:
        super().__init__()
        if cost_class == 0 and cost_bbox == 0 and cost_giou == 0:
            raise ValueError("all matcher costs are zero")
        self.cost_class = cost_class
        self.cost_bbox = cost_bbox
        self.cost_giou = cost_giou
        self.focal = focal
        self.focal_alpha = focal_alpha
        self.focal_gamma = focal_gamma
        self.n_threads = n_threads

    @classmethod
    def from_loss_config(
        cls, loss: LossConfig, *, n_threads: int | None = None
    ) -> HungarianMatcher:
        """The matcher with the costs of ``loss`` (a model configuration's ``loss``)."""
        return cls(
            loss.cost_class,
            loss.cost_bbox,
            loss.cost_giou,
            focal=loss.focal,
            focal_alpha=loss.focal_alpha,
            focal_gamma=loss.focal_gamma,
            n_threads=n_threads,
        )

    @classmethod
    def detr(cls, *, n_threads: int | None = None) -> HungarianMatcher:
        """DETR's matcher (:meth:`LossConfig.detr`): softmax class cost, weights 1 / 5 / 2."""
        return cls.from_loss_config(LossConfig.detr(), n_threads=n_threads)

    @classmethod
    def deformable_detr(cls, *, n_threads: int | None = None) -> HungarianMatcher:
        """Deformable DETR's matcher (:meth:`LossConfig.deformable`): focal cost, 2 / 5 / 2."""
        return cls.from_loss_config(LossConfig.deformable(), n_threads=n_threads)

    def extra_repr(self) -> str:
        kind = (
            f"focal(alpha={self.focal_alpha}, gamma={self.focal_gamma})"
            if self.focal
            else "softmax"
        )
        return (
            f"cost_class={self.cost_class}, cost_bbox={self.cost_bbox}, "
            f"cost_giou={self.cost_giou}, class_cost={kind}"
        )

    @torch.no_grad()
    def cost_matrices(self, outputs: Outputs, targets: Targets) -> Tensor:
        """Each image's matching costs, padded: (B, Q, max T_i) float32 on the outputs' device.

        Column ``t`` of image ``b`` is meaningful for ``t < len(targets[b]["boxes"])``;
        the padding columns hold finite filler.
        """
        logits, boxes = outputs["pred_logits"], outputs["pred_boxes"]
        bs, num_queries = logits.shape[:2]
        with _autocast_off(logits.device):
            tgt_ids, tgt_boxes = padded_targets(targets, logits.device)
            logits = logits.float()
            out_boxes = boxes.float()
            index = tgt_ids[:, None, :].expand(bs, num_queries, tgt_ids.shape[1])
            if self.focal:
                p = logits.sigmoid().gather(2, index)
                a, g = self.focal_alpha, self.focal_gamma
                neg = (1 - a) * p.pow(g) * -(1 - p + 1e-8).log()
                pos = a * (1 - p).pow(g) * -(p + 1e-8).log()
                class_cost = pos - neg
            else:
                class_cost = -logits.softmax(-1).gather(2, index)
            l1_cost = torch.cdist(out_boxes, tgt_boxes, p=1)
            giou_cost = -pairwise_giou(out_boxes, tgt_boxes)
            return (
                self.cost_bbox * l1_cost + self.cost_class * class_cost + self.cost_giou * giou_cost
            )

    @torch.no_grad()
    def forward(self, outputs: Outputs, targets: Targets) -> Indices:
        """Match predictions to targets, image by image.

        Args:
            outputs: ``pred_logits`` (B, Q, C) (softmax over C including no-object for DETR;
                sigmoid per class when ``focal``) and ``pred_boxes`` (B, Q, 4), normalised
                (cx, cy, w, h).
            targets: per image, ``labels`` (T_i,) int64 and ``boxes`` (T_i, 4) normalised
                (cx, cy, w, h).

        Returns:
            Per image ``(pred_idx, tgt_idx)``, int64 CPU tensors of length ``min(Q, T_i)``,
            ``pred_idx`` ascending: prediction ``pred_idx[k]`` is matched to target
            ``tgt_idx[k]``.

        Raises:
            ValueError: an image's costs are not finite (NaN or infinite predictions or
                target boxes), naming the image.
        """
        return self.match_all([(outputs, targets)])[0]

    # The training step's one deliberate graph break under torch.compile: host code.
    @torch.compiler.disable
    @torch.no_grad()
    def match_all(self, groups: Sequence[tuple[Outputs, Targets]]) -> list[Indices]:
        """Match several sets of predictions at once: :meth:`forward` for each group.

        A training step matches every decoder layer's predictions (and two-stage, the
        encoder's proposals) against the batch's targets; their costs reach the host in
        one transfer and are solved in one parallel ``matcher_rs`` call.

        Args:
            groups: ``(outputs, targets)`` pairs as :meth:`forward` takes them.

        Returns:
            One :meth:`forward` result per group.

        Raises:
            ValueError: a group's targets do not fit its batch; an image's costs are not
                finite (naming the group and the image).
        """
        shapes: list[tuple[int, int, int]] = []
        costs: list[Tensor] = []
        for g, (outputs, targets) in enumerate(groups):
            bs, num_queries = outputs["pred_logits"].shape[:2]
            if len(targets) != bs:
                where = "" if len(groups) == 1 else f"group {g}: "
                raise ValueError(f"{where}{len(targets)} targets for a batch of {bs} images")
            t_max = max((len(t["boxes"]) for t in targets), default=0)
            shapes.append((bs, num_queries, t_max))
            if t_max:
                costs.append(self.cost_matrices(outputs, targets).flatten())
        host = _to_host(torch.cat(costs)) if costs else np.empty(0, dtype=np.float32)
        blocks: list[np.ndarray] = []
        offset = 0
        for g, ((bs, num_queries, t_max), (_, targets)) in enumerate(
            zip(shapes, groups, strict=True)
        ):
            group = host[offset : offset + bs * num_queries * t_max].reshape(bs, num_queries, t_max)
            offset += group.size
            for b, t in enumerate(targets):
                # Only each image's own columns count: padding is never solved.
                block = np.ascontiguousarray(group[b, :, : len(t["boxes"])])
                if not np.isfinite(block).all():
                    where = f"image {b}" if len(groups) == 1 else f"group {g}, image {b}"
                    raise ValueError(
                        f"{where}: matching costs are not finite "
                        "(NaN or infinite values in the predictions or target boxes)"
                    )
                blocks.append(block)
        solved = iter(linear_sum_assignment_batch(blocks, n_threads=self.n_threads))
        return [
            [(torch.from_numpy(rows), torch.from_numpy(cols)) for rows, cols in islice(solved, bs)]
            for bs, _, _ in shapes
        ]
