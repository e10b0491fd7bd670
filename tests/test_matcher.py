"""zoo.loss.matcher.HungarianMatcher against a scipy matcher written in DETR's original style."""

from __future__ import annotations

import pytest
import torch
from scipy.optimize import linear_sum_assignment
from torchvision.ops import box_convert, generalized_box_iou

from zoo.loss.matcher import HungarianMatcher


class ReferenceMatcher:
    """DETR's matcher as published: one (B*Q, sum T) matrix, .cpu(), scipy per image."""

    def __init__(self, cost_class, cost_bbox, cost_giou, focal=False, alpha=0.25, gamma=2.0):
        self.cost_class, self.cost_bbox, self.cost_giou = cost_class, cost_bbox, cost_giou
        self.focal, self.alpha, self.gamma = focal, alpha, gamma

    @torch.no_grad()
    def cost(self, outputs, targets):
        bs, num_queries = outputs["pred_logits"].shape[:2]
        logits = outputs["pred_logits"].flatten(0, 1)
        out_bbox = outputs["pred_boxes"].flatten(0, 1)
        tgt_ids = torch.cat([v["labels"] for v in targets])
        tgt_bbox = torch.cat([v["boxes"] for v in targets])
        if self.focal:
            out_prob = logits.sigmoid()
            neg = (1 - self.alpha) * (out_prob**self.gamma) * (-(1 - out_prob + 1e-8).log())
            pos = self.alpha * ((1 - out_prob) ** self.gamma) * (-(out_prob + 1e-8).log())
            cost_class = pos[:, tgt_ids] - neg[:, tgt_ids]
        else:
            cost_class = -logits.softmax(-1)[:, tgt_ids]
        cost_bbox = torch.cdist(out_bbox, tgt_bbox, p=1)
        cost_giou = -generalized_box_iou(
            box_convert(out_bbox, "cxcywh", "xyxy"), box_convert(tgt_bbox, "cxcywh", "xyxy")
        )
        c = self.cost_bbox * cost_bbox + self.cost_class * cost_class + self.cost_giou * cost_giou
        return c.view(bs, num_queries, -1).cpu()

    def __call__(self, outputs, targets):
        c = self.cost(outputs, targets)
        sizes = [len(v["boxes"]) for v in targets]
        indices = [linear_sum_assignment(b[i]) for i, b in enumerate(c.split(sizes, -1))]
        return [
            (torch.as_tensor(i, dtype=torch.int64), torch.as_tensor(j, dtype=torch.int64))
            for i, j in indices
        ]


def _batch(seed, bs=4, queries=30, classes=12, sizes=None):
    g = torch.Generator().manual_seed(seed)
    sizes = sizes if sizes is not None else torch.randint(0, 12, (bs,), generator=g).tolist()
    outputs = {
        "pred_logits": torch.randn(bs, queries, classes, generator=g),
        "pred_boxes": torch.rand(bs, queries, 4, generator=g) * 0.6 + 0.2,
    }
    targets = [
        {
            "labels": torch.randint(0, classes, (n,), generator=g),
            "boxes": torch.rand(n, 4, generator=g) * 0.6 + 0.2,
        }
        for n in sizes
    ]
    return outputs, targets


def _totals(cost, indices):
    return [float(cost[b, i, j].sum()) for b, (i, j) in enumerate(indices)]


def _per_image_costs(ref, outputs, targets):
    """Each image's own block of the reference matrix, shape (Q, T_b)."""
    c = ref.cost(outputs, targets)
    sizes = [len(v["boxes"]) for v in targets]
    return [block[b] for b, block in enumerate(c.split(sizes, -1))]


@pytest.mark.parametrize("focal", [False, True])
@pytest.mark.parametrize("seed", range(6))
def test_same_total_cost_as_reference(focal, seed):
    ours = HungarianMatcher.deformable_detr() if focal else HungarianMatcher.detr()
    ref = ReferenceMatcher(2.0 if focal else 1.0, 5.0, 2.0, focal=focal)
    outputs, targets = _batch(seed)
    got, want = ours(outputs, targets), ref(outputs, targets)
    blocks = _per_image_costs(ref, outputs, targets)
    for b, ((gi, gj), (wi, wj)) in enumerate(zip(got, want, strict=True)):
        assert gi.dtype == gj.dtype == torch.int64 and gi.device.type == "cpu"
        assert len(gi) == len(gj) == min(outputs["pred_boxes"].shape[1], len(targets[b]["boxes"]))
        assert torch.all(gi[1:] > gi[:-1])
        assert sorted(gj.tolist()) == list(range(len(gj)))
        assert float(blocks[b][gi, gj].sum()) == pytest.approx(
            float(blocks[b][wi, wj].sum()), rel=1e-5, abs=1e-5
        )


def test_cost_blocks_equal_the_reference_blocks():
    outputs, targets = _batch(7, sizes=[3, 0, 9, 1])
    for focal in (False, True):
        ours = HungarianMatcher(2.0, 5.0, 2.0, focal=focal)
        ref = ReferenceMatcher(2.0, 5.0, 2.0, focal=focal)
        padded = ours.cost_matrices(outputs, targets)
        assert padded.shape == (4, 30, 9) and padded.dtype == torch.float32
        for b, block in enumerate(_per_image_costs(ref, outputs, targets)):
            torch.testing.assert_close(padded[b, :, : block.shape[1]], block)


def test_batched_equals_per_image():
    outputs, targets = _batch(3, bs=6)
    matcher = HungarianMatcher.detr()
    batched = matcher(outputs, targets)
    for b in range(6):
        one = {k: v[b : b + 1] for k, v in outputs.items()}
        ((i, j),) = matcher(one, [targets[b]])
        assert torch.equal(i, batched[b][0]) and torch.equal(j, batched[b][1])


def test_more_targets_than_queries():
    outputs, targets = _batch(4, bs=2, queries=5, sizes=[9, 2])
    got = HungarianMatcher.detr()(outputs, targets)
    assert [len(i) for i, _ in got] == [5, 2]


def test_empty_targets():
    outputs, targets = _batch(5, bs=3, sizes=[0, 4, 0])
    got = HungarianMatcher.deformable_detr()(outputs, targets)
    assert [len(i) for i, _ in got] == [0, 4, 0]
    outputs, targets = _batch(5, bs=2, sizes=[0, 0])
    got = HungarianMatcher.detr()(outputs, targets)
    assert all(i.numel() == 0 and j.numel() == 0 and i.dtype == torch.int64 for i, j in got)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_costs_name_the_image(bad):
    outputs, targets = _batch(6, bs=3, sizes=[2, 3, 2])
    outputs["pred_boxes"][2, 4, 1] = bad
    with pytest.raises(ValueError, match="image 2"):
        HungarianMatcher.detr()(outputs, targets)
    outputs, targets = _batch(6, bs=3, sizes=[2, 3, 0])
    outputs["pred_logits"][2] = bad  # an image without targets has nothing to match
    assert len(HungarianMatcher.detr()(outputs, targets)[2][0]) == 0


@pytest.mark.parametrize("focal", [False, True])
def test_float32_under_autocast_and_half_inputs(focal):
    """bf16 predictions under autocast: the costs are computed in float32 from the bf16
    values, and the matching is scipy's optimum on those costs."""
    outputs, targets = _batch(8)
    half = {k: v.bfloat16() for k, v in outputs.items()}
    matcher = HungarianMatcher(2.0, 5.0, 2.0, focal=focal)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        padded = matcher.cost_matrices(half, targets)
        got = matcher(half, targets)
    assert padded.dtype == torch.float32
    # The reference on the same (bf16-rounded) values, in float32 outside autocast.
    ref = ReferenceMatcher(2.0, 5.0, 2.0, focal=focal)
    widened = {k: v.float() for k, v in half.items()}
    blocks = _per_image_costs(ref, widened, targets)
    for b, ((gi, gj), block) in enumerate(zip(got, blocks, strict=True)):
        torch.testing.assert_close(padded[b, :, : block.shape[1]], block)
        wi, wj = linear_sum_assignment(block.numpy())
        assert len(gi) == len(wi) == min(block.shape)
        assert float(block[gi, gj].sum()) == pytest.approx(
            float(block[wi, wj].sum()), rel=1e-5, abs=1e-5
        )


def test_rejects_all_zero_costs():
    with pytest.raises(ValueError):
        HungarianMatcher(0, 0, 0)


@pytest.mark.gpu
def test_cuda_matches_cpu():
    outputs, targets = _batch(9, bs=5, sizes=[3, 0, 8, 1, 12])
    for matcher in (HungarianMatcher.detr(), HungarianMatcher.deformable_detr()):
        want = matcher(outputs, targets)
        got = matcher(
            {k: v.cuda() for k, v in outputs.items()},
            [{k: v.cuda() for k, v in t.items()} for t in targets],
        )
        ref = ReferenceMatcher(
            matcher.cost_class, matcher.cost_bbox, matcher.cost_giou, focal=matcher.focal
        )
        blocks = _per_image_costs(ref, outputs, targets)
        for b, ((gi, gj), (wi, wj)) in enumerate(zip(got, want, strict=True)):
            assert gi.device.type == "cpu" and gi.dtype == torch.int64
            assert len(gi) == len(wi)
            assert float(blocks[b][gi, gj].sum()) == pytest.approx(
                float(blocks[b][wi, wj].sum()), rel=1e-4, abs=1e-4
            )


def test_pairwise_giou_is_torchvisions_bit_for_bit():
    """The matcher's GIoU planes against torchvision's ``generalized_box_iou`` per image,
    on random boxes and on the edge cases: identical, disjoint, nested, touching, and
    zero-area boxes (0/0 gives NaN in both)."""
    from zoo.loss.matcher import pairwise_giou

    g = torch.Generator().manual_seed(0)
    b, q, t = 3, 50, 13
    boxes1 = torch.rand(b, q, 4, generator=g) * 0.6 + 0.2
    boxes2 = torch.rand(b, t, 4, generator=g) * 0.6 + 0.2
    edge = torch.tensor(
        [[0.5, 0.5, 0.2, 0.2], [0.1, 0.1, 0.05, 0.05], [0.5, 0.5, 0.1, 0.1], [0.6, 0.5, 0.2, 0.2]]
    )
    boxes1[0, :4], boxes2[0, :4] = edge, edge[[0, 3, 0, 1]]
    boxes1[1, 0] = boxes2[1, 0] = torch.tensor([0.3, 0.3, 0.0, 0.0])  # zero area: NaN
    boxes1[2, 0, 2:] = 0.0
    got = pairwise_giou(boxes1, boxes2)
    for i in range(b):
        want = generalized_box_iou(
            box_convert(boxes1[i], "cxcywh", "xyxy"), box_convert(boxes2[i], "cxcywh", "xyxy")
        )
        torch.testing.assert_close(got[i], want, rtol=0, atol=0, equal_nan=True)
    assert got[1, 0, 0].isnan() and not got[0].isnan().any()
    assert got[0, 0, 0] == 1.0 and got[0, 2, 0] == pytest.approx(0.25)  # identical; nested 1/4
