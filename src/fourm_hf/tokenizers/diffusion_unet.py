"""The patched UNet of the released DiVAE tokenizers (fixture README section 12.2-12.4).

A guided-diffusion ("ADM") UNet wrapped in a patch layer: the noisy image ``x_t`` ``[B, C, H, W]``
is cut into ``P x P`` patches (channel ``(c*P + pr)*P + pc``, as a pixel-unshuffle), the code map
``[B, L, h, w]`` is nearest-upsampled to the patch grid and concatenated **after** the patch
channels, the UNet maps ``[B, P*P*C + L, H/P, W/P]`` to ``[B, P*P*C, H/P, W/P]``, and the result is
put back into pixels. With ``prediction_type="sample"`` the output is the clean image ``x_0``.

UNet layout (state-dict names are the reference's, so a released ``model.safetensors`` loads as is):

* ``time_embed.0`` / ``.2``: Linear -> SiLU -> Linear on the ``[cos | sin]`` timestep embedding.
* ``input_blocks.i``: a 3x3 conv, then per level ``num_res_blocks`` x (ResBlock [+ attention]) and a
  stride-2 ``Downsample`` between levels. Every output is pushed on the skip stack.
* ``middle_block``: ResBlock, attention, ResBlock.
* ``output_blocks.i``: per level (deepest first) ``num_res_blocks + 1`` x (ResBlock on
  ``[h, skip]`` [+ attention]) and a nearest x2 ``Upsample`` closing every level but the first.
* ``out``: GroupNorm -> SiLU -> 3x3 conv.

ResBlocks add the embedding per channel (no scale-shift); attention is single-head by default with
``q`` and ``k`` each scaled by ``C^-1/4``; every GroupNorm has 32 groups, eps 1e-5, computed in fp32.

Presets: ``unet_patched`` (the released RGB / depth / normal / edge tokenizers) and the fixture's
``unet_patched_fixture_c32_r1``; see :data:`UNET_PRESETS`.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

GROUP_NORM_GROUPS = 32
GROUP_NORM_EPS = 1e-5


@dataclass(frozen=True)
class UNetSize:
    """Architecture parameters of a patched UNet preset (the reference's ``unet_*`` constructors)."""

    patch_size: int = 4
    model_channels: int = 256
    num_res_blocks: int = 3
    channel_mult: tuple[int, ...] = (1, 2, 2, 2)
    attention_resolutions: tuple[int, ...] = (4, 8)
    num_heads: int = 1
    dropout: float = 0.0


# dec_type -> sizes. ``unet_patched`` is the released decoder; the fixture preset shrinks its width
# and depth (fixture JSON ``fixture_presets``).
UNET_PRESETS = {
    "unet_patched": UNetSize(),
    "unet_patched_fixture_c32_r1": UNetSize(model_channels=32, num_res_blocks=1),
}


def unet_named_sizes(dec_type: str) -> dict[str, int]:
    """What a decoder preset name says about the UNet: ``model_channels`` / ``num_res_blocks``.

    Released names (:data:`UNET_PRESETS`) give both; other ``unet_patched*`` names give what they
    spell as ``_c<channels>`` / ``_r<res blocks>`` parts (possibly nothing: the loader reads widths
    and depths from the weights). Anything else is a ``ValueError``.
    """
    if dec_type in UNET_PRESETS:
        preset = UNET_PRESETS[dec_type]
        return {"model_channels": preset.model_channels, "num_res_blocks": preset.num_res_blocks}
    if not isinstance(dec_type, str) or not dec_type.startswith("unet_patched"):
        raise ValueError(
            f"DiVAE decoder: unknown dec_type {dec_type!r}; expected 'unet_patched' (the released decoder) or a "
            f"name starting with 'unet_patched' (e.g. 'unet_patched_fixture_c32_r1'). Known: {sorted(UNET_PRESETS)}."
        )
    named = {}
    for key, letter in (("model_channels", "c"), ("num_res_blocks", "r")):
        match = re.search(rf"_{letter}(\d+)(?=_|$)", dec_type)
        if match:
            named[key] = int(match.group(1))
    return named


def timestep_embedding(timesteps: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """``[B]`` timesteps -> ``[B, dim]`` = ``[cos(t f_0..f_{h-1}) | sin(t f_0..f_{h-1})]``, ``h = dim/2``,
    ``f_i = exp(-ln(max_period) * i / h)`` (cosines first, as guided-diffusion)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=timesteps.device) / half)
    angles = timesteps.float()[:, None] * freqs[None]
    embedding = torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)
    if dim % 2:
        embedding = torch.cat([embedding, torch.zeros_like(embedding[:, :1])], dim=-1)
    return embedding


class GroupNorm32(nn.GroupNorm):
    """GroupNorm with 32 groups and eps 1e-5, computed in fp32 whatever the input dtype."""

    def __init__(self, channels: int):
        if channels % GROUP_NORM_GROUPS:
            raise ValueError(f"GroupNorm32: {channels} channels are not divisible by {GROUP_NORM_GROUPS} groups.")
        super().__init__(GROUP_NORM_GROUPS, channels, eps=GROUP_NORM_EPS)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        if hidden.dtype == torch.bfloat16 and hidden.device.type == "cpu":
            # the CPU kernel takes bf16 in and accumulates in float32 itself: no float32 copy in and out
            return F.group_norm(hidden, self.num_groups, self.weight.to(hidden.dtype), self.bias.to(hidden.dtype), self.eps)
        return F.group_norm(hidden.float(), self.num_groups, self.weight.float(), self.bias.float(), self.eps).type(hidden.dtype)


class ResBlock(nn.Module):
    """``skip(x) + conv(Dropout(SiLU(GN(h + Linear(SiLU(emb))))))`` with ``h = conv(SiLU(GN(x)))``.

    [B, C_in, H, W], emb [B, E] -> [B, C_out, H, W]. ``skip_connection`` is a 1x1 conv when
    ``C_in != C_out`` (identity otherwise).
    """

    def __init__(self, channels: int, emb_channels: int, out_channels: int, dropout: float = 0.0):
        super().__init__()
        self.in_layers = nn.Sequential(GroupNorm32(channels), nn.SiLU(), nn.Conv2d(channels, out_channels, 3, padding=1))
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_channels, out_channels))
        self.out_layers = nn.Sequential(
            GroupNorm32(out_channels), nn.SiLU(), nn.Dropout(dropout), nn.Conv2d(out_channels, out_channels, 3, padding=1)
        )
        self.skip_connection = nn.Identity() if channels == out_channels else nn.Conv2d(channels, out_channels, 1)

    def forward(self, hidden: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        inner = self.in_layers(hidden)
        inner = inner + self.emb_layers(emb).type(inner.dtype)[:, :, None, None]
        return self.skip_connection(hidden) + self.out_layers(inner)


class AttentionBlock(nn.Module):
    """``x + proj_out(attention(qkv(GN(x))))`` over the ``H*W`` positions. [B, C, H, W] -> same.

    ``qkv`` and ``proj_out`` are 1x1 Conv1d. Heads follow guided-diffusion's legacy order (per head
    a contiguous ``[q | k | v]`` chunk; with one head that is simply ``[q | k | v]``); ``q`` and ``k``
    are each scaled by ``head_dim^-1/4``; softmax in fp32.
    """

    def __init__(self, channels: int, num_heads: int = 1):
        super().__init__()
        if channels % num_heads:
            raise ValueError(f"AttentionBlock: {channels} channels are not divisible by num_heads {num_heads}.")
        self.num_heads = num_heads
        self.norm = GroupNorm32(channels)
        self.qkv = nn.Conv1d(channels, 3 * channels, 1)
        self.proj_out = nn.Conv1d(channels, channels, 1)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = hidden.shape
        flat = hidden.reshape(batch, channels, height * width)
        qkv = self.qkv(self.norm(flat))  # [B, 3C, T]
        head_dim = channels // self.num_heads
        qkv = qkv.reshape(batch * self.num_heads, 3 * head_dim, height * width)
        query, key, value = qkv.split(head_dim, dim=1)  # each [B*heads, head_dim, T]
        scale = 1.0 / math.sqrt(math.sqrt(head_dim))
        weights = torch.einsum("bct,bcs->bts", query * scale, key * scale)
        weights = torch.softmax(weights.float(), dim=-1).type(weights.dtype)
        attended = torch.einsum("bts,bcs->bct", weights, value).reshape(batch, channels, height * width)
        return (flat + self.proj_out(attended)).reshape(batch, channels, height, width)


class Downsample(nn.Module):
    """3x3 conv, stride 2, padding 1 (``op``). [B, C, H, W] -> [B, C, ceil(H/2), ceil(W/2)]."""

    def __init__(self, channels: int):
        super().__init__()
        self.op = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.op(hidden)


class Upsample(nn.Module):
    """Nearest x2, then a 3x3 conv (``conv``). [B, C, H, W] -> [B, C, 2H, 2W]."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(hidden, scale_factor=2, mode="nearest"))


class TimestepBlock(nn.Sequential):
    """A sequence of layers; ResBlocks also receive the timestep embedding."""

    def forward(self, hidden: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        for layer in self:
            hidden = layer(hidden, emb) if isinstance(layer, ResBlock) else layer(hidden)
        return hidden


class PatchedUNet(nn.Module):
    """Patched ADM UNet: ``(x_t [B, C, H, W], t [B], codes [B, L, h, w]) -> [B, C, H, W]``.

    Args:
        in_channels: image channels ``C`` (3 RGB / normals, 1 depth / edges); also the output channels.
        cond_channels: code width ``L`` (the quantizer's ``latent_dim``).
        size: the :class:`UNetSize` (patch size, widths, depths, attention resolutions, heads).
    """

    def __init__(self, in_channels: int, cond_channels: int, size: UNetSize = UNetSize()):
        super().__init__()
        self.in_channels, self.cond_channels, self.size = in_channels, cond_channels, size
        patch, width = size.patch_size, size.model_channels
        self.patch_channels = in_channels * patch * patch
        self.time_embed_dim = 4 * width
        self.time_embed = nn.Sequential(nn.Linear(width, self.time_embed_dim), nn.SiLU(), nn.Linear(self.time_embed_dim, self.time_embed_dim))
        self._build_input_blocks()
        self._build_middle_block()
        self._build_output_blocks()
        self.out = nn.Sequential(GroupNorm32(self._channels), nn.SiLU(), nn.Conv2d(self._channels, self.patch_channels, 3, padding=1))

    # ---- construction --------------------------------------------------------------------------
    def _res(self, channels: int, out_channels: int) -> ResBlock:
        return ResBlock(channels, self.time_embed_dim, out_channels, self.size.dropout)

    def _build_input_blocks(self) -> None:
        size = self.size
        channels = size.channel_mult[0] * size.model_channels
        self.input_blocks = nn.ModuleList([TimestepBlock(nn.Conv2d(self.patch_channels + self.cond_channels, channels, 3, padding=1))])
        self._skip_channels, downsampling = [channels], 1
        for level, mult in enumerate(size.channel_mult):
            for _ in range(size.num_res_blocks):
                layers = [self._res(channels, mult * size.model_channels)]
                channels = mult * size.model_channels
                if downsampling in size.attention_resolutions:
                    layers.append(AttentionBlock(channels, size.num_heads))
                self.input_blocks.append(TimestepBlock(*layers))
                self._skip_channels.append(channels)
            if level != len(size.channel_mult) - 1:
                self.input_blocks.append(TimestepBlock(Downsample(channels)))
                self._skip_channels.append(channels)
                downsampling *= 2
        self._channels, self._downsampling = channels, downsampling

    def _build_middle_block(self) -> None:
        channels = self._channels
        self.middle_block = TimestepBlock(
            self._res(channels, channels), AttentionBlock(channels, self.size.num_heads), self._res(channels, channels)
        )

    def _build_output_blocks(self) -> None:
        size, channels, downsampling = self.size, self._channels, self._downsampling
        skips = list(self._skip_channels)
        self.output_blocks = nn.ModuleList()
        for level, mult in reversed(list(enumerate(size.channel_mult))):
            for index in range(size.num_res_blocks + 1):
                layers = [self._res(channels + skips.pop(), mult * size.model_channels)]
                channels = mult * size.model_channels
                if downsampling in size.attention_resolutions:
                    layers.append(AttentionBlock(channels, size.num_heads))
                if level and index == size.num_res_blocks:
                    layers.append(Upsample(channels))
                    downsampling //= 2
                self.output_blocks.append(TimestepBlock(*layers))
        self._channels = channels

    # ---- forward -------------------------------------------------------------------------------
    def check_image_size(self, height: int, width: int) -> None:
        """``ValueError`` unless the patch grid can be halved at every level (H, W multiples of
        ``patch_size * 2^(levels-1)``; 32 for the released preset)."""
        multiple = self.size.patch_size * 2 ** (len(self.size.channel_mult) - 1)
        if height % multiple or width % multiple:
            raise ValueError(
                f"PatchedUNet: image size {height}x{width} must be a multiple of {multiple} (patch size "
                f"{self.size.patch_size} x {2 ** (len(self.size.channel_mult) - 1)} for the downsampling levels)."
            )

    def embed_timesteps(self, timesteps: torch.Tensor) -> torch.Tensor:
        """``[B]`` integer timesteps -> ``[B, 4*model_channels]`` (``time_embed`` of the sinusoid, which is
        computed in float32 and then given in the UNet's dtype)."""
        sinusoid = timestep_embedding(timesteps, self.size.model_channels)
        return self.time_embed(sinusoid.to(self.time_embed[0].weight.dtype))

    def forward(self, sample: torch.Tensor, timesteps: torch.Tensor, codes: torch.Tensor, intermediates: dict | None = None) -> torch.Tensor:
        """sample [B, C, H, W], timesteps [B] (or a scalar, shared), codes [B, L, h, w] -> [B, C, H, W].

        Runs in the UNet's dtype (bf16 after ``.to(torch.bfloat16)``; GroupNorm and softmax accumulate in
        float32) and layout (NHWC after ``.to(memory_format=torch.channels_last)``); returns that dtype.
        A scalar timestep (sampling: one t for the whole batch) is embedded once, [1, 4*model_channels],
        and broadcast over the batch, as the reference does; per-sample timesteps give [B, 4*model_channels].
        ``intermediates`` (optional) receives that ``time_embedding``.
        """
        if sample.dim() != 4 or sample.shape[1] != self.in_channels:
            raise ValueError(f"PatchedUNet: expected a sample of shape (B, {self.in_channels}, H, W), got {tuple(sample.shape)}.")
        if codes.dim() != 4 or codes.shape[1] != self.cond_channels or codes.shape[0] != sample.shape[0]:
            raise ValueError(
                f"PatchedUNet: expected codes of shape ({sample.shape[0]}, {self.cond_channels}, h, w), got {tuple(codes.shape)}."
            )
        batch, channels, height, width = sample.shape
        self.check_image_size(height, width)
        timesteps = torch.as_tensor(timesteps, device=sample.device)
        if timesteps.dim() == 0:
            timesteps = timesteps[None]
        elif timesteps.shape != (batch,):
            raise ValueError(f"PatchedUNet: expected timesteps of shape ({batch},) or a scalar, got {tuple(timesteps.shape)}.")
        emb = self.embed_timesteps(timesteps)
        if intermediates is not None:
            intermediates["time_embedding"] = emb.detach()
        patch = self.size.patch_size
        hidden = F.pixel_unshuffle(sample.to(emb.dtype), patch)  # channel (c*P + pr)*P + pc
        codes = F.interpolate(codes.to(hidden.dtype), size=hidden.shape[2:], mode="nearest")
        hidden = torch.cat([hidden, codes], dim=1)
        if self.input_blocks[0][0].weight.is_contiguous(memory_format=torch.channels_last):
            # after ``.to(memory_format=torch.channels_last)`` the convolutions run on NHWC activations
            hidden = hidden.contiguous(memory_format=torch.channels_last)
        skips = []
        for block in self.input_blocks:
            hidden = block(hidden, emb)
            skips.append(hidden)
        hidden = self.middle_block(hidden, emb)
        for block in self.output_blocks:
            hidden = block(torch.cat([hidden, skips.pop()], dim=1), emb)
        return F.pixel_shuffle(self.out(hidden), patch)


__all__ = [
    "UNET_PRESETS",
    "AttentionBlock",
    "Downsample",
    "GroupNorm32",
    "PatchedUNet",
    "ResBlock",
    "UNetSize",
    "Upsample",
    "timestep_embedding",
    "unet_named_sizes",
]
