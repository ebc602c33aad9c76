"""Quantizers of the released 4M tokenizers (fixture README sections 11.7 and 13.4).

* :class:`LucidQuantizer` - the EMA ("lucid") codebook with ``norm_codes`` (cosine similarity):
  the id is the argmax of normalised dot products, the quantised vector is the **raw** stored row.
  State-dict names ``_codebook.embed`` / ``_codebook.cluster_size`` / ``_codebook.initted``;
  the last two are EMA training state, loaded and kept but unused at inference.
* :class:`MemcodesQuantizer` - memcodes: H heads attend over their codes with keys ``codes @ Wk``
  and return the value row ``codes @ Wv`` of the best key; ids are head-major ``[B, H, h, w]``.

Our own tokenizers' FSQ quantizer lives with :class:`~fourm_hf.tokenizers.vqvae.FourMVQVAE`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class LucidCodebook(nn.Module):
    """Holds the EMA codebook buffers: ``embed`` [V, L], ``cluster_size`` [V], ``initted`` [1]."""

    def __init__(self, codebook_size: int, code_dim: int):
        super().__init__()
        self.register_buffer("embed", torch.randn(codebook_size, code_dim))
        self.register_buffer("cluster_size", torch.zeros(codebook_size))
        self.register_buffer("initted", torch.ones(1))


class LucidQuantizer(nn.Module):
    """Cosine-similarity codebook lookup over ``V`` codes of width ``L``.

    ``quantize(latents)`` maps ``[B, L, h, w]`` to ``(quantized [B, L, h, w], ids [B, h, w])``;
    ``lookup(ids)`` maps ``[B, h, w]`` ids back to the stored rows ``[B, L, h, w]``.
    """

    def __init__(self, codebook_size: int, code_dim: int):
        super().__init__()
        self.codebook_size, self.code_dim = codebook_size, code_dim
        self._codebook = LucidCodebook(codebook_size, code_dim)

    @property
    def codebook(self) -> torch.Tensor:
        """The stored code rows, ``[V, L]`` (not unit-norm)."""
        return self._codebook.embed

    def similarity(self, latents: torch.Tensor) -> torch.Tensor:
        """``[B, L, h, w]`` -> ``[B, h*w, V]`` cosine similarities (each side divided by max(norm, 1e-12))."""
        flat = latents.flatten(2).transpose(1, 2)  # [B, N, L]
        return F.normalize(flat, dim=-1) @ F.normalize(self.codebook, dim=-1).t()

    def quantize(self, latents: torch.Tensor, intermediates: dict | None = None) -> tuple[torch.Tensor, torch.LongTensor]:
        """latents [B, L, h, w] -> (quantized [B, L, h, w], ids [B, h, w] int64, raster order).

        ``intermediates`` (optional) receives ``similarity`` [B, h*w, V], ``ids`` and ``quantized``.
        """
        if latents.dim() != 4 or latents.shape[1] != self.code_dim:
            raise ValueError(f"LucidQuantizer: expected latents of shape (B, {self.code_dim}, h, w), got {tuple(latents.shape)}.")
        batch, _, height, width = latents.shape
        similarity = self.similarity(latents)
        ids = similarity.argmax(dim=-1).view(batch, height, width)
        quantized = self.lookup(ids)
        if intermediates is not None:
            intermediates.update(similarity=similarity.detach(), ids=ids, quantized=quantized.detach())
        return quantized, ids

    def lookup(self, ids: torch.LongTensor) -> torch.Tensor:
        """ids [B, h, w] -> stored codebook rows [B, L, h, w]."""
        return F.embedding(ids, self.codebook).permute(0, 3, 1, 2)


class MemcodesQuantizer(nn.Module):
    """Memcodes with ``num_heads`` heads over ``codebook_size`` codes of width ``d = latent_dim / num_heads``.

    Parameters (reference names): ``codes`` [H, V, d], ``to_k.weight`` / ``to_v.weight`` [H, d, d]
    (no bias; ``K_h = codes_h @ Wk_h``). ``quantize`` maps ``[B, H*d, h, w]`` latents to
    ``(quantized [B, H*d, h, w], ids [B, H, h, w])``: per head, the id is the argmax of
    ``(z_h * d^-1/2) . K_h[j]`` and the quantised chunk is ``V_h[id]``; no normalisation.
    """

    def __init__(self, codebook_size: int, latent_dim: int, num_heads: int):
        super().__init__()
        if latent_dim % num_heads != 0:
            raise ValueError(f"MemcodesQuantizer: latent_dim {latent_dim} is not divisible by num_codebooks {num_heads}.")
        self.codebook_size, self.latent_dim, self.num_heads = codebook_size, latent_dim, num_heads
        head_dim = latent_dim // num_heads
        self.codes = nn.Parameter(torch.randn(num_heads, codebook_size, head_dim))
        self.to_k = _HeadwiseLinear(num_heads, head_dim)
        self.to_v = _HeadwiseLinear(num_heads, head_dim)

    @property
    def head_dim(self) -> int:
        return self.latent_dim // self.num_heads

    def keys(self) -> torch.Tensor:
        """``[H, V, d]`` keys, ``codes_h @ Wk_h``."""
        return self.to_k(self.codes)

    def values(self) -> torch.Tensor:
        """``[H, V, d]`` values, ``codes_h @ Wv_h``."""
        return self.to_v(self.codes)

    def quantize(self, latents: torch.Tensor, intermediates: dict | None = None) -> tuple[torch.Tensor, torch.LongTensor]:
        """latents [B, H*d, h, w] -> (quantized [B, H*d, h, w], ids [B, H, h, w] int64).

        ``intermediates`` (optional) receives ``logits`` [B, H, h*w, V], ``keys``, ``values``
        [H, V, d], ``ids`` and ``quantized``.
        """
        if latents.dim() != 4 or latents.shape[1] != self.latent_dim:
            raise ValueError(f"MemcodesQuantizer: expected latents of shape (B, {self.latent_dim}, h, w), got {tuple(latents.shape)}.")
        batch, _, height, width = latents.shape
        heads = self.num_heads
        queries = latents.view(batch, heads, self.head_dim, height * width).transpose(2, 3)  # [B, H, N, d]
        queries = queries * self.head_dim**-0.5
        keys = self.keys()
        logits = torch.einsum("bhnd,hvd->bhnv", queries, keys)
        ids = logits.argmax(dim=-1).view(batch, heads, height, width)
        quantized = self.lookup(ids)
        if intermediates is not None:
            intermediates.update(
                logits=logits.detach(), keys=keys.detach(), values=self.values().detach(), ids=ids, quantized=quantized.detach()
            )
        return quantized, ids

    def lookup(self, ids: torch.LongTensor) -> torch.Tensor:
        """ids [B, H, h, w] -> the values concatenated over heads (head-major), [B, H*d, h, w]."""
        if ids.dim() != 4 or ids.shape[1] != self.num_heads:
            raise ValueError(f"MemcodesQuantizer: expected ids of shape (B, {self.num_heads}, h, w), got {tuple(ids.shape)}.")
        batch, heads, height, width = ids.shape
        values = self.values()  # [H, V, d]
        head_index = torch.arange(heads, device=ids.device).view(1, heads, 1, 1)
        chunks = values[head_index, ids]  # [B, H, h, w, d]
        return chunks.permute(0, 1, 4, 2, 3).reshape(batch, heads * self.head_dim, height, width)


class _HeadwiseLinear(nn.Module):
    """One bias-free ``d x d`` matrix per head: ``weight`` [H, d, d]; ``x [H, V, d] -> x_h @ W_h``."""

    def __init__(self, num_heads: int, head_dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(num_heads, head_dim, head_dim) * head_dim**-0.5)

    def forward(self, per_head: torch.Tensor) -> torch.Tensor:
        return torch.einsum("hve,hed->hvd", per_head, self.weight)


__all__ = ["LucidCodebook", "LucidQuantizer", "MemcodesQuantizer"]
