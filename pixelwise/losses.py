"""Training losses. Every loss maps logits (N,C,H,W) and targets (N,H,W) int64 (255 = void) to a scalar.

- `CrossEntropy`: class weights (e.g. median-frequency balancing, Eigen & Fergus arXiv 1411.4734, as SegNet
  uses on CamVid) and label smoothing (Szegedy et al., arXiv 1512.00567).
- `DiceLoss`: soft Dice per class, averaged over classes present in the batch (Milletari et al., V-Net,
  arXiv 1606.04797).
- `FocalLoss`: Lin et al., arXiv 1708.02002: -(1 - p_t)^gamma log p_t, optional per-class alpha.
- `LovaszSoftmax`: Berman et al., arXiv 1705.08790, the convex Lovasz extension of the Jaccard loss,
  computed over the whole batch ("per_image=False") on present classes, as in the authors' reference code.
- `OHEMCrossEntropy`: online hard example mining as in the PSPNet/DeepLab Cityscapes recipes: keep pixels
  whose probability of the true class is below `thresh`, but at least `min_kept` of the hardest ones.

`build_loss(train_cfg, num_classes)` combines them as a weighted sum named in the config:
`train.loss: ce` or `train.loss: {ce: 1.0, dice: 0.5}`.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from pixelwise.constants import IGNORE_INDEX
from pixelwise.errors import ConfigError


def _valid(target: torch.Tensor) -> torch.Tensor:
    return target != IGNORE_INDEX


class CrossEntropy(torch.nn.Module):
    """Pixel-wise cross-entropy with optional class weights and label smoothing; void pixels ignored."""

    def __init__(self, weight: list[float] | None = None, label_smoothing: float = 0.0):
        super().__init__()
        self.register_buffer("weight", torch.tensor(weight, dtype=torch.float32) if weight else None)
        self.label_smoothing = label_smoothing

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.float(), target, weight=self.weight, ignore_index=IGNORE_INDEX,
                               label_smoothing=self.label_smoothing)


class DiceLoss(torch.nn.Module):
    """1 - mean over present classes of (2 sum p*y + eps) / (sum p + sum y + eps), void pixels excluded."""

    def __init__(self, eps: float = 1.0):
        super().__init__()
        self.eps = eps

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        n, c = logits.shape[:2]
        probs = logits.float().softmax(1)
        valid = _valid(target)
        onehot = F.one_hot(target.clamp(0, c - 1) * valid, c).permute(0, 3, 1, 2).float()
        mask = valid.unsqueeze(1).float()
        probs, onehot = probs * mask, onehot * mask
        inter = (probs * onehot).sum((0, 2, 3))
        denom = probs.sum((0, 2, 3)) + onehot.sum((0, 2, 3))
        present = onehot.sum((0, 2, 3)) > 0
        dice = (2 * inter + self.eps) / (denom + self.eps)
        return 1 - dice[present].mean() if present.any() else logits.sum() * 0


class FocalLoss(torch.nn.Module):
    """Mean over labelled pixels of -alpha_t (1 - p_t)^gamma log p_t."""

    def __init__(self, gamma: float = 2.0, alpha: list[float] | None = None):
        super().__init__()
        self.gamma = gamma
        self.register_buffer("alpha", torch.tensor(alpha, dtype=torch.float32) if alpha else None)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        valid = _valid(target)
        logp = logits.float().log_softmax(1)
        t = target.clamp(0, logits.shape[1] - 1).unsqueeze(1)
        logp_t = logp.gather(1, t).squeeze(1)[valid]
        loss = -((1 - logp_t.exp()) ** self.gamma) * logp_t
        if self.alpha is not None:
            loss = loss * self.alpha[target[valid]]
        return loss.mean() if loss.numel() else logits.sum() * 0


def lovasz_grad(gt_sorted: torch.Tensor) -> torch.Tensor:
    """Gradient of the Lovasz extension w.r.t. sorted errors (Berman et al., Alg. 1)."""
    gts = gt_sorted.sum()
    intersection = gts - gt_sorted.cumsum(0)
    union = gts + (1 - gt_sorted).cumsum(0)
    jaccard = 1.0 - intersection / union
    if gt_sorted.numel() > 1:
        jaccard[1:] = jaccard[1:] - jaccard[:-1]
    return jaccard


class LovaszSoftmax(torch.nn.Module):
    """Lovasz-softmax over all labelled pixels of the batch, averaged over classes present in the truth."""

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        c = logits.shape[1]
        probs = logits.float().softmax(1).permute(0, 2, 3, 1).reshape(-1, c)
        labels = target.reshape(-1)
        keep = labels != IGNORE_INDEX
        probs, labels = probs[keep], labels[keep]
        losses = []
        for k in range(c):
            fg = (labels == k).float()
            if fg.sum() == 0:
                continue
            errors = (fg - probs[:, k]).abs()
            errors_sorted, perm = torch.sort(errors, descending=True)
            losses.append(torch.dot(errors_sorted, lovasz_grad(fg[perm])))
        return torch.stack(losses).mean() if losses else logits.sum() * 0


class OHEMCrossEntropy(torch.nn.Module):
    """Cross-entropy over the hard pixels: p(true class) < thresh, and at least `min_kept` pixels."""

    def __init__(self, thresh: float = 0.7, min_kept: int = 10_000, weight: list[float] | None = None):
        super().__init__()
        self.thresh, self.min_kept = thresh, min_kept
        self.register_buffer("weight", torch.tensor(weight, dtype=torch.float32) if weight else None)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        pixel_loss = F.cross_entropy(logits.float(), target, weight=self.weight, ignore_index=IGNORE_INDEX,
                                     reduction="none").reshape(-1)
        valid = _valid(target).reshape(-1)
        losses = pixel_loss[valid]
        if losses.numel() == 0:
            return logits.sum() * 0
        hard = losses > -torch.log(torch.tensor(self.thresh))
        k = min(self.min_kept, losses.numel())
        if hard.sum() < k:
            return losses.topk(k).values.mean()
        return losses[hard].mean()


class WeightedSum(torch.nn.Module):
    """sum_i w_i * loss_i(logits, target)."""

    def __init__(self, parts: dict[str, torch.nn.Module], weights: dict[str, float]):
        super().__init__()
        self.parts = torch.nn.ModuleDict(parts)
        self.weights = dict(weights)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return sum(self.weights[name] * loss(logits, target) for name, loss in self.parts.items())


LOSSES = ("ce", "dice", "focal", "lovasz", "ohem")


def _make(name: str, train_cfg) -> torch.nn.Module:
    weights = train_cfg.class_weights
    if name == "ce":
        return CrossEntropy(weights, train_cfg.label_smoothing)
    if name == "dice":
        return DiceLoss()
    if name == "focal":
        return FocalLoss(alpha=weights)
    if name == "lovasz":
        return LovaszSoftmax()
    if name == "ohem":
        return OHEMCrossEntropy(weight=weights)
    raise ConfigError(f"config key 'train.loss': unknown loss '{name}' (known: {', '.join(LOSSES)})")


def check_class_weights(weights: list[float] | None, num_classes: int) -> None:
    """`train.class_weights` must give one weight per class (or be unset)."""
    if weights is not None and len(weights) != num_classes:
        raise ConfigError(f"config key 'train.class_weights': {len(weights)} weights for {num_classes} classes")


def build_loss(train_cfg, num_classes: int) -> torch.nn.Module:
    """The loss a TrainConfig names: a name ('ce') or a mapping of names to weights ({ce: 1, dice: 0.5});
    None (unset) is cross-entropy."""
    check_class_weights(train_cfg.class_weights, num_classes)
    spec = train_cfg.loss if train_cfg.loss is not None else "ce"
    if isinstance(spec, str):
        return _make(spec, train_cfg)
    if not spec:
        raise ConfigError("config key 'train.loss': empty mapping")
    return WeightedSum({k: _make(k, train_cfg) for k in spec}, {k: float(v) for k, v in spec.items()})


WEIGHT_SCALE = 1000  # a weight map rides in the int64 target stack as round(weight * WEIGHT_SCALE)


class WeightMapCrossEntropy(torch.nn.Module):
    """Cross-entropy weighted per pixel by a weight map (the U-Net paper's eq. 1 with eq. 2's w(x),
    arXiv 1505.04597; `pixelwise.tasks.semantic.weightmap`), normalised by the sum of the weights of the
    pixels that count, so its scale matches plain cross-entropy's.
    logits (N, C, H, W); target int64 (N, 2, H, W): [labels (255 = void), round(weight * WEIGHT_SCALE)]."""

    def __init__(self, label_smoothing: float = 0.0):
        super().__init__()
        self.label_smoothing = label_smoothing

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        labels, weights = target[:, 0], target[:, 1].float() / WEIGHT_SCALE
        per_pixel = F.cross_entropy(logits.float(), labels, ignore_index=IGNORE_INDEX, reduction="none",
                                    label_smoothing=self.label_smoothing)
        weights = weights * _valid(labels)
        return (per_pixel * weights).sum() / weights.sum().clamp_min(1e-6)
