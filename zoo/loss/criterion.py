"""Set-prediction losses of DETR and Deformable DETR (Hungarian matching, then per-pair losses)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import box_convert, generalized_box_iou, sigmoid_focal_loss

from zoo.loss.matcher import HungarianMatcher, padded_targets
from zoo.models.config import LossConfig, ModelConfig

Matcher = Callable[[dict[str, Tensor], list[dict[str, Tensor]]], list[tuple[Tensor, Tensor]]]


class SetCriterion(nn.Module):
    """Match predictions to targets, then classification, L1 and GIoU box losses.

    Classification is DETR's softmax cross-entropy (the no-object column weighted by
    ``eos_coef``) or, with ``focal=True``, Deformable DETR's sigmoid focal loss summed
    over classes, averaged over queries, divided by the number of boxes and multiplied
    by the number of queries (``loss_ce = sigmoid_focal_loss(...) * Q`` in the official
    code). Every ``aux_outputs`` entry is matched and scored the same way (suffix
    ``_i``); ``enc_outputs`` (two-stage) against class-agnostic targets, every label
    set to 0 (suffix ``_enc``).

    Args:
        num_classes: object classes, without "no object".
        matcher: ``(outputs, targets) -> [(pred_idx, tgt_idx)]`` per image.
        loss_class, loss_bbox, loss_giou: weights of the total ``loss``.
    """

    def __init__(
        self,
        num_classes: int,
        matcher: Matcher,
        *,
        loss_class: float = 1.0,
        loss_bbox: float = 5.0,
        loss_giou: float = 2.0,
        focal: bool = False,
        focal_alpha: float = 0.25,
        focal_gamma: float = 2.0,
        eos_coef: float = 0.1,
        aux_loss: bool = True,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.matcher = matcher
        self.weights = {"loss_ce": loss_class, "loss_bbox": loss_bbox, "loss_giou": loss_giou}
        self.focal = focal
        self.aux_loss = aux_loss
        self.focal_alpha = focal_alpha
        self.focal_gamma = focal_gamma
        self.eos_coef = eos_coef

    def forward(
        self, outputs: dict[str, Any], targets: list[dict[str, Tensor]]
    ) -> dict[str, Tensor]:
        """Compute every loss.

        All the matchings (final layer, auxiliary layers, proposals) are made together:
        one device->host transfer of their costs, one host->device copy of the indices,
        and nothing else read on the host (the normaliser stays on the device).

        Args:
            outputs: a model's output dict (``pred_logits`` (N, Q, C[+1]), ``pred_boxes``
                (N, Q, 4), optional ``aux_outputs`` and ``enc_outputs``).
            targets: per image ``labels`` (T,) int64 and ``boxes`` (T, 4) normalised cxcywh.

        Returns:
            ``loss_ce``, ``loss_bbox``, ``loss_giou`` (final layer), the same with ``_i``
            for auxiliary layer i and ``_enc`` for the encoder proposals, and ``loss``:
            their weighted sum.
        """
        device = outputs["pred_logits"].device
        num_boxes = self._num_boxes(targets, device)
        labels, boxes = padded_targets(targets, device, outputs["pred_boxes"].dtype)
        groups = [("", outputs, targets, labels)]
        if self.aux_loss:
            groups += [
                (f"_{i}", aux, targets, labels)
                for i, aux in enumerate(outputs.get("aux_outputs", []))
            ]
        if "enc_outputs" in outputs:
            binary = [{**t, "labels": torch.zeros_like(t["labels"])} for t in targets]
            groups.append(("_enc", outputs["enc_outputs"], binary, torch.zeros_like(labels)))
        indices = self._match(
            [
                ({"pred_logits": out["pred_logits"], "pred_boxes": out["pred_boxes"]}, tgts)
                for _, out, tgts, _ in groups
            ]
        )
        losses: dict[str, Tensor] = {}
        total = outputs["pred_logits"].new_zeros(())
        for (suffix, out, _, group_labels), matched in zip(
            groups, _indices_to_device(indices, device), strict=True
        ):
            for name, value in self._losses(out, group_labels, boxes, matched, num_boxes).items():
                losses[name + suffix] = value
                total = total + self.weights[name] * value
        losses["loss"] = total
        return losses

    def _match(self, groups: list[tuple[dict[str, Tensor], list[dict[str, Tensor]]]]) -> list:
        """Every group's matching: in one call when the matcher batches groups
        (:meth:`HungarianMatcher.match_all`), else one call per group."""
        match_all = getattr(self.matcher, "match_all", None)
        if match_all is not None:
            return match_all(groups)
        return [self.matcher(out, tgts) for out, tgts in groups]

    @staticmethod
    def _num_boxes(targets: list[dict[str, Tensor]], device: torch.device) -> Tensor:
        """Target boxes per process (averaged over processes when distributed), at least 1.

        A 0-d float32 tensor on ``device``: the all-reduce is queued, never waited for.
        """
        count = torch.full((), float(sum(len(t["labels"]) for t in targets)), device=device)
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(count)
            count = count / dist.get_world_size()
        return count.clamp(min=1.0)

    def _losses(
        self,
        outputs: dict[str, Tensor],
        labels: Tensor,
        boxes: Tensor,
        matched: tuple[Tensor, Tensor, Tensor],
        num_boxes: Tensor,
    ) -> dict[str, Tensor]:
        """``loss_ce``, ``loss_bbox``, ``loss_giou`` of one set of predictions.

        ``labels`` (B, T) and ``boxes`` (B, T, 4) are the padded targets; ``matched`` the
        (batch, prediction, target) indices of the matched pairs, on the device.
        """
        batch_idx, src_idx, tgt_idx = matched
        loss_ce = self._class_loss(
            outputs["pred_logits"], batch_idx, src_idx, labels[batch_idx, tgt_idx], num_boxes
        )
        pred = outputs["pred_boxes"][batch_idx, src_idx]
        matched_boxes = boxes[batch_idx, tgt_idx].to(pred)
        loss_bbox = F.l1_loss(pred, matched_boxes, reduction="sum") / num_boxes
        giou = generalized_box_iou(
            box_convert(pred, "cxcywh", "xyxy"), box_convert(matched_boxes, "cxcywh", "xyxy")
        )
        loss_giou = (1 - torch.diag(giou)).sum() / num_boxes
        return {"loss_ce": loss_ce, "loss_bbox": loss_bbox, "loss_giou": loss_giou}

    def _class_loss(
        self, logits: Tensor, batch_idx: Tensor, src_idx: Tensor, labels: Tensor, num_boxes: Tensor
    ) -> Tensor:
        """Unmatched queries are "no object": class ``num_classes`` / all-zero targets."""
        n, q, c = logits.shape
        target = torch.full((n, q), self.num_classes, dtype=torch.int64, device=logits.device)
        target[batch_idx, src_idx] = labels
        if not self.focal:
            # Built in the logits' dtype: a float32 0.1 would differ from 0.1 in float64.
            weight = torch.ones(c, dtype=logits.dtype, device=logits.device)
            weight[-1] = self.eos_coef
            return F.cross_entropy(logits.transpose(1, 2), target, weight)
        # Unmatched queries ("no object", label c) get all-zero targets. A comparison, not
        # F.one_hot: one_hot checks the labels' range on the host outside CUDA.
        onehot = (target[..., None] == torch.arange(c, device=logits.device)).to(logits)
        focal = sigmoid_focal_loss(
            logits, onehot, self.focal_alpha, self.focal_gamma, reduction="none"
        )
        return focal.mean(1).sum() / num_boxes * q


@torch.compiler.disable  # host bookkeeping, beside the matcher's break
def _indices_to_device(
    indices: list[list[tuple[Tensor, Tensor]]], device: torch.device
) -> list[tuple[Tensor, Tensor, Tensor]]:
    """Per group, the matched pairs' (batch, prediction, target) indices, each (K,) int64 on
    ``device``: all groups in one asynchronous copy (from pinned memory on CUDA)."""
    parts, lengths = [], []
    for group in indices:
        rows = [
            torch.stack([torch.full_like(src, b), src, tgt]).long()
            for b, (src, tgt) in enumerate(group)
        ]
        parts.append(torch.cat(rows, 1) if rows else torch.empty(3, 0, dtype=torch.int64))
        lengths.append(parts[-1].shape[1])
    host = torch.cat(parts, 1)
    if device.type == "cuda":
        host = host.pin_memory()
    flat = host.to(device, non_blocking=True)
    return [(g[0], g[1], g[2]) for g in flat.split(lengths, 1)]


def build_criterion(config: ModelConfig, matcher: Matcher | None = None) -> SetCriterion:
    """The official criterion for a model configuration (its :class:`~zoo.models.config.LossConfig`)."""
    return criterion_from_loss_config(config.num_classes, config.loss, matcher)


def criterion_from_loss_config(
    num_classes: int, loss: LossConfig, matcher: Matcher | None = None
) -> SetCriterion:
    """A criterion with the costs and weights of ``loss``.

    Without ``matcher``, :class:`~zoo.loss.matcher.HungarianMatcher` with the configured costs.
    """
    return SetCriterion(
        num_classes,
        matcher or HungarianMatcher.from_loss_config(loss),
        loss_class=loss.loss_class,
        loss_bbox=loss.loss_bbox,
        loss_giou=loss.loss_giou,
        focal=loss.focal,
        focal_alpha=loss.focal_alpha,
        focal_gamma=loss.focal_gamma,
        eos_coef=loss.eos_coef,
        aux_loss=loss.aux_loss,
    )
