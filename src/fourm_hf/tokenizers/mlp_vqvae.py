"""The released 4M bottleneck-MLP tokenizers: BottleneckMLP -> memcodes -> BottleneckMLP.

They tokenize one vector per sample (fixture README section 13): a global DINOv2 / ImageBind
embedding (``DINOv2-B14-global_8k_16_224``: 768 channels, 16 codebooks) or an SMPL body pose
(``human-poses_1k_8``: 23 x 3 x 3 rotation matrices flattened to 207 channels, 8 codebooks),
fed as a 1x1 "image" ``[B, C, 1, 1]``. The ``H`` ids of one vector are the tokens of its 4M
modality, in head order. A plain ``[B, C]`` batch is accepted too and decoded back as ``[B, C]``.

The MLP preset name ``BottleneckMLP/B_<blocks>-Wi_<width>`` (e.g. ``B_6-Wi_1024``) gives the
number of blocks and the width; the expansion is 4. Loading reads both from the weights and checks
them against the name.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
from torch import nn
from transformers import initialization as init
from transformers.utils import ModelOutput

from .quantizers import MemcodesQuantizer
from .released_layout import (
    ReleasedTokenizerPreTrainedModel,
    ReleasedTokenizerConfig,
    check_released_keys,
    count_blocks,
    require_weight,
)

MLP_LAYER_NORM_EPS = 1e-5  # torch's default; the ViT tokenizers use 1e-6
MLP_PRESET_PREFIX = "BottleneckMLP/"

RELEASED_MLP_VQVAE_KEYS = frozenset(
    {
        "codebook_size", "dec_type", "enc_type", "image_size", "image_size_dec", "image_size_enc", "latent_dim",
        "n_channels", "n_labels", "norm_codes", "norm_latents", "num_codebooks", "out_conv", "patch_proj",
        "patch_size", "patch_size_dec", "post_mlp", "quant_type", "sync_codebook", "undo_std",
    }
)


def mlp_preset_size(preset_name: str) -> tuple[int, int]:
    """``(blocks, width)`` of a ``BottleneckMLP/B_<blocks>-Wi_<width>`` preset name."""
    match = re.fullmatch(r"BottleneckMLP/B_(\d+)-Wi_(\d+)", preset_name or "")
    if not match:
        raise ValueError(f"BottleneckMLP preset: expected a name like 'BottleneckMLP/B_6-Wi_1024', got {preset_name!r}.")
    return int(match.group(1)), int(match.group(2))


class BottleneckMLP(nn.Module):
    """Per-cell MLP ``[B, C_in, h, w] -> [B, C_out, h, w]``: ``linear_in`` (C_in -> W), ``depth``
    residual blocks ``x + block(LN(x))`` with ``block`` = Linear(W, 4W) -> GELU -> Linear(4W, W)
    (norms in ``layernorms``, eps 1e-5), then ``linear_out`` (W -> C_out)."""

    def __init__(self, in_channels: int, width: int, depth: int, out_channels: int, expansion: int = 4):
        super().__init__()
        self.linear_in = nn.Linear(in_channels, width)
        self.layernorms = nn.ModuleList([nn.LayerNorm(width, eps=MLP_LAYER_NORM_EPS) for _ in range(depth)])
        self.blocks = nn.ModuleList([_MLPBlock(width, width * expansion) for _ in range(depth)])
        self.linear_out = nn.Linear(width, out_channels)

    def forward(self, grid: torch.Tensor) -> torch.Tensor:
        hidden = self.linear_in(grid.permute(0, 2, 3, 1))
        for norm, block in zip(self.layernorms, self.blocks):
            hidden = hidden + block(norm(hidden))
        return self.linear_out(hidden).permute(0, 3, 1, 2)


class _MLPBlock(nn.Module):
    """``block.0`` Linear -> ``block.1`` GELU -> ``block.2`` Linear (the reference's Sequential names)."""

    def __init__(self, width: int, hidden: int):
        super().__init__()
        self.block = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, width))

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.block(hidden)


class FourMMLPVQVAEConfig(ReleasedTokenizerConfig):
    r"""Configuration of :class:`FourMMLPVQVAE`: the released keys plus the resolved MLP sizes.

    Args:
        encoder_width / encoder_depth / decoder_width / decoder_depth: ``None`` = from the
            ``enc_type`` / ``dec_type`` preset name.
        mlp_expansion: hidden width / width of the MLP blocks (4).
        out_conv, patch_proj, post_mlp, image_size*, patch_size*, n_labels: released keys with no
            effect on this family (kept so the released config round-trips).
    """

    released_keys = RELEASED_MLP_VQVAE_KEYS
    model_type = "fourm_mlp_vqvae"

    enc_type: str = "BottleneckMLP/B_6-Wi_1024"
    dec_type: str = "BottleneckMLP/B_6-Wi_1024"
    quant_type: str = "memcodes"
    n_channels: int = 768
    latent_dim: int = 1024
    codebook_size: int = 8192
    num_codebooks: int = 16
    patch_proj: bool = False
    out_conv: bool = False
    encoder_width: int | None = None
    encoder_depth: int | None = None
    decoder_width: int | None = None
    decoder_depth: int | None = None
    mlp_expansion: int = 4

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        for side, preset in (("encoder", self.enc_type), ("decoder", self.dec_type)):
            depth, width = mlp_preset_size(preset)
            for field, preset_value in (("width", width), ("depth", depth)):
                key = f"{side}_{field}"
                value = getattr(self, key)
                if value is None:
                    setattr(self, key, preset_value)
                elif value != preset_value:
                    raise ValueError(f"FourMMLPVQVAEConfig: {key}={value} disagrees with preset {preset!r}, which has {preset_value}.")
        self.check_flags(("memcodes",))
        if self.latent_dim % self.num_codebooks:
            raise ValueError(
                f"FourMMLPVQVAEConfig: latent_dim {self.latent_dim} must be divisible by num_codebooks {self.num_codebooks}."
            )
        if self.n_labels is not None:
            raise ValueError(f"FourMMLPVQVAEConfig: n_labels must be None for an MLP tokenizer, got {self.n_labels}.")

    @classmethod
    def from_released(cls, released: dict, state_dict: dict[str, torch.Tensor], **overrides) -> "FourMMLPVQVAEConfig":
        """A config from a released ``config.json`` dict, checked against the weights' sizes."""
        check_released_keys(released, RELEASED_MLP_VQVAE_KEYS, "FourMMLPVQVAE")
        hidden = state_dict.get("encoder.blocks.0.block.0.weight")
        width = state_dict.get("encoder.linear_in.weight")
        if hidden is not None and width is not None and "mlp_expansion" not in overrides:
            overrides = {**overrides, "mlp_expansion": int(hidden.shape[0]) // int(width.shape[0])}
        config = cls(**{**released, **overrides})
        for side in ("encoder", "decoder"):
            width = int(require_weight(state_dict, f"{side}.linear_in.weight", "FourMMLPVQVAE").shape[0])
            depth = count_blocks(state_dict, f"{side}.blocks")
            expected = (getattr(config, f"{side}_width"), getattr(config, f"{side}_depth"))
            if (width, depth) != expected:
                raise ValueError(
                    f"FourMMLPVQVAE: the {side} weights have width {width} and {depth} blocks, but the preset "
                    f"{getattr(config, 'enc_type' if side == 'encoder' else 'dec_type')!r} has width {expected[0]} and {expected[1]} blocks."
                )
        return config


@dataclass
class FourMMLPVQVAEOutput(ModelOutput):
    """Output of :meth:`FourMMLPVQVAE.forward`: ``ids`` [B, H, 1, 1], ``latents``, ``reconstruction``."""

    ids: torch.LongTensor | None = None
    latents: torch.FloatTensor | None = None
    reconstruction: torch.FloatTensor | None = None


class FourMMLPVQVAEPreTrainedModel(ReleasedTokenizerPreTrainedModel):
    config_class = FourMMLPVQVAEConfig
    base_model_prefix = "mlp_vqvae"
    main_input_name = "inputs"

    @torch.no_grad()
    def _init_weights(self, module):
        super()._init_weights(module)
        if isinstance(module, MemcodesQuantizer):
            init.normal_(module.codes)
            init.normal_(module.to_k.weight, std=module.head_dim**-0.5)
            init.normal_(module.to_v.weight, std=module.head_dim**-0.5)



class FourMMLPVQVAE(FourMMLPVQVAEPreTrainedModel):
    """Bottleneck-MLP + memcodes tokenizer (global embeddings, human poses).

    Example::

        tokenizer = FourMMLPVQVAE.from_pretrained("4M_tokenizers_DINOv2-B14-global_8k_16_224")
        ids = tokenizer.encode(cls_embedding)   # [B, 768] or [B, 768, 1, 1] -> [B, 16, 1, 1] int64
        embedding = tokenizer.decode(ids)       # -> [B, 768, 1, 1]
    """

    def __init__(self, config: FourMMLPVQVAEConfig):
        super().__init__(config)
        self.encoder = BottleneckMLP(
            config.n_channels, config.encoder_width, config.encoder_depth, config.encoder_width, config.mlp_expansion
        )
        self.quant_proj = nn.Conv2d(config.encoder_width, config.latent_dim, 1)
        self.quantize = MemcodesQuantizer(config.codebook_size, config.latent_dim, config.num_codebooks)
        self.post_quant_proj = nn.Conv2d(config.latent_dim, config.decoder_width, 1)
        self.decoder = BottleneckMLP(
            config.decoder_width, config.decoder_width, config.decoder_depth, config.n_channels, config.mlp_expansion
        )
        self.post_init()

    def _name(self) -> str:
        return f"FourMMLPVQVAE ({self.config.modality or 'memcodes'})"

    def _as_grid(self, inputs: torch.Tensor) -> torch.Tensor:
        channels = self.config.n_channels
        if not isinstance(inputs, torch.Tensor):
            raise TypeError(f"{self._name()}: inputs must be a torch.Tensor, got {type(inputs).__name__}.")
        if not inputs.dtype.is_floating_point:
            raise ValueError(f"{self._name()}: inputs must be floating point, got {inputs.dtype}.")
        if inputs.dim() == 2:
            inputs = inputs[:, :, None, None]
        if inputs.dim() != 4 or inputs.shape[1] != channels:
            raise ValueError(
                f"{self._name()}: expected inputs of shape (B, {channels}) or (B, {channels}, h, w), got {tuple(inputs.shape)}."
            )
        return inputs

    def encode_latents(self, inputs: torch.Tensor, intermediates: dict | None = None) -> torch.Tensor:
        """[B, C] or [B, C, h, w] -> latents [B, latent_dim, h, w] (``enc.output``, ``enc.latents``)."""
        hidden = self.encoder(self._as_grid(inputs))
        latents = self.quant_proj(hidden)
        if intermediates is not None:
            intermediates.update({"enc.output": hidden.detach(), "enc.latents": latents.detach()})
        return latents

    def encode(self, inputs: torch.Tensor, intermediates: dict | None = None) -> torch.LongTensor:
        """[B, C] or [B, C, h, w] -> ids [B, H, h, w] int64, head-major (H = num_codebooks)."""
        latents = self.encode_latents(inputs, intermediates)
        record = {} if intermediates is not None else None
        _, ids = self.quantize.quantize(latents, record)
        if intermediates is not None:
            intermediates.update({f"quant.{key}": value for key, value in record.items()})
        return ids

    def decode(self, ids: torch.LongTensor, intermediates: dict | None = None) -> torch.Tensor:
        """ids [B, H, h, w] (or [B, H]) -> [B, C, h, w] (or [B, C] for [B, H] ids)."""
        config = self.config
        if not isinstance(ids, torch.Tensor) or ids.dtype.is_floating_point or ids.dtype == torch.bool:
            raise ValueError(f"{self._name()}: ids must be an integer tensor of shape (B, {config.num_codebooks}, 1, 1).")
        flat = ids.dim() == 2
        grid_ids = ids[:, :, None, None] if flat else ids
        if grid_ids.dim() != 4 or grid_ids.shape[1] != config.num_codebooks:
            raise ValueError(
                f"{self._name()}: ids must have shape (B, {config.num_codebooks}) or (B, {config.num_codebooks}, h, w), got {tuple(ids.shape)}."
            )
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= config.codebook_size):
            raise ValueError(f"{self._name()}: ids must lie in [0, {config.codebook_size}), got [{int(ids.min())}, {int(ids.max())}].")
        codes = self.quantize.lookup(grid_ids.long())
        output = self.decode_codes(codes, intermediates)
        return output[:, :, 0, 0] if flat else output

    def decode_codes(self, codes: torch.Tensor, intermediates: dict | None = None) -> torch.Tensor:
        """Quantised latents [B, latent_dim, h, w] -> [B, C, h, w]."""
        hidden = self.post_quant_proj(codes)
        if intermediates is not None:
            intermediates.update({"dec.codebook_lookup": codes.detach(), "dec.input": hidden.detach()})
        return self.decoder(hidden)

    def forward(self, inputs: torch.Tensor) -> FourMMLPVQVAEOutput:
        latents = self.encode_latents(inputs)
        quantized, ids = self.quantize.quantize(latents)
        reconstruction = self.decode_codes(quantized)
        if inputs.dim() == 2:
            reconstruction = reconstruction[:, :, 0, 0]
        return FourMMLPVQVAEOutput(ids=ids, latents=latents, reconstruction=reconstruction)


__all__ = ["BottleneckMLP", "FourMMLPVQVAE", "FourMMLPVQVAEConfig", "FourMMLPVQVAEOutput", "mlp_preset_size"]
