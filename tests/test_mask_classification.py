"""Mask2Former's criterion and inference (pixelwise.mask_classification) against transformers' reference."""
from types import SimpleNamespace

import pytest
import torch
from transformers import Mask2FormerImageProcessor
from transformers.models.mask2former.configuration_mask2former import Mask2FormerConfig
from transformers.models.mask2former.modeling_mask2former import (Mask2FormerHungarianMatcher, Mask2FormerLoss,
                                                                  pair_wise_dice_loss,
                                                                  pair_wise_sigmoid_cross_entropy_loss)

from pixelwise.errors import DataError, ModelError
from pixelwise.mask_classification import (HungarianMatcher, MaskClassificationLoss, instance_inference,
                                           panoptic_inference, panoptic_segments, prepare_targets,
                                           segments_from_batch, semantic_inference, semantic_segments)
from pixelwise.mask_classification.matcher import pairwise_dice, pairwise_sigmoid_ce

N, Q, C, LOW, FULL = 2, 8, 5, 16, 64  # batch, queries, classes, mask size (1/4), input size


def blocky_semantic(generator: torch.Generator, size: int = FULL, classes: int = C) -> torch.Tensor:
    """(size, size) int64 map of 8x8-pixel blocks of random classes."""
    blocks = torch.randint(0, classes, (size // 8, size // 8), generator=generator)
    return blocks.repeat_interleave(8, 0).repeat_interleave(8, 1)


def random_case(seed: int = 0, layers: int = 1):
    g = torch.Generator().manual_seed(seed)
    outputs = [{"pred_logits": torch.randn(N, Q, C + 1, generator=g),
                "pred_masks": 3 * torch.randn(N, Q, LOW, LOW, generator=g)} for _ in range(layers)]
    semantic = torch.stack([blocky_semantic(g) for _ in range(N)])
    return outputs, semantic


def reference_targets(targets):
    return [t["masks"].float() for t in targets], [t["labels"] for t in targets]


# (a) matching -----------------------------------------------------------------------------------------------

def test_pairwise_costs_equal_transformers():
    g = torch.Generator().manual_seed(3)
    logits, labels = 2 * torch.randn(Q, 300, generator=g), (torch.rand(4, 300, generator=g) > 0.5).float()
    ce, ref_ce = pairwise_sigmoid_ce(logits, labels), pair_wise_sigmoid_cross_entropy_loss(logits, labels)
    dc, ref_dc = pairwise_dice(logits, labels), pair_wise_dice_loss(logits, labels)
    assert (ce - ref_ce).abs().max() == 0 and (dc - ref_dc).abs().max() == 0
    # unit weights are the unweighted costs (up to rounding); zero weights remove those points entirely
    ones = torch.ones(1, 300)
    assert torch.allclose(pairwise_sigmoid_ce(logits, labels, ones), ce, atol=1e-6)
    w = (torch.arange(300) < 200).float()[None]
    assert torch.allclose(pairwise_sigmoid_ce(logits, labels, w), pairwise_sigmoid_ce(logits[:, :200], labels[:, :200]),
                          atol=1e-6)
    assert torch.allclose(pairwise_dice(logits, labels, w), pairwise_dice(logits[:, :200], labels[:, :200]), atol=1e-6)


def test_matcher_equals_transformers_under_the_same_seed():
    (outputs,), semantic = random_case(0)
    targets = segments_from_batch(semantic)
    prepared = prepare_targets(targets, (FULL, FULL), torch.device("cpu"))
    assert all(t.valid is None for t in prepared)  # no void, no padding: the reference's computation
    matcher = HungarianMatcher()  # paper weights 2 / 5 / 5, 12544 points
    reference = Mask2FormerHungarianMatcher(cost_class=2.0, cost_mask=5.0, cost_dice=5.0, num_points=12544)
    masks, labels = reference_targets(targets)
    torch.manual_seed(7)
    ours = matcher(outputs["pred_logits"], outputs["pred_masks"], prepared)
    torch.manual_seed(7)
    ref = reference(outputs["pred_masks"], outputs["pred_logits"], masks, labels)
    torch.manual_seed(7)
    points = [torch.rand(1, 12544, 2) for _ in range(N)]
    injected = matcher(outputs["pred_logits"], outputs["pred_masks"], prepared, points=points)
    for (i, j), (ri, rj), (ii, ij), lab in zip(ours, ref, injected, labels):
        assert len(i) == len(j) == min(Q, len(lab))
        assert torch.equal(i, ri) and torch.equal(j, rj) and torch.equal(i, ii) and torch.equal(j, ij)


# (b) the loss parts -------------------------------------------------------------------------------------------

def test_loss_parts_equal_transformers_with_deep_supervision():
    layers, semantic = random_case(1, layers=3)
    targets = segments_from_batch(semantic)
    outputs = dict(layers[-1], aux_outputs=layers[:-1])
    criterion = MaskClassificationLoss(C)
    reference = Mask2FormerLoss(Mask2FormerConfig(num_labels=C), weight_dict={})
    masks, labels = reference_targets(targets)
    torch.manual_seed(11)
    ours = criterion.losses(outputs, targets)
    torch.manual_seed(11)
    ref = reference(layers[-1]["pred_masks"], layers[-1]["pred_logits"], masks, labels,
                    [{"masks_queries_logits": o["pred_masks"], "class_queries_logits": o["pred_logits"]}
                     for o in layers[:-1]])
    assert set(ours) == set(ref) and len(ours) == 9
    diff = max(abs(ours[k].item() - ref[k].item()) for k in ref)
    assert diff < 1e-5, diff
    weights = {"loss_cross_entropy": 2.0, "loss_mask": 5.0, "loss_dice": 5.0}
    expected = sum(weights[k if k in weights else k.rsplit("_", 1)[0]] * v for k, v in ref.items())
    torch.manual_seed(11)
    assert criterion(outputs, targets).item() == pytest.approx(expected.item(), abs=1e-4)


def test_loss_errors_name_the_problem():
    (outputs,), semantic = random_case(2)
    targets = segments_from_batch(semantic)
    with pytest.raises(ModelError, match="pred_logits"):
        MaskClassificationLoss(C + 1)(outputs, targets)
    with pytest.raises(ModelError, match="larger than the padded input"):
        MaskClassificationLoss(C, mask_stride=2)(outputs, targets)
    targets[0]["labels"] = targets[0]["labels"] + C
    with pytest.raises(DataError, match="outside"):
        MaskClassificationLoss(C)(outputs, targets)


# (c) learning, and void ---------------------------------------------------------------------------------------

def test_loss_decreases_and_inference_recovers_the_map():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(5)
    semantic = torch.stack([blocky_semantic(g, size=32, classes=4) for _ in range(2)])
    semantic[0, :4, :4] = 255
    targets = segments_from_batch(semantic)
    logits = torch.zeros(2, 6, 5, requires_grad=True)
    masks = torch.zeros(2, 6, 8, 8, requires_grad=True)
    aux_logits = torch.zeros(2, 6, 5, requires_grad=True)
    aux_masks = torch.zeros(2, 6, 8, 8, requires_grad=True)
    criterion = MaskClassificationLoss(4, num_points=512)
    optimiser = torch.optim.Adam([logits, masks, aux_logits, aux_masks], lr=0.2)
    history = []
    for _ in range(60):
        loss = criterion({"pred_logits": logits, "pred_masks": masks,
                          "aux_outputs": [{"pred_logits": aux_logits, "pred_masks": aux_masks}]}, targets)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        history.append(loss.item())
    assert history[-1] < 0.3 * history[0], (history[0], history[-1])
    for i in range(2):
        pred = semantic_inference(logits[i].detach(), masks[i].detach(), size=(32, 32)).argmax(0)
        valid = semantic[i] != 255
        assert (pred[valid] == semantic[i][valid]).float().mean() > 0.9


def test_capped_points_never_exceed_the_mask_map(monkeypatch):
    """cap_points (what the tasks train with): at most h * w points per mask, in the loss and the matcher; the
    default keeps the reference's 12544 for the parity above."""
    from pixelwise.mask_classification import loss as loss_module, matcher as matcher_module
    from pixelwise.tasks.panoptic.loss import PanopticMaskLoss
    from pixelwise.tasks.semantic.loss import SemanticMaskLoss

    drawn = {"loss": [], "matcher": []}
    real_uncertain, real_random = loss_module.uncertain_points, matcher_module.random_points
    monkeypatch.setattr(loss_module, "uncertain_points",
                        lambda logits, k, *a: drawn["loss"].append(k) or real_uncertain(logits, k, *a))
    monkeypatch.setattr(matcher_module, "random_points",
                        lambda count, k, extent: drawn["matcher"].append(k) or real_random(count, k, extent))
    layers, semantic = random_case(3)
    targets = segments_from_batch(semantic)
    capped = MaskClassificationLoss(C, cap_points=True)(layers[0], targets)
    assert set(drawn["loss"]) == {LOW * LOW} and set(drawn["matcher"]) == {LOW * LOW}
    drawn["loss"].clear(), drawn["matcher"].clear()
    plain = MaskClassificationLoss(C)(layers[0], targets)
    assert set(drawn["loss"]) == {12544} and set(drawn["matcher"]) == {12544}
    # the same criterion on fewer points: close to the full count's value on these smooth block masks
    assert torch.isfinite(capped) and abs(capped.item() - plain.item()) < 0.1 * plain.item()
    assert SemanticMaskLoss(C).loss.cap_points and PanopticMaskLoss(C, [0]).loss.cap_points


def test_void_costs_nothing():
    """Target content on void pixels, and predictions wholly over void, do not change the loss."""
    (outputs,), semantic = random_case(4)
    semantic[:, :, : FULL // 2] = 255  # left half void
    targets = segments_from_batch(semantic)
    criterion = MaskClassificationLoss(C)
    torch.manual_seed(3)
    base = criterion.losses(outputs, targets)
    changed = {k: v.clone() for k, v in outputs.items()}
    changed["pred_masks"][..., : LOW // 2 - 1] = 10 * torch.randn(N, Q, LOW, LOW // 2 - 1)
    noisy = [dict(t, masks=t["masks"] | ~t["valid"]) for t in targets]  # every mask "on" over void
    torch.manual_seed(3)
    after = criterion.losses(changed, noisy)
    assert all(torch.equal(base[k], after[k]) for k in base)
    # and the same change moves a loss that treats void as background (no "valid")
    bare = [{"labels": t["labels"], "masks": t["masks"]} for t in targets]
    torch.manual_seed(3)
    before = criterion.losses(outputs, bare)["loss_mask"]
    torch.manual_seed(3)
    assert criterion.losses(changed, bare)["loss_mask"] != before


def test_padding_is_excluded_and_aligned():
    """A target smaller than the padded input: points are drawn inside it, the padding costs nothing."""
    (outputs,), semantic = random_case(6)
    targets = segments_from_batch(semantic[:, :50, :40])
    prepared = prepare_targets(targets, (FULL, FULL), torch.device("cpu"))
    assert torch.allclose(prepared[0].extent, torch.tensor([40 / 64, 50 / 64]))
    assert prepared[0].valid[0, 0, :50, :40].all() and prepared[0].valid[0, 0, 50:].sum() == 0
    torch.manual_seed(1)
    base = MaskClassificationLoss(C).losses(outputs, targets)
    changed = outputs["pred_masks"].clone()
    changed[..., 12:, :] = 50.0  # predicted mask rows 12.. cover input rows 48.. (padding from row 50)
    torch.manual_seed(1)
    moved = MaskClassificationLoss(C).losses(dict(outputs, pred_masks=changed), targets)
    changed[..., 13:, :] = -50.0  # rows 13.. (input rows 52.., beyond every sampled point's reach) are free
    torch.manual_seed(1)
    free = MaskClassificationLoss(C).losses(dict(outputs, pred_masks=changed), targets)
    assert moved["loss_mask"] != base["loss_mask"]
    assert torch.equal(free["loss_mask"], moved["loss_mask"]) and torch.equal(free["loss_dice"], moved["loss_dice"])


# (e) targets --------------------------------------------------------------------------------------------------

def hand_maps():
    semantic = torch.tensor([
        [255, 255, 0, 0, 0, 0, 0, 0],
        [0, 0, 0, 0, 0, 0, 0, 0],
        [3, 3, 3, 3, 3, 3, 3, 3],
        [3, 3, 3, 3, 3, 3, 3, 3],
        [1, 1, 1, 1, 2, 2, 2, 2],
        [1, 1, 1, 1, 2, 1, 2, 2],
        [1, 1, 1, 1, 2, 2, 2, 2],
        [1, 1, 1, 1, 2, 2, 2, 255],
    ])
    instances = torch.zeros(8, 8, dtype=torch.int64)
    instances[4:6, 0:4] = 1  # a class-1 instance; rows 6-7 of class 1 belong to no instance
    instances[4:8, 4:8] = 2  # a class-2 instance holding one class-1 pixel: its class is the majority, 2
    instances[0, 0:2] = 3  # an instance on void only: dropped
    return semantic, instances


def test_semantic_targets_by_hand():
    semantic, _ = hand_maps()
    t = semantic_segments(semantic)
    assert t["labels"].tolist() == [0, 1, 2, 3]
    assert t["masks"].dtype == torch.bool and t["masks"].shape == (4, 8, 8)
    assert t["masks"].sum((1, 2)).tolist() == [14, 17, 14, 16]
    assert t["valid"].sum() == 61 and not t["valid"][0, 0] and not t["valid"][7, 7]
    assert not t["masks"][:, 0, 0].any()  # void is in no mask
    assert torch.equal(t["masks"].sum(0) > 0, t["valid"])


def test_panoptic_targets_by_hand():
    semantic, instances = hand_maps()
    t = panoptic_segments(semantic, instances, things=[1, 2])
    assert t["labels"].tolist() == [0, 3, 1, 2]  # stuff classes ascending, then instances 1, 2 (3 dropped)
    assert t["masks"].sum((1, 2)).tolist() == [14, 16, 8, 15]
    assert t["masks"][3, 5, 5] and not t["masks"][2, 5, 5]  # the class-1 pixel inside instance 2
    expected_valid = semantic != 255
    expected_valid[6:8, 0:4] = False  # thing pixels of no instance are void
    assert torch.equal(t["valid"], expected_valid)
    assert torch.equal(t["masks"].sum(0), t["valid"].long())  # the segments tile the labelled pixels
    batch = segments_from_batch(torch.stack([semantic, semantic]), torch.stack([instances, instances]), [1, 2])
    assert len(batch) == 2 and torch.equal(batch[1]["masks"], t["masks"])
    with pytest.raises(DataError, match="instances"):
        segments_from_batch(semantic[None], instances[None, :4], [1, 2])


# (d) inference ------------------------------------------------------------------------------------------------

def reference_outputs(logits, masks):
    return SimpleNamespace(class_queries_logits=logits[None], masks_queries_logits=masks[None])


def test_semantic_inference_equals_transformers():
    g = torch.Generator().manual_seed(8)
    logits, masks = torch.randn(7, 5, generator=g), 3 * torch.randn(7, 96, 96, generator=g)
    ours = semantic_inference(logits, masks, size=(384, 384))  # the reference's fixed 384 = 4 x 96
    ref = Mask2FormerImageProcessor().post_process_semantic_segmentation(
        reference_outputs(logits, masks), return_segmentation_scores=True)[0]
    assert (ours - ref["segmentation_scores"]).abs().max() < 1e-6
    assert torch.equal(ours.argmax(0), ref["segmentation"])
    cropped = semantic_inference(logits, masks, size=(300, 350), padded=(384, 384))
    assert (cropped - ours[:, :300, :350]).abs().max() < 1e-6  # a crop (einsum rounding aside)
    assert semantic_inference(logits, masks).shape == (4, 96, 96)
    with pytest.raises(ModelError, match="size"):
        semantic_inference(logits, masks, size=(400, 384), padded=(384, 384))


def test_instance_inference_equals_transformers():
    g = torch.Generator().manual_seed(9)
    logits, masks = torch.randn(6, 4, generator=g), 3 * torch.randn(6, 96, 96, generator=g)
    masks[2] = -5.0  # an empty mask: dropped by both
    got_masks, classes, scores = instance_inference(logits, masks, None, top_k=6, size=(384, 384))
    ref = Mask2FormerImageProcessor().post_process_instance_segmentation(
        reference_outputs(logits, masks), threshold=0.0, return_binary_maps=True)[0]
    order = sorted(range(len(ref["segments_info"])), key=lambda j: -ref["segments_info"][j]["score"])
    from_query_2 = int((torch.topk(logits.softmax(-1)[:, :-1].flatten(), 6)[1] // 3 == 2).sum())
    assert len(order) == len(scores) == 6 - from_query_2
    assert classes.tolist() == [ref["segments_info"][j]["label_id"] for j in order]
    assert torch.allclose(scores, torch.tensor([ref["segments_info"][j]["score"] for j in order]), atol=1e-6)
    assert torch.equal(got_masks, ref["segmentation"][order].bool())
    # things only: classes outside the set are dropped after the top-k
    _, thing_classes, _ = instance_inference(logits, masks, [0, 2], top_k=6, size=(384, 384))
    assert thing_classes.tolist() == [c for c in classes.tolist() if c in (0, 2)]


def class_logits(pairs, num_classes):
    """Logits (len(pairs), num_classes + 1) whose softmax gives probability p to class c (the rest spread)."""
    out = torch.empty(len(pairs), num_classes + 1)
    for q, (c, p) in enumerate(pairs):
        out[q] = torch.log(torch.tensor((1 - p) / num_classes))
        out[q, c] = torch.log(torch.tensor(p))
    return out


def test_panoptic_inference_equals_transformers_where_conventions_agree():
    """A layout where the winning query of every pixel is sure (sigmoid >= 0.5), so the authors' rule and
    transformers' give the same map: stuff merged, things per query, an overlapped query dropped, a
    no-object query and a low-score query removed."""
    stuff0, stuff1, thing2, thing3, void = 0, 1, 2, 3, 4
    pairs = [(stuff0, 0.82), (stuff1, 0.95), (stuff1, 0.93), (thing2, 0.97), (thing2, 0.96), (thing3, 0.85),
             (void, 0.9), (stuff1, 0.6), (thing3, 0.99)]
    logits = class_logits(pairs, 4)
    regions = torch.zeros(len(pairs), 96, 96, dtype=torch.bool)
    regions[0] = True  # a base stuff layer under everything
    regions[1, :4] = True
    regions[2, 92:] = True  # merges with query 1
    regions[3, 30:40, 10:25] = True
    regions[4, 30:40, 50:65] = True
    regions[5, 30:40, 12:68] = True  # mostly under queries 3 and 4: dropped
    regions[6, 50:70, 50:70] = True  # no object
    regions[7, 70:80, :] = True  # below the threshold
    regions[8, 93:, 80:88] = True  # a thing on the stuff band, higher score
    g = torch.Generator().manual_seed(10)
    masks = torch.where(regions, 4.0, -4.0) + torch.rand(regions.shape, generator=g) - 0.5
    ids, segments = panoptic_inference(logits, masks, things={2, 3}, size=(384, 384))
    ref = Mask2FormerImageProcessor().post_process_panoptic_segmentation(
        reference_outputs(logits, masks), threshold=0.8, label_ids_to_fuse={0, 1})[0]
    assert torch.equal(ids, ref["segmentation"])
    first = {}
    for s in ref["segments_info"]:
        first.setdefault(s["id"], s)  # transformers lists a merged stuff segment once per query
    assert [s["id"] for s in segments] == list(first) == [1, 2, 3, 4, 5]
    for s in segments:
        r = first[s["id"]]
        assert s["category_id"] == r["label_id"] and s["isthing"] == (not r["was_fused"])
        assert s["score"] == pytest.approx(r["score"], abs=1e-6)
        assert s["area"] == int((ids == s["id"]).sum()) > 0
    assert [s["category_id"] for s in segments] == [0, 1, 2, 2, 3]


def test_panoptic_inference_authors_rules():
    """Where conventions differ: a query's segment stops where its own sigmoid drops under 0.5 (transformers
    gives it the whole argmax region), and no surviving query gives an all-void map (transformers: -1)."""
    logits = class_logits([(0, 0.9)], 2)
    masks = torch.full((1, 4, 4), 3.0)
    masks[0, :, 2:] = -3.0
    ids, segments = panoptic_inference(logits, masks, things=set())
    assert ids.tolist() == [[1, 1, 0, 0]] * 4 and segments[0]["area"] == 8
    ref = Mask2FormerImageProcessor().post_process_panoptic_segmentation(reference_outputs(logits, masks),
                                                                         label_ids_to_fuse={0})[0]
    assert (ref["segmentation"] == 1).all()
    ids, segments = panoptic_inference(logits, masks, things=set(), object_mask_threshold=0.95)
    assert segments == [] and ids.dtype == torch.int32 and (ids == 0).all()


def test_empty_cases():
    """An all-void image has no segments: its queries learn "no object", its masks cost nothing; nothing kept
    at inference gives empty results of the right shapes."""
    semantic = torch.full((2, 32, 32), 255)
    semantic[1, :10] = 2
    targets = segments_from_batch(semantic)
    assert [t["labels"].tolist() for t in targets] == [[], [2]]
    logits, masks = torch.randn(2, 5, 5), torch.randn(2, 5, 8, 8)
    criterion = MaskClassificationLoss(4, num_points=100)
    assert criterion.losses({"pred_logits": logits, "pred_masks": masks}, targets)["loss_mask"] > 0
    void = segments_from_batch(semantic[:1].repeat(2, 1, 1))
    parts = criterion.losses({"pred_logits": logits, "pred_masks": masks}, void)
    assert parts["loss_mask"] == 0 and parts["loss_dice"] == 0 and parts["loss_cross_entropy"] > 0
    got, classes, scores = instance_inference(logits[0], masks[0], [], size=(30, 30))
    assert got.shape == (0, 30, 30) and len(classes) == len(scores) == 0
    ids, segments = panoptic_inference(logits[0], masks[0], [0], object_mask_threshold=1.0, size=(30, 31))
    assert ids.shape == (30, 31) and segments == []
