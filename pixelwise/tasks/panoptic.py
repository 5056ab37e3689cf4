"""The panoptic task (Panoptic-DeepLab, arXiv 1911.10194): targets, batches, loss and PQ validation.

Samples become (image, targets) with targets a dict: "semantic" int64 (H, W), "semantic_weight",
"center" (1, H, W), "center_weight", "offset" (2, H, W), "offset_weight" (see
pixelwise.data.panoptic_targets), and for evaluation "panoptic" = (segment ids (H, W), segments), the truth
PQ is scored against. The loss is the paper's: bootstrapped cross-entropy on the hardest 20 % of pixels
(small instances weighted 3x), plus 200 x MSE on the center heatmap and 0.01 x L1 on the offsets.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

from pixelwise.data.dataset import TransformedDataset
from pixelwise.data.panoptic_targets import instance_id_map, panoptic_from_maps, panoptic_targets
from pixelwise.data.sample import IGNORE_INDEX, Sample
from pixelwise.data.transforms import build_transform
from pixelwise.tasks.inference import PanopticScorer, panoptic_prediction, run_model


class PanopticTransform:
    """Sample -> (image float32 (3, H, W), targets dict). The semantic map and the instance-id map travel
    through the semantic preset stacked as one (2, H, W) mask, so every geometric op moves them together;
    pixels the preset fills with 255 (padding, rotation corners) are void and belong to no instance."""

    def __init__(self, data_cfg, things, train: bool, targets: dict | None = None):
        self.base = build_transform(data_cfg, train=train)
        self.things, self.train, self.targets = [int(t) for t in things], train, dict(targets or {})

    def __call__(self, sample: Sample):
        h, w = sample.image.shape[:2]
        if sample.semantic is None:
            raise ValueError(f"{sample.meta.get('path', sample.name)}: sample has no semantic labels")
        inst = sample.instances
        masks = inst.masks[np.isin(inst.class_ids, self.things)] if inst is not None else np.zeros((0, h, w), bool)
        ids = instance_id_map(masks, (h, w))
        image, maps = self.base(Sample(sample.image, np.stack([np.asarray(sample.semantic, np.int64), ids]), None,
                                       sample.meta))
        semantic, ids = maps[0], maps[1].clone()
        ids[semantic == IGNORE_INDEX] = 0
        targets = panoptic_targets(semantic, ids, **self.targets)
        targets["semantic"] = semantic
        if not self.train:
            truth = sample.meta.get("panoptic")
            if truth is None or truth[0].shape != tuple(semantic.shape):
                truth = panoptic_from_maps(semantic.numpy(), ids.numpy(), self.things)
            targets["panoptic"] = truth
        return image, targets


def panoptic_collate(batch):
    """Stack (image, targets) pairs of different sizes: images padded with 0, semantic with 255, the other
    maps with 0 (weight 0: padding costs nothing); "panoptic" truth stays a list."""
    images, targets = zip(*batch)
    h = max(im.shape[-2] for im in images)
    w = max(im.shape[-1] for im in images)
    x = images[0].new_zeros((len(images), 3, h, w))
    for i, im in enumerate(images):
        x[i, :, :im.shape[-2], :im.shape[-1]] = im
    out = {}
    for key, first in targets[0].items():
        if not isinstance(first, torch.Tensor):
            out[key] = [t[key] for t in targets]
            continue
        fill = IGNORE_INDEX if key == "semantic" else 0
        y = first.new_full((len(targets), *first.shape[:-2], h, w), fill)
        for i, t in enumerate(targets):
            y[i, ..., :t[key].shape[-2], :t[key].shape[-1]] = t[key]
        out[key] = y
    return x, out


class PanopticLoss(nn.Module):
    """Panoptic-DeepLab's loss. outputs {"out", "center", "offset"}, targets of PanopticTransform -> scalar.

    semantic: cross-entropy per pixel x semantic_weight, mean over the top `top_k` fraction (detectron2's
    DeepLabCE); center: MSE x center_weight / sum of weights; offset: L1 x offset_weight / sum of weights.
    """

    def __init__(self, top_k: float = 0.2, center_weight: float = 200.0, offset_weight: float = 0.01,
                 class_weights: list[float] | None = None):
        super().__init__()
        self.top_k, self.center_weight, self.offset_weight = top_k, center_weight, offset_weight
        weights = torch.tensor(class_weights, dtype=torch.float32) if class_weights else None
        self.register_buffer("class_weights", weights)

    def forward(self, out: dict, targets: dict) -> torch.Tensor:
        pixel = F.cross_entropy(out["out"].float(), targets["semantic"], weight=self.class_weights,
                                ignore_index=IGNORE_INDEX, reduction="none") * targets["semantic_weight"]
        pixel = pixel.flatten()
        if self.top_k < 1:
            pixel = torch.topk(pixel, max(1, int(self.top_k * pixel.numel()))).values
        cw, ow = targets["center_weight"][:, None], targets["offset_weight"][:, None]
        center = ((out["center"].float() - targets["center"]) ** 2 * cw).sum() / cw.sum().clamp(min=1)
        offset = ((out["offset"].float() - targets["offset"]).abs() * ow).sum() / ow.sum().clamp(min=1)
        return pixel.mean() + self.center_weight * center + self.offset_weight * offset


class PanopticTask:
    """Panoptic segmentation with a Panoptic-DeepLab-style model; validated by PQ (and mIoU)."""

    name = "panoptic"
    best_key = "pq"
    record_keys = ("pq", "sq", "rq", "things", "stuff", "miou", "pixel_acc", "per_class_iou")

    def __init__(self, cfg, num_classes: int, things, model: nn.Module):
        self.cfg, self.num_classes, self.things = cfg, num_classes, [int(t) for t in things]
        model = getattr(model, "module", model)
        self.targets = dict(getattr(model, "targets", {}))
        self.post = dict(getattr(model, "postprocess", {}))

    def transform(self, train: bool) -> PanopticTransform:
        return PanopticTransform(self.cfg.data, self.things, train, self.targets)

    def collate(self, batch):
        return panoptic_collate(batch)

    def criterion(self) -> nn.Module:
        return PanopticLoss(class_weights=self.cfg.train.class_weights)

    def validate(self, model, dataset, device, rank: int = 0, world: int = 1, progress: bool = False,
                 instances: bool = False) -> dict:
        """PQ (+ mIoU; + mask AP and DSB scores when `instances`) of `model` (eval mode) on `dataset`:
        this process takes images rank, rank + world, ...; the statistics are all-reduced."""
        data = Subset(TransformedDataset(dataset, self.transform(False)), list(range(rank, len(dataset), world)))
        loader = DataLoader(data, batch_size=1, shuffle=False, collate_fn=self.collate)
        scorer = PanopticScorer(self.num_classes, self.things, dataset.classes, instances=instances)
        for images, targets in tqdm(loader, desc="eval", disable=not progress, leave=False):
            out = run_model(model, images.to(device))
            pred = panoptic_prediction({k: v[0] for k, v in out.items()}, self.things, **self.post)
            gt_ids, gt_segments = targets["panoptic"][0]
            scorer.update(gt_ids, gt_segments, targets["semantic"][0].numpy(), pred)
        scorer.all_reduce()
        return scorer.compute()

    @staticmethod
    def summary(scores: dict) -> str:
        return f"val PQ {scores['pq']:.4f}  SQ {scores['sq']:.4f}  RQ {scores['rq']:.4f}  mIoU {scores['miou']:.4f}"
