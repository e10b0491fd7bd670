"""The Hungarian matcher of DETR and Deformable DETR, solved by ``matcher_rs``.

Each image's predictions are matched one-to-one with its targets by minimising a weighted
sum of a class cost, the L1 distance of (cx, cy, w, h) boxes and the negative generalised
IoU. Unlike the original implementation, only each image's own (Q, T_i) block is computed
(targets padded to the batch's largest T, batched ops, no B*Q x sum(T) matrix), all blocks
reach the host in one transfer, and the whole batch is solved in one parallel Rust call.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn
from torchvision.ops import box_convert, generalized_box_iou

from matcher_rs import linear_sum_assignment_batch
from zoo.models.config import LossConfig

__all__ = ["HungarianMatcher"]

# Padding targets get a valid box so the padded (never read) costs stay finite.
_PAD_BOX = (0.5, 0.5, 1.0, 1.0)


def _batched_giou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """Generalised IoU of (B, N, 4) and (B, M, 4) xyxy boxes, image by image: (B, N, M).

    torchvision broadcasts leading dimensions since 0.21; older releases get ``vmap``.
    """
    if _GIOU_BATCHES:
        return generalized_box_iou(boxes1, boxes2)
    return torch.vmap(generalized_box_iou)(boxes1, boxes2)


_GIOU_BATCHES = generalized_box_iou(torch.zeros(2, 1, 4), torch.ones(2, 3, 4)).shape == (2, 1, 3)


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
    def cost_matrices(self, outputs: dict[str, Tensor], targets: list[dict[str, Tensor]]) -> Tensor:
        """Each image's matching costs, padded: (B, Q, max T_i) float32 on the outputs' device.

        Column ``t`` of image ``b`` is meaningful for ``t < len(targets[b]["boxes"])``;
        the padding columns hold finite filler.
        """
        logits, boxes = outputs["pred_logits"], outputs["pred_boxes"]
        bs, num_queries = logits.shape[:2]
        device = logits.device
        sizes = [len(t["boxes"]) for t in targets]
        t_max = max(sizes, default=0)
        with torch.autocast(device.type, enabled=False):
            tgt_ids = torch.zeros(bs, t_max, dtype=torch.int64, device=device)
            tgt_boxes = torch.tensor(_PAD_BOX, device=device).repeat(bs, t_max, 1)
            for b, (t, n) in enumerate(zip(targets, sizes, strict=True)):
                tgt_ids[b, :n] = t["labels"].to(device)
                tgt_boxes[b, :n] = t["boxes"].to(device=device, dtype=torch.float32)
            logits = logits.float()
            out_boxes = boxes.float()

            index = tgt_ids[:, None, :].expand(bs, num_queries, t_max)
            if self.focal:
                p = logits.sigmoid().gather(2, index)
                a, g = self.focal_alpha, self.focal_gamma
                neg = (1 - a) * p.pow(g) * -(1 - p + 1e-8).log()
                pos = a * (1 - p).pow(g) * -(p + 1e-8).log()
                class_cost = pos - neg
            else:
                class_cost = -logits.softmax(-1).gather(2, index)
            l1_cost = torch.cdist(out_boxes, tgt_boxes, p=1)
            giou_cost = -_batched_giou(
                box_convert(out_boxes, "cxcywh", "xyxy"), box_convert(tgt_boxes, "cxcywh", "xyxy")
            )
            return (
                self.cost_bbox * l1_cost + self.cost_class * class_cost + self.cost_giou * giou_cost
            )

    @torch.no_grad()
    def forward(
        self, outputs: dict[str, Tensor], targets: list[dict[str, Tensor]]
    ) -> list[tuple[Tensor, Tensor]]:
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
        sizes = [len(t["boxes"]) for t in targets]
        if len(sizes) != outputs["pred_logits"].shape[0]:
            raise ValueError(
                f"{len(sizes)} targets for a batch of {outputs['pred_logits'].shape[0]} images"
            )
        if max(sizes, default=0) == 0:
            empty = torch.empty(0, dtype=torch.int64)
            return [(empty, empty.clone()) for _ in sizes]
        costs = self.cost_matrices(outputs, targets).cpu().numpy()  # the one transfer
        # Only each image's own columns count: padding is never solved.
        valid = np.arange(costs.shape[2]) < np.asarray(sizes)[:, None]
        broken = (~np.isfinite(costs) & valid[:, None, :]).any(axis=(1, 2))
        if broken.any():
            bad = int(np.flatnonzero(broken)[0])
            raise ValueError(
                f"image {bad}: matching costs are not finite "
                "(NaN or infinite values in the predictions or target boxes)"
            )
        solved = linear_sum_assignment_batch(costs, n_cols=sizes, n_threads=self.n_threads)
        return [(torch.from_numpy(rows), torch.from_numpy(cols)) for rows, cols in solved]
