"""Per-volume scores of slice predictions: Dice and HD95 (pixelwise.metrics.volume) of every volume.

Any dataset whose Samples carry meta["volume"] (with "slice", "slices" and "spacing", as the volume formats
`nifti` and `dicom` write them) is scored per volume besides its task's usual scores: the slices' label maps
are stacked in slice order, (S, H, W), and each volume is scored as soon as its last slice is in. Samples
without meta["volume"], or predictions without a semantic map, are left out: nothing here asks which format
or task it holds.
"""
from __future__ import annotations

import numpy as np

from pixelwise.constants import IGNORE_INDEX
from pixelwise.metrics.volume import volume_scores


def _mean(values) -> float | None:
    kept = [v for v in values if v is not None]
    return float(np.mean(kept)) if kept else None


class VolumeScores:
    """Collects (slice -> label maps) per volume; `compute` gives per-volume, per-class Dice and HD95 and
    their means ({} when no sample named a volume)."""

    def __init__(self, num_classes: int):
        self.num_classes = num_classes
        self.pending: dict[str, dict] = {}
        self.done: dict[str, dict] = {}

    def update(self, sample, pred, truth) -> None:
        meta = sample.meta
        if "volume" not in meta or pred.semantic is None or truth.semantic is None:
            return
        name = str(meta["volume"])
        entry = self.pending.setdefault(name, {"slices": {}, "count": int(meta["slices"]),
                                               "spacing": tuple(meta["spacing"])})
        entry["slices"][int(meta["slice"])] = (np.asarray(pred.semantic, np.int32),
                                               np.asarray(truth.semantic, np.int32))
        if len(entry["slices"]) == entry["count"]:
            self._score(name)

    def _score(self, name: str) -> None:
        entry = self.pending.pop(name)
        order = sorted(entry["slices"])
        pred = np.stack([entry["slices"][k][0] for k in order])
        truth = np.stack([entry["slices"][k][1] for k in order])
        self.done[name] = {**volume_scores(pred, truth, self.num_classes, entry["spacing"], IGNORE_INDEX),
                           "slices": len(order), "spacing": list(entry["spacing"])}

    def compute(self) -> dict:
        """{"per_volume": {name: {"dice": [C], "hd95": [C], "slices", "spacing"}}, "dice": [C] (mean over
        volumes), "hd95": [C], "mean_dice", "mean_hd95" (over classes and volumes)}; None where undefined.
        Volumes some of whose slices were not scored (a sliced split) are scored on the slices seen."""
        for name in list(self.pending):
            self._score(name)
        if not self.done:
            return {}
        vols = list(self.done.values())
        dice = [_mean(v["dice"][c] for v in vols) for c in range(self.num_classes)]
        hd = [_mean(v["hd95"][c] for v in vols) for c in range(self.num_classes)]
        return {"per_volume": dict(sorted(self.done.items())), "dice": dice, "hd95": hd,
                "mean_dice": _mean(d for v in vols for d in v["dice"]),
                "mean_hd95": _mean(h for v in vols for h in v["hd95"])}


def volume_table(scores: dict, classes: list[str]) -> str:
    """The per-volume Dice / HD95 lines `pixelwise eval` prints after the task's table."""
    f = (lambda v, w=8: f"{'n/a':>{w}}" if v is None else f"{v:>{w}.4f}")
    lines = ["", f"per-volume Dice / HD95 (mm; 95th-percentile Hausdorff distance) over "
                 f"{len(scores['per_volume'])} volumes", f"{'volume / class':<28} {'Dice':>8} {'HD95':>10}"]
    for name, vol in scores["per_volume"].items():
        for c, cls in enumerate(classes):
            lines.append(f"{(name + ' / ' + cls)[:28]:<28} {f(vol['dice'][c])} {f(vol['hd95'][c], 10)}")
    for c, cls in enumerate(classes):
        lines.append(f"{('mean / ' + cls)[:28]:<28} {f(scores['dice'][c])} {f(scores['hd95'][c], 10)}")
    lines.append(f"{'mean Dice / HD95':<28} {f(scores['mean_dice'])} {f(scores['mean_hd95'], 10)}")
    return "\n".join(lines)
