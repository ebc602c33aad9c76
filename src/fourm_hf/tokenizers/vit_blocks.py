"""ViT encoder / decoder of the released 4M tokenizers (VQ-VAE and DiVAE encoders, VQ-VAE decoders).

The layout follows the reference's state-dict names so a released ``model.safetensors`` loads as
is (fixture README sections 11 and 17):

* ``proj``: patch projection, a ``patch_size`` x ``patch_size`` stride-``patch_size`` convolution
  (images) or a 1x1 convolution (feature maps: ``patch_projection=False``), both with bias.
* ``pos_emb``: a fixed 2D sin-cos table stored as a non-trainable parameter of shape
  ``[1, D, G, G]``, ``G = image_size // patch_size``, **bicubically resized to the actual token
  grid at every call** (448-px tables serve 224-px inputs through a 28 -> 14 resize).
* ``blocks``: pre-LN transformer blocks (LayerNorm eps 1e-6, qkv bias, exact GELU), no final norm.
* ``norm_mlp`` + ``post_mlp``: the tanh post-MLP, ``t + fc2(tanh(fc1(LN(t))))``, computed in fp32;
  in the decoder it runs after the blocks.
* decoder ``out_proj``: Linear to ``C_out * P * P`` values per token, rearranged into patches, and
  the optional SAM ``out_conv`` (two ConvNeXt blocks).

Every ``forward`` takes an optional ``intermediates`` dict that it fills with the tensors the
fixtures store (``patch_tokens``, ``pos_emb_resized``, ``block{i}``, ``post_mlp``, ``output``, ...),
so parity checks and debugging need no hooks.
"""

from __future__ import annotations

import re

import torch
import torch.nn.functional as F
from torch import nn

LAYER_NORM_EPS = 1e-6

# Released ViT presets (``enc_type`` / ``dec_type`` = "<preset>_enc" / "<preset>_dec"):
# name -> (width, depth, heads). All use qkv bias, mlp ratio 4 and LayerNorm eps 1e-6.
VIT_PRESETS = {
    "vit_s": (512, 8, 8),
    "vit_b": (768, 12, 12),
    "vit_l": (1024, 24, 16),
}


def vit_preset_size(preset_name: str) -> tuple[int | None, int | None, int | None]:
    """``(width, depth, heads)`` a ViT preset name stands for; ``None`` where the name does not say.

    Released names (``vit_b_enc``, ``vit_l_dec``, ...) give all three. Other names may spell their
    sizes as ``_d<width>``, ``_l<depth>``, ``_h<heads>`` parts (the fixtures'
    ``vit_fixture_d64_l2_h4_enc``); widths and depths are read from the weights anyway, so only
    the head count matters.
    """
    if not isinstance(preset_name, str) or not preset_name.startswith("vit"):
        raise ValueError(f"ViT preset: expected a name starting with 'vit' (e.g. 'vit_b_enc'), got {preset_name!r}.")
    base = re.sub(r"_(enc|dec)$", "", preset_name)
    if base in VIT_PRESETS:
        return VIT_PRESETS[base]

    def part(letter: str) -> int | None:
        match = re.search(rf"_{letter}(\d+)(?=_|$)", base)
        return int(match.group(1)) if match else None

    return part("d"), part("l"), part("h")


def sincos_position_table(dim: int, grid_size: int) -> torch.Tensor:
    """Fixed 2D sin-cos table, ``[1, dim, grid_size, grid_size]``.

    At (row r, col c) the ``dim`` channels are ``[sin(r w), cos(r w), sin(c w), cos(c w)]`` with
    ``w_i = 10000^(-i / (dim/4))``, ``i = 0 .. dim/4 - 1``.
    """
    if dim % 4 != 0:
        raise ValueError(f"sincos_position_table: dim must be a multiple of 4, got {dim}.")
    quarter = dim // 4
    omega = 1.0 / (10000.0 ** (torch.arange(quarter, dtype=torch.float32) / quarter))
    coords = torch.arange(grid_size, dtype=torch.float32)
    angles = coords[:, None] * omega[None, :]  # [G, dim/4]
    rows = torch.cat([angles.sin(), angles.cos()], dim=1)  # [G, dim/2]
    row_part = rows[:, None, :].expand(grid_size, grid_size, dim // 2)
    col_part = rows[None, :, :].expand(grid_size, grid_size, dim // 2)
    table = torch.cat([row_part, col_part], dim=2)  # [G, G, dim]
    return table.permute(2, 0, 1).unsqueeze(0).contiguous()


def resize_position_table(table: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """``[1, D, G, G]`` -> ``[h*w, D]`` for a token grid ``(h, w)``: bicubic, align_corners False
    (always called, also when the size already matches, as the reference does)."""
    resized = F.interpolate(table, size=grid, mode="bicubic", align_corners=False)
    return resized.flatten(2).transpose(1, 2)[0]


class ViTAttention(nn.Module):
    """Multi-head self-attention with a fused ``qkv`` projection (bias) and ``proj``. [B, N, D] -> [B, N, D]."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        if dim % num_heads != 0:
            raise ValueError(f"ViTAttention: width {dim} is not divisible by num_heads {num_heads}.")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=True)
        self.proj = nn.Linear(dim, dim, bias=True)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        batch, length, dim = tokens.shape
        qkv = self.qkv(tokens).view(batch, length, 3, self.num_heads, dim // self.num_heads)
        query, key, value = qkv.permute(2, 0, 3, 1, 4)  # each [B, heads, N, head_dim]
        attended = F.scaled_dot_product_attention(query, key, value)
        return self.proj(attended.transpose(1, 2).reshape(batch, length, dim))


class ViTMLP(nn.Module):
    """``fc1`` -> activation (exact GELU; tanh in the post-MLP) -> ``fc2``, both with bias. [B, N, D] -> [B, N, D]."""

    def __init__(self, dim: int, hidden_dim: int, activation=F.gelu):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, dim)
        self.activation = activation

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.activation(self.fc1(tokens)))


class ViTBlock(nn.Module):
    """Pre-LN transformer block: ``t + attn(LN(t))``, then ``t + mlp(LN(t))``."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: int = 4):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.attn = ViTAttention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.mlp = ViTMLP(dim, dim * mlp_ratio)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        tokens = tokens + self.attn(self.norm1(tokens))
        return tokens + self.mlp(self.norm2(tokens))


class _ViTTrunk(nn.Module):
    """Position table + blocks + optional post-MLP, shared by the encoder and the decoder."""

    def __init__(self, dim: int, depth: int, num_heads: int, table_grid: int, post_mlp: bool, mlp_ratio: int):
        super().__init__()
        self.dim, self.num_heads, self.table_grid = dim, num_heads, table_grid
        self.pos_emb = nn.Parameter(sincos_position_table(dim, table_grid), requires_grad=False)
        self.blocks = nn.ModuleList([ViTBlock(dim, num_heads, mlp_ratio) for _ in range(depth)])
        self.use_post_mlp = post_mlp
        if post_mlp:
            self.norm_mlp = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
            self.post_mlp = ViTMLP(dim, dim * mlp_ratio, activation=torch.tanh)  # the residual and norm_mlp live here

    def run_trunk(self, tokens: torch.Tensor, grid: tuple[int, int], intermediates: dict | None) -> torch.Tensor:
        """tokens [B, h*w, D] (raster order) -> [B, h*w, D]: + resized positions, blocks, post-MLP."""
        positions = resize_position_table(self.pos_emb, grid)
        tokens = tokens + positions
        _record(intermediates, "pos_emb_resized", positions)
        for index, block in enumerate(self.blocks):
            tokens = block(tokens)
            _record(intermediates, f"block{index}", tokens)
        if self.use_post_mlp:
            dtype = tokens.dtype
            tokens = tokens.float()
            tokens = (tokens + self.post_mlp(self.norm_mlp(tokens))).to(dtype)
            _record(intermediates, "post_mlp", tokens)
        return tokens


class ViTEncoder(_ViTTrunk):
    """Image or feature map ``[B, C, H, W]`` -> token map ``[B, D, H/P, W/P]`` (``P = 1`` without patch projection).

    Args:
        in_channels: channels ``C`` of the input (3 RGB, 1 depth / SAM masks, the class-embedding
            width for semseg, the feature width for feature maps).
        dim, depth, num_heads: ViT width, number of blocks, attention heads.
        patch_size: side of the square patches (also sizes the position table).
        image_size: the configured image size; the position table has ``image_size // patch_size``
            cells per side and is resized to the actual grid at every call.
        patch_projection: ``True`` = patch convolution; ``False`` = 1x1 convolution, one token per cell.
        post_mlp: whether the tanh post-MLP follows the blocks.
    """

    def __init__(
        self,
        in_channels: int,
        dim: int,
        depth: int,
        num_heads: int,
        patch_size: int = 16,
        image_size: int = 224,
        patch_projection: bool = True,
        post_mlp: bool = True,
        mlp_ratio: int = 4,
    ):
        super().__init__(dim, depth, num_heads, image_size // patch_size, post_mlp, mlp_ratio)
        self.in_channels = in_channels
        self.patch_size = patch_size if patch_projection else 1
        kernel = self.patch_size
        self.proj = nn.Conv2d(in_channels, dim, kernel_size=kernel, stride=kernel)

    def forward(self, images: torch.Tensor, intermediates: dict | None = None) -> torch.Tensor:
        """images [B, C, H, W] (H, W multiples of the patch size) -> [B, D, H/P, W/P].

        ``intermediates`` (optional) receives ``patch_tokens`` [B, N, D], ``pos_emb_resized`` [N, D],
        ``block{i}`` [B, N, D], ``post_mlp`` [B, N, D] and ``output`` [B, D, h, w].
        """
        if images.dim() != 4 or images.shape[1] != self.in_channels:
            raise ValueError(f"ViTEncoder: expected input of shape (B, {self.in_channels}, H, W), got {tuple(images.shape)}.")
        height, width = images.shape[2:]
        if height % self.patch_size or width % self.patch_size:
            raise ValueError(f"ViTEncoder: input size {height}x{width} is not a multiple of the patch size {self.patch_size}.")
        patches = self.proj(images)  # [B, D, h, w]
        grid = tuple(patches.shape[2:])
        tokens = patches.flatten(2).transpose(1, 2)
        _record(intermediates, "patch_tokens", tokens)
        tokens = self.run_trunk(tokens, grid, intermediates)
        output = tokens.transpose(1, 2).reshape(tokens.shape[0], self.dim, *grid)
        _record(intermediates, "output", output)
        return output


class ConvNeXtBlock(nn.Module):
    """ConvNeXt block: depthwise 7x7 conv -> channels-last LayerNorm (eps 1e-6) -> ``pwconv1`` (C -> 4C)
    -> GELU -> ``pwconv2`` -> x ``gamma`` -> + input. [B, C, H, W] -> [B, C, H, W]."""

    def __init__(self, channels: int):
        super().__init__()
        self.dwconv = nn.Conv2d(channels, channels, kernel_size=7, padding=3, groups=channels)
        self.norm = nn.LayerNorm(channels, eps=LAYER_NORM_EPS)
        self.pwconv1 = nn.Linear(channels, 4 * channels)
        self.pwconv2 = nn.Linear(4 * channels, channels)
        self.gamma = nn.Parameter(torch.full((channels,), 1e-6))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        hidden = self.dwconv(images).permute(0, 2, 3, 1)
        hidden = self.pwconv2(F.gelu(self.pwconv1(self.norm(hidden)))) * self.gamma
        return images + hidden.permute(0, 3, 1, 2)


class ViTDecoder(_ViTTrunk):
    """Token map ``[B, D, h, w]`` -> output ``[B, C_out, h*P, w*P]`` (``P = 1`` without patch projection).

    The decoder input is already ``D`` wide (the model's ``post_quant_proj`` makes it so). After the
    trunk, ``out_proj`` gives ``C_out * P * P`` values per token; value ``(c*P + pr)*P + pc`` is
    channel ``c``, pixel ``(pr, pc)`` of that token's patch. ``num_out_conv_blocks`` ConvNeXt blocks
    (``out_conv``, the SAM-instance tokenizer: two) refine the output.
    """

    def __init__(
        self,
        out_channels: int,
        dim: int,
        depth: int,
        num_heads: int,
        patch_size: int = 16,
        image_size: int = 224,
        patch_projection: bool = True,
        post_mlp: bool = True,
        num_out_conv_blocks: int = 0,
        mlp_ratio: int = 4,
    ):
        super().__init__(dim, depth, num_heads, image_size // patch_size, post_mlp, mlp_ratio)
        self.out_channels = out_channels
        self.patch_size = patch_size if patch_projection else 1
        self.out_proj = nn.Linear(dim, out_channels * self.patch_size**2)
        if num_out_conv_blocks:
            self.out_conv = nn.Sequential(*[ConvNeXtBlock(out_channels) for _ in range(num_out_conv_blocks)])
        else:
            self.out_conv = None

    def forward(self, token_map: torch.Tensor, intermediates: dict | None = None) -> torch.Tensor:
        """token_map [B, D, h, w] -> [B, C_out, h*P, w*P].

        ``intermediates`` (optional) receives ``pos_emb_resized``, ``block{i}``, ``post_mlp`` (the
        tokens before ``out_proj``) and, with ``out_conv``, ``before_out_conv``.
        """
        batch, dim, height, width = token_map.shape
        if dim != self.dim:
            raise ValueError(f"ViTDecoder: expected a token map of width {self.dim}, got shape {tuple(token_map.shape)}.")
        tokens = self.run_trunk(token_map.flatten(2).transpose(1, 2), (height, width), intermediates)
        patch, channels = self.patch_size, self.out_channels
        values = self.out_proj(tokens).view(batch, height, width, channels, patch, patch)
        images = values.permute(0, 3, 1, 4, 2, 5).reshape(batch, channels, height * patch, width * patch)
        if self.out_conv is not None:
            _record(intermediates, "before_out_conv", images)
            images = self.out_conv(images)
        return images


def _record(intermediates: dict | None, name: str, tensor: torch.Tensor) -> None:
    if intermediates is not None:
        intermediates[name] = tensor.detach()


__all__ = [
    "VIT_PRESETS",
    "ConvNeXtBlock",
    "ViTAttention",
    "ViTBlock",
    "ViTDecoder",
    "ViTEncoder",
    "ViTMLP",
    "resize_position_table",
    "sincos_position_table",
    "vit_preset_size",
]
