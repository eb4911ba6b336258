"""Network parts shared by domains (domains never copy code from each other).

One file per concept:

* :mod:`.embeddings` — time embedding, the condition embedding of every kind with its null
  (:class:`ConditionEmbedding`), and the two added together (:class:`Conditioning`);
* :mod:`.adaln` — adaLN-Zero modulation and gating (Peebles & Xie 2023) and the final adaLN
  layer of a transformer denoiser;
* :mod:`.attention` — self-attention, and cross-attention of a sample's tokens over a
  condition's sequence (text) with its padding mask, through PyTorch's scaled-dot-product
  attention;
* :mod:`.mlp` — the transformer's feed-forward layer (timm's parameter names);
* :mod:`.transformer` — DiT's adaLN-Zero block (optionally cross-attending, as PixArt-alpha)
  and Stable Diffusion's self- / cross-attention / feed-forward block;
* :mod:`.patches` — patchify / unpatchify of an N-dimensional grid (einops) with N-d sine-cosine
  position embeddings;
* :mod:`.sequence` — a sequence condition (token ids or embeddings) -> the context the network
  cross-attends to, encoded once per prompt (:class:`SequenceConditioning`);
* :mod:`.layout` — position queries cross-attending to a prompt: what belongs where, per
  position of a grid (:class:`Layout`);
* :mod:`.signal_attention` — cross-attention from a 1D signal to a prompt at a pooled rate
  (:class:`PooledCrossAttention`);
* :mod:`.rope` — rotary position embeddings over an N-d token grid (:class:`Rotary`);
* :mod:`.norm` — the GroupNorm group-count helper;
* :mod:`.classifier` — a small classifier of noisy samples of any domain (classifier
  guidance's default network).
"""

from omnidiff.nn.classifier import NoisyClassifierNet
from omnidiff.nn.adaln import FinalLayer, adaln_zero, gate, modulate
from omnidiff.nn.attention import CrossAttention, SelfAttention, key_padding_mask
from omnidiff.nn.embeddings import (
                                    ClassEmbedding,
                                    ConditionEmbedding,
                                    Conditioning,
                                    TimeEmbedding,
                                    null_where,
                                    timestep_embedding,
)
from omnidiff.nn.layout import Layout
from omnidiff.nn.mlp import Mlp
from omnidiff.nn.norm import group_count, group_norm
from omnidiff.nn.patches import (
                                    PatchEmbed,
                                    SeamConv,
                                    patchify,
                                    sincos_1d,
                                    sincos_embedding,
                                    token_grid,
                                    unpatchify,
)
from omnidiff.nn.rope import Rotary, apply_rotary, rotary_tables
from omnidiff.nn.signal_attention import PooledCrossAttention
from omnidiff.nn.sequence import (
    SequenceConditioning,
    SequenceEncoder,
    WordBag,
    pool,
    sequence_field,
)
from omnidiff.nn.transformer import CrossAttentionBlock, TransformerBlock

__all__ = ["NoisyClassifierNet", "Mlp", "WordBag", "PooledCrossAttention", "timestep_embedding", "TimeEmbedding", "ClassEmbedding", "ConditionEmbedding",
           "Conditioning", "null_where", "modulate", "gate", "adaln_zero", "FinalLayer",
           "SelfAttention", "TransformerBlock", "patchify", "unpatchify", "sincos_1d",
           "sincos_embedding", "PatchEmbed", "SeamConv", "token_grid", "group_count", "group_norm",
           "Rotary", "apply_rotary", "rotary_tables", "CrossAttention", "CrossAttentionBlock",
           "key_padding_mask", "Layout", "SequenceEncoder", "SequenceConditioning",
           "sequence_field",
           "pool"]
