"""Instance scores of Predictions: COCO mask AP (pycocotools), the DSB 2018 score and the AJI."""
from __future__ import annotations

import torch

from pixelwise.metrics.instance import MaskAP, aggregated_jaccard, dsb_score
from pixelwise.metrics.reduce import Reducer


class InstanceMetric:
    """mask AP / AP50 / AP75 over the thing classes, and the DSB score and AJI (class-agnostic, mean over
    images) of `pred.instances` against `truth.instances` (crowd regions of `truth.crowd` not penalised)."""

    def __init__(self, things, classes: list[str], max_dets: int = 100):
        self.ap = MaskAP(things, classes, max_dets)
        self.nuclei = torch.zeros(3, dtype=torch.float64)  # sum of DSB scores, sum of AJI, images

    def update(self, pred, truth) -> None:
        gl, gc, _ = truth.instances
        pl, pc, ps = pred.instances
        self.ap.update(gl, gc, pl, pc, ps, truth.crowd)
        self.nuclei += torch.tensor([dsb_score(gl, pl), aggregated_jaccard(gl, pl), 1.0], dtype=torch.float64)

    def all_reduce(self, reducer: Reducer) -> None:
        self.ap.all_reduce(reducer)
        self.nuclei = reducer.sum(self.nuclei)

    def compute(self) -> dict:
        n = max(1.0, float(self.nuclei[2]))
        return {"mask_ap": self.ap.compute(), "dsb_score": float(self.nuclei[0]) / n,
                "aji": float(self.nuclei[1]) / n}
