"""Mask2Former's masked-attention transformer decoder with its class and mask heads.

Cheng, Misra, Schwing, Kirillov, Girdhar, "Masked-attention Mask Transformer for Universal Image
Segmentation", arXiv 2112.01527, section 3.2: learnable queries attend, one decoder layer per feature
level round-robin over the 1/32, 1/16, 1/8 maps, to the pixels inside the mask the previous prediction
gives them (masked attention), then to each other (self-attention), then an FFN; a shared head predicts
class logits and a mask (the query's MLP embedding dotted with the 1/4 mask features) before the first
layer and after every layer.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from pixelwise.models.mask2former.pixel_decoder import NUM_LEVELS, sine_position_embedding


class MaskedAttentionLayer(nn.Module):
    """Masked cross-attention -> self-attention -> FFN, each with a residual and a post LayerNorm.

    forward: queries (N, Q, C), query_pos (N, Q, C), memory (N, S, C) and its position embedding (1 or N, S, C),
    attn_mask bool (N * heads, Q, S), True where a query may not look -> (N, Q, C).
    Query and key get their position embeddings added, values not (DETR's convention).
    """

    def __init__(self, dim: int, heads: int, dim_feedforward: int):
        super().__init__()
        self.cross_attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm_cross = nn.LayerNorm(dim)
        self.self_attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm_self = nn.LayerNorm(dim)
        self.linear1 = nn.Linear(dim, dim_feedforward)
        self.linear2 = nn.Linear(dim_feedforward, dim)
        self.norm_ffn = nn.LayerNorm(dim)
        for p in self.parameters():  # the reference initialisation
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)

    def forward(self, x: torch.Tensor, query_pos: torch.Tensor, memory: torch.Tensor, memory_pos: torch.Tensor,
                attn_mask: torch.Tensor) -> torch.Tensor:
        attended = self.cross_attn(x + query_pos, memory + memory_pos, memory, attn_mask=attn_mask,
                                   need_weights=False)[0]
        x = self.norm_cross(x + attended)
        q = x + query_pos
        x = self.norm_self(x + self.self_attn(q, q, x, need_weights=False)[0])
        return self.norm_ffn(x + self.linear2(F.relu(self.linear1(x))))


class TransformerDecoder(nn.Module):
    """Queries -> [(class logits (N, Q, num_classes + 1), mask logits (N, Q, H/4, W/4))] * (layers + 1).

    forward: multi_scale [m32, m16, m8] (N, in_dim, h_l, w_l), mask_features (N, mask_dim, H/4, W/4).
    `layers` masked-attention layers (the paper's L = 9, 3 rounds over the 3 levels); the first prediction
    comes from the bare queries and sets the first layer's mask. The last class is "no object".

    Attention masks: the previous prediction's mask logits resized (bilinear) to the level's size; a query
    attends where sigmoid >= 0.5; a query whose mask is empty everywhere attends everywhere (as the reference).
    Masks are detached: no gradient flows through the masking.
    """

    def __init__(self, num_classes: int, in_dim: int = 256, dim: int = 256, num_queries: int = 100, heads: int = 8,
                 dim_feedforward: int = 2048, layers: int = 9, mask_dim: int = 256,
                 enforce_input_projection: bool = False):
        super().__init__()
        if dim % heads:
            raise ValueError(f"decoder width {dim} is not divisible by {heads} heads")
        self.dim, self.heads = dim, heads
        self.query_feat = nn.Embedding(num_queries, dim)   # the queries' initial content
        self.query_embed = nn.Embedding(num_queries, dim)  # their position embeddings
        self.level_embed = nn.Embedding(NUM_LEVELS, dim)
        project = in_dim != dim or enforce_input_projection
        self.input_proj = nn.ModuleList(nn.Conv2d(in_dim, dim, 1) if project else nn.Identity()
                                        for _ in range(NUM_LEVELS))
        for conv in self.input_proj:
            if isinstance(conv, nn.Conv2d):
                nn.init.xavier_uniform_(conv.weight)
                nn.init.zeros_(conv.bias)
        self.layers = nn.ModuleList(MaskedAttentionLayer(dim, heads, dim_feedforward) for _ in range(layers))
        self.decoder_norm = nn.LayerNorm(dim)
        self.class_embed = nn.Linear(dim, num_classes + 1)
        self.mask_embed = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, dim), nn.ReLU(),
                                        nn.Linear(dim, mask_dim))

    def predict(self, x: torch.Tensor, mask_features: torch.Tensor, attn_size: Sequence[int] | None):
        """(class logits, mask logits, attention mask for the next layer at `attn_size`, or None)."""
        x = self.decoder_norm(x)
        logits = self.class_embed(x)
        masks = torch.einsum("nqc,nchw->nqhw", self.mask_embed(x), mask_features)
        if attn_size is None:
            return logits, masks, None
        resized = F.interpolate(masks, size=tuple(attn_size), mode="bilinear", align_corners=False)
        blocked = resized.sigmoid().flatten(2).detach() < 0.5  # (N, Q, h * w)
        blocked = blocked & ~blocked.all(-1, keepdim=True)  # an empty mask: attend everywhere
        return logits, masks, blocked.repeat_interleave(self.heads, dim=0)

    def forward(self, multi_scale: Sequence[torch.Tensor], mask_features: torch.Tensor
                ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        n = mask_features.shape[0]
        sizes = [tuple(f.shape[-2:]) for f in multi_scale]
        memory, memory_pos = [], []
        for level, f in enumerate(multi_scale):
            memory.append(self.input_proj[level](f).flatten(2).transpose(1, 2) + self.level_embed.weight[level])
            memory_pos.append(sine_position_embedding(f, self.dim // 2).flatten(2).transpose(1, 2))  # (1, S, C)
        # repeat, not expand: a view of a parameter made under no_grad confuses autograd hooks (FlopCounterMode)
        x = self.query_feat.weight[None].repeat(n, 1, 1)
        query_pos = self.query_embed.weight[None].repeat(n, 1, 1)
        last = len(self.layers)
        logits, masks, attn_mask = self.predict(x, mask_features, sizes[0] if last else None)
        predictions = [(logits, masks)]
        for i, layer in enumerate(self.layers):
            level = i % NUM_LEVELS
            x = layer(x, query_pos, memory[level], memory_pos[level], attn_mask)
            logits, masks, attn_mask = self.predict(x, mask_features,
                                                    sizes[(i + 1) % NUM_LEVELS] if i + 1 < last else None)
            predictions.append((logits, masks))
        return predictions
