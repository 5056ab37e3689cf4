"""Mask2Former (Cheng et al., arXiv 2112.01527): the builder `mask2former`, the model and its output helpers."""
from __future__ import annotations

from pixelwise.models.mask2former.model import PAPER, Mask2Former, mask2former, masks_at_input, semantic_scores

__all__ = ["PAPER", "Mask2Former", "mask2former", "masks_at_input", "semantic_scores"]
