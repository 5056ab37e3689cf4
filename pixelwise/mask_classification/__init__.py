"""Mask classification (MaskFormer arXiv 2107.06278, Mask2Former arXiv 2112.01527): training targets as
segment sets, Hungarian matching, the point-sampled set criterion, and semantic / panoptic / instance inference
of one image's (class logits, mask logits). Pure torch (+ scipy for the assignment); no model code here.

Layer: imports only `pixelwise.constants` and `pixelwise.errors`, so it can sit in the losses row.
"""
from __future__ import annotations

from pixelwise.mask_classification.inference import (instance_inference, mask_logits, panoptic_inference,
                                                     semantic_inference)
from pixelwise.mask_classification.loss import MaskClassificationLoss
from pixelwise.mask_classification.matcher import HungarianMatcher
from pixelwise.mask_classification.points import PointTargets, prepare_targets
from pixelwise.mask_classification.targets import panoptic_segments, segments_from_batch, semantic_segments

__all__ = ["HungarianMatcher", "MaskClassificationLoss", "PointTargets", "instance_inference", "mask_logits",
           "panoptic_inference", "panoptic_segments", "prepare_targets", "segments_from_batch",
           "semantic_inference", "semantic_segments"]
