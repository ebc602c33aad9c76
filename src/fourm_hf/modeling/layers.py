"""Transformer building blocks of 4M: bias-free LayerNorm, SwiGLU MLP, attention, blocks.

Shapes: B batch, L / S query / key lengths, D hidden size, H heads, d head dim (D = H * d).
Attention masks are additive float biases of shape (B, 1, L, S): 0 where a query may attend to a
key, the dtype's most negative finite value where it may not. A query row that may attend to
nothing (padding) then gets a uniform softmax instead of NaN.

Every attention module returns ``(output, weights)``: ``weights`` (B, H, L, S) are the softmax
probabilities when asked for (``output_attentions``), else None. SDPA never materialises them, so a
call that asks for them computes that layer the eager way, as transformers' models fall back.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers.modeling_layers import GradientCheckpointingLayer

from ..configuration_fourm import FourMConfig

ATTENTION_IMPLEMENTATIONS = ("sdpa", "eager")


def layer_norm(config: FourMConfig) -> nn.LayerNorm:
    """LayerNorm with a learned scale and no bias, as in the 4M-7 ``*_nobias`` models."""
    return nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps, bias=False)


def mask_to_bias(allowed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(B, L, S) bool, True = may attend  ->  (B, 1, L, S) additive bias in ``dtype``."""
    bias = torch.zeros(allowed.shape, dtype=dtype, device=allowed.device)
    bias = bias.masked_fill(~allowed, torch.finfo(dtype).min)
    return bias.unsqueeze(1)


def attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    bias: torch.Tensor | None,
    implementation: str,
    output_attentions: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Scaled dot-product attention. q (B,H,L,d), k/v (B,H,S,d), bias (B,1,L,S) -> (B,H,L,d), weights.

    ``weights`` (B, H, L, S) only with ``output_attentions`` (computed eagerly whatever the
    implementation, since SDPA does not return them), else None.
    """
    if implementation not in ATTENTION_IMPLEMENTATIONS:
        raise ValueError(f"attn_implementation must be one of {ATTENTION_IMPLEMENTATIONS}, got {implementation!r}.")
    if implementation == "sdpa" and not output_attentions:
        return F.scaled_dot_product_attention(query, key, value, attn_mask=bias), None
    scores = (query @ key.transpose(-2, -1)) * query.shape[-1] ** -0.5
    if bias is not None:
        scores = scores + bias
    weights = scores.softmax(dim=-1)
    return weights @ value, (weights if output_attentions else None)


def split_heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    """(B, L, H*d) -> (B, H, L, d)."""
    batch, length, width = x.shape
    return x.view(batch, length, num_heads, width // num_heads).transpose(1, 2)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """(B, H, L, d) -> (B, L, H*d)."""
    batch, heads, length, head_dim = x.shape
    return x.transpose(1, 2).reshape(batch, length, heads * head_dim)


class SelfAttention(nn.Module):
    """Multi-head self-attention with a fused [q | k | v] projection and no biases."""

    def __init__(self, config: FourMConfig):
        super().__init__()
        self.config = config
        self.num_heads = config.num_attention_heads
        self.qkv = nn.Linear(config.hidden_size, 3 * config.hidden_size, bias=False)
        self.proj = nn.Linear(config.hidden_size, config.hidden_size, bias=False)

    def forward(
        self,
        hidden_states: torch.Tensor,
        bias: torch.Tensor | None,
        kv_cache: "KVCache | None" = None,
        output_attentions: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """hidden_states (B, L, D), bias (B, 1, L, S) -> (B, L, D), weights (B, H, L, S) or None.

        With ``kv_cache`` the new keys/values are appended to the cached ones first (S = cached + L).
        """
        query, key, value = self.qkv(hidden_states).chunk(3, dim=-1)
        query, key, value = (split_heads(t, self.num_heads) for t in (query, key, value))
        if kv_cache is not None:
            key, value = kv_cache.append(key, value)
        out, weights = attention(query, key, value, bias, self.config._attn_implementation, output_attentions)
        return self.proj(merge_heads(out)), weights


class CrossAttention(nn.Module):
    """Decoder-to-encoder attention: q from the decoder stream, [k | v] from the encoder context."""

    def __init__(self, config: FourMConfig):
        super().__init__()
        self.config = config
        self.num_heads = config.num_attention_heads
        self.q = nn.Linear(config.hidden_size, config.hidden_size, bias=False)
        self.kv = nn.Linear(config.hidden_size, 2 * config.hidden_size, bias=False)
        self.proj = nn.Linear(config.hidden_size, config.hidden_size, bias=False)

    def context_key_value(self, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """context (B, S, D) -> keys, values (B, H, S, d). Cacheable: the context is fixed per sample."""
        key, value = self.kv(context).chunk(2, dim=-1)
        return split_heads(key, self.num_heads), split_heads(value, self.num_heads)

    def forward(
        self,
        hidden_states: torch.Tensor,
        key_value: tuple[torch.Tensor, torch.Tensor],
        bias: torch.Tensor | None,
        output_attentions: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """hidden_states (B, L, D), key_value from :meth:`context_key_value`, bias (B, 1, L|1, S)
        -> (B, L, D), weights (B, H, L, S) or None."""
        query = split_heads(self.q(hidden_states), self.num_heads)
        out, weights = attention(query, *key_value, bias, self.config._attn_implementation, output_attentions)
        return self.proj(merge_heads(out)), weights


class SwiGLUMLP(nn.Module):
    """``fc2(silu(fc1(x)) * fc3(x))`` with hidden width ``int(2 * mlp_ratio * D / 3)``, no biases."""

    def __init__(self, config: FourMConfig):
        super().__init__()
        self.fc1 = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.fc3 = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.fc2 = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.silu(self.fc1(x)) * self.fc3(x))


class EncoderBlock(GradientCheckpointingLayer):
    """Pre-norm block: ``h += attn(LN1 h)``; ``h += mlp(LN2 h)``."""

    def __init__(self, config: FourMConfig):
        super().__init__()
        self.norm1 = layer_norm(config)
        self.attn = SelfAttention(config)
        self.norm2 = layer_norm(config)
        self.mlp = SwiGLUMLP(config)

    def forward(
        self, hidden_states: torch.Tensor, bias: torch.Tensor | None, output_attentions: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """hidden_states (B, L, D), bias (B, 1, L, L) -> (B, L, D), self-attention weights or None."""
        attended, weights = self.attn(self.norm1(hidden_states), bias, output_attentions=output_attentions)
        hidden_states = hidden_states + attended
        return hidden_states + self.mlp(self.norm2(hidden_states)), weights


def run_encoder_blocks(
    blocks: nn.ModuleList,
    hidden_states: torch.Tensor,
    bias: torch.Tensor | None,
    output_hidden_states: bool = False,
    output_attentions: bool = False,
) -> tuple[torch.Tensor, tuple[torch.Tensor, ...] | None, tuple[torch.Tensor, ...] | None]:
    """hidden_states (B, L, D) through each :class:`EncoderBlock` in order.

    Returns the last block's states (B, L, D, before the final norm), the embeddings and every
    block's output when ``output_hidden_states`` (else None), and each block's attention weights
    (B, H, L, L) when ``output_attentions`` (else None).
    """
    all_states = (hidden_states,) if output_hidden_states else None
    all_attentions = () if output_attentions else None
    for block in blocks:
        hidden_states, weights = block(hidden_states, bias, output_attentions)
        if output_hidden_states:
            all_states += (hidden_states,)
        if output_attentions:
            all_attentions += (weights,)
    return hidden_states, all_states, all_attentions


class DecoderBlock(GradientCheckpointingLayer):
    """Pre-norm block: self-attention, cross-attention to the encoder context, MLP."""

    def __init__(self, config: FourMConfig):
        super().__init__()
        self.norm1 = layer_norm(config)
        self.self_attn = SelfAttention(config)
        self.query_norm = layer_norm(config)
        self.context_norm = layer_norm(config)
        self.cross_attn = CrossAttention(config)
        self.norm2 = layer_norm(config)
        self.mlp = SwiGLUMLP(config)

    def context_key_value(self, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Cross-attention keys/values of this block, (B, H, S, d) each."""
        return self.cross_attn.context_key_value(self.context_norm(context))

    def forward(
        self,
        hidden_states: torch.Tensor,
        self_bias: torch.Tensor | None,
        cross_bias: torch.Tensor | None,
        context: torch.Tensor | None = None,
        context_key_value: tuple[torch.Tensor, torch.Tensor] | None = None,
        kv_cache: "KVCache | None" = None,
        output_attentions: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """hidden_states (B, L, D); context (B, S, D) or its precomputed ``context_key_value``
        -> (B, L, D), self-attention weights, cross-attention weights (None unless ``output_attentions``)."""
        if context_key_value is None:
            context_key_value = self.context_key_value(context)
        attended, self_weights = self.self_attn(self.norm1(hidden_states), self_bias, kv_cache, output_attentions)
        hidden_states = hidden_states + attended
        attended, cross_weights = self.cross_attn(
            self.query_norm(hidden_states), context_key_value, cross_bias, output_attentions
        )
        hidden_states = hidden_states + attended
        return hidden_states + self.mlp(self.norm2(hidden_states)), self_weights, cross_weights


class KVCache:
    """Self-attention keys/values of one decoder block, grown one chunk at a time.

    Used by autoregressive decoding: every step appends the new token's k/v (B, H, 1, d) instead of
    recomputing the whole prefix. With ``capacity`` (the most keys it will hold) the first append
    allocates (B, H, capacity, d) buffers in the keys' dtype and every append writes into them in place
    (no copy of the cache per step); without it each append concatenates (the cache grows by a copy).
    """

    def __init__(self, capacity: int | None = None):
        if capacity is not None and (isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1):
            raise ValueError(f"KVCache capacity must be an int >= 1 or None, got {capacity!r}.")
        self.capacity = capacity
        self.key: torch.Tensor | None = None
        self.value: torch.Tensor | None = None
        self.length = 0

    def append(self, key: torch.Tensor, value: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """key/value (B, H, L, d) -> all keys/values so far (B, H, S + L, d) (views of the buffers with ``capacity``)."""
        new_length = self.length + key.shape[2]
        if self.capacity is None:
            if self.key is None:
                self.key, self.value = key, value
            else:
                self.key = torch.cat([self.key, key], dim=2)
                self.value = torch.cat([self.value, value], dim=2)
            self.length = new_length
            return self.key, self.value
        if new_length > self.capacity:
            raise ValueError(f"KVCache: {new_length} keys exceed its capacity {self.capacity}.")
        if self.key is None:
            shape = (*key.shape[:2], self.capacity, key.shape[3])
            self.key = key.new_empty(shape)
            self.value = value.new_empty(shape)
        self.key[:, :, self.length:new_length] = key
        self.value[:, :, self.length:new_length] = value
        self.length = new_length
        return self.key[:, :, :new_length], self.value[:, :, :new_length]

    def __len__(self) -> int:
        return self.length
