"""The released 4M ViT VQ-VAE: ViT encoder -> lucid cosine codebook -> ViT decoder.

One architecture serves three kinds of released tokenizers (fixture README sections 10-11):

==================  ===================================  =========================================
kind                ``encode`` input                      ``decode`` output
==================  ===================================  =========================================
semseg              class ids ``[B, H, W]`` int            class logits ``[B, n_labels, H, W]``
                    (``n_labels`` set; ``cls_emb``)
feature map         features ``[B, C, h, w]`` float        features ``[B, C, h, w]`` (one token per cell,
                    (``patch_proj`` false: CLIP,           ``patch_proj`` false)
                    DINOv2, ImageBind)
image / mask        ``[B, C, H, W]`` float (SAM            ``[B, C, H, W]``; SAM adds the ConvNeXt
                    instances: 64x64 0/1 masks)            ``out_conv``
==================  ===================================  =========================================

No input normalisation is applied (``undo_std`` false). Position tables are built for
``image_size`` and resized to the actual grid, so a 448-px tokenizer also reads 224-px inputs.

Loading: ``FourMViTVQVAE.from_pretrained(folder)`` takes a released Hub folder as is (widths and
depths from the weights, head counts from the preset name or ``encoder_num_heads=`` /
``decoder_num_heads=``) as well as a folder saved by ``save_pretrained`` (``model_type``
``"fourm_vit_vqvae"``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from transformers import initialization as init
from transformers.utils import ModelOutput

from .quantizers import LucidQuantizer
from .released_layout import (
    ReleasedTokenizerPreTrainedModel,
    ReleasedTokenizerConfig,
    check_released_keys,
    count_blocks,
    require_weight,
)
from .vit_blocks import ConvNeXtBlock, ViTDecoder, ViTEncoder, vit_preset_size

NUM_OUT_CONV_BLOCKS = 2  # the SAM-instance tokenizer's ConvNeXt output stage

# The keys of a released ViT VQ-VAE config.json (the reference VQVAE constructor's arguments).
RELEASED_VIT_VQVAE_KEYS = frozenset(
    {
        "codebook_size", "dec_type", "enc_type", "image_size", "image_size_dec", "image_size_enc", "latent_dim",
        "n_channels", "n_labels", "norm_codes", "norm_latents", "num_codebooks", "out_conv", "patch_proj",
        "patch_size", "patch_size_dec", "post_mlp", "quant_type", "sync_codebook", "undo_std",
    }
)


class FourMViTVQVAEConfig(ReleasedTokenizerConfig):
    r"""Configuration of :class:`FourMViTVQVAE`: the released keys (see
    :class:`~fourm_hf.tokenizers.released_layout.ReleasedTokenizerConfig`) plus ``out_conv`` and
    the resolved ViT sizes.

    Args:
        out_conv: the SAM-instance ConvNeXt output stage.
        encoder_dim / encoder_depth / encoder_num_heads: encoder width, blocks, heads; ``None`` =
            from the ``enc_type`` preset (``vit_s``/``vit_b``/``vit_l`` or a name with ``_d``/``_l``/``_h`` parts).
        decoder_dim / decoder_depth / decoder_num_heads: the same for the decoder and ``dec_type``.
        mlp_ratio: ViT MLP expansion (4 in every preset).
    """

    released_keys = RELEASED_VIT_VQVAE_KEYS
    model_type = "fourm_vit_vqvae"

    out_conv: bool = False
    encoder_dim: int | None = None
    encoder_depth: int | None = None
    encoder_num_heads: int | None = None
    decoder_dim: int | None = None
    decoder_depth: int | None = None
    decoder_num_heads: int | None = None
    mlp_ratio: int = 4

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        for side in ("encoder", "decoder"):
            self._resolve_side(side)
        self.check_flags(("lucid",))
        if self.num_codebooks != 1:
            raise ValueError(f"FourMViTVQVAEConfig: the lucid codebook has num_codebooks=1, got {self.num_codebooks}.")
        for key, size in (("image_size_encoder", self.encoder_image_size), ("image_size_decoder", self.decoder_image_size)):
            patch = self.patch_size if key.endswith("encoder") else self.decoder_patch_size
            if size % patch:
                raise ValueError(f"FourMViTVQVAEConfig: {key} {size} is not a multiple of its patch size {patch}.")
        if self.modality is None:
            self.modality = self.default_modality()

    def _resolve_side(self, side: str) -> None:
        preset = self.enc_type if side == "encoder" else self.dec_type
        preset_sizes = vit_preset_size(preset)
        for field, preset_value in zip(("dim", "depth", "num_heads"), preset_sizes):
            key = f"{side}_{field}"
            value = getattr(self, key)
            if value is None:
                if preset_value is None:
                    hint = f" (pass {key}=... e.g. from the fixture JSON's fixture_presets)" if field == "num_heads" else ""
                    raise ValueError(f"FourMViTVQVAEConfig: the preset name {preset!r} does not give {key}{hint}.")
                setattr(self, key, preset_value)
            elif preset_value is not None and value != preset_value:
                raise ValueError(f"FourMViTVQVAEConfig: {key}={value} disagrees with preset {preset!r}, which has {preset_value}.")
        dim, heads = getattr(self, f"{side}_dim"), getattr(self, f"{side}_num_heads")
        if dim % heads or dim % 4:
            raise ValueError(f"FourMViTVQVAEConfig: {side} width {dim} must be divisible by 4 and by its {heads} heads.")

    # ---- derived sizes ------------------------------------------------------------------------
    @property
    def encoder_image_size(self) -> int:
        return self.image_size_enc or self.image_size

    @property
    def decoder_image_size(self) -> int:
        return self.image_size_dec or self.image_size

    @property
    def decoder_patch_size(self) -> int:
        return self.patch_size_dec or self.patch_size

    @property
    def output_channels(self) -> int:
        """Decoder output channels: class logits for semseg, else ``n_channels``."""
        return self.n_labels or self.n_channels

    @property
    def input_kind(self) -> str:
        """``"semseg"``, ``"feature"`` (no patch projection), ``"mask"`` (SAM ``out_conv``) or ``"image"``."""
        if self.n_labels:
            return "semseg"
        if not self.patch_proj:
            return "feature"
        return "mask" if self.out_conv else "image"

    def default_modality(self) -> str:
        return {"semseg": "tok_semseg", "feature": "tok_feature", "mask": "tok_sam_instance", "image": "tok_rgb"}[self.input_kind]

    # ---- released layout ----------------------------------------------------------------------
    @classmethod
    def from_released(cls, released: dict, state_dict: dict[str, torch.Tensor], **overrides) -> "FourMViTVQVAEConfig":
        """A config from a released ``config.json`` dict; widths / depths from the weights."""
        check_released_keys(released, RELEASED_VIT_VQVAE_KEYS, "FourMViTVQVAE")
        preset_sizes = {side: vit_preset_size(released.get(key)) for side, key in (("encoder", "enc_type"), ("decoder", "dec_type"))}
        sizes = {}
        for side in ("encoder", "decoder"):
            table = require_weight(state_dict, f"{side}.pos_emb", "FourMViTVQVAE")
            sizes[f"{side}_dim"] = int(table.shape[1])
            sizes[f"{side}_depth"] = count_blocks(state_dict, f"{side}.blocks")
        hidden = state_dict.get("encoder.blocks.0.mlp.fc1.weight")
        if hidden is not None:  # the MLP ratio (4 in every preset), read rather than assumed
            ratio, remainder = divmod(int(hidden.shape[0]), sizes["encoder_dim"])
            if remainder or ratio < 1:
                raise ValueError(f"FourMViTVQVAE: encoder MLP width {hidden.shape[0]} is not a multiple of its width {sizes['encoder_dim']}.")
            sizes["mlp_ratio"] = ratio
        preset_heads = {}
        for side, preset in (("encoder", released.get("enc_type")), ("decoder", released.get("dec_type"))):
            dim, depth, heads = preset_sizes[side]
            for field, preset_value in (("dim", dim), ("depth", depth)):
                if preset_value is not None and preset_value != sizes[f"{side}_{field}"]:
                    raise ValueError(
                        f"FourMViTVQVAE: the {side} weights have {field} {sizes[f'{side}_{field}']}, but the preset "
                        f"{preset!r} has {field} {preset_value}."
                    )
            preset_heads[side] = heads
        for side in ("encoder", "decoder"):
            key = f"{side}_num_heads"
            if key in overrides and preset_heads[side] is not None and overrides[key] != preset_heads[side]:
                raise ValueError(f"FourMViTVQVAE: {key}={overrides[key]} disagrees with the preset, which has {preset_heads[side]}.")
        return cls(**{**released, **sizes, **overrides})


@dataclass
class FourMViTVQVAEOutput(ModelOutput):
    """Output of :meth:`FourMViTVQVAE.forward`: ``ids`` [B, h, w], ``latents`` [B, L, h, w]
    (before quantisation), ``reconstruction`` (what :meth:`FourMViTVQVAE.decode` returns)."""

    ids: torch.LongTensor | None = None
    latents: torch.FloatTensor | None = None
    reconstruction: torch.FloatTensor | None = None


class FourMViTVQVAEPreTrainedModel(ReleasedTokenizerPreTrainedModel):
    config_class = FourMViTVQVAEConfig
    base_model_prefix = "vit_vqvae"
    main_input_name = "inputs"

    @torch.no_grad()
    def _init_weights(self, module):
        super()._init_weights(module)
        if isinstance(module, nn.Embedding):
            init.normal_(module.weight, std=1.0)
        elif isinstance(module, ConvNeXtBlock):
            init.constant_(module.gamma, 1e-6)



class FourMViTVQVAE(FourMViTVQVAEPreTrainedModel):
    """ViT VQ-VAE of the released semseg / feature-map / SAM-instance tokenizers.

    Example::

        vqvae = FourMViTVQVAE.from_pretrained("4M_tokenizers_semseg_4k_224-448")  # a released folder
        ids = vqvae.encode(class_ids)     # [B, 224, 224] int64 -> [B, 14, 14] int64
        logits = vqvae.decode(ids)        # [B, 14, 14] -> [B, n_labels, 224, 224]
    """

    def __init__(self, config: FourMViTVQVAEConfig):
        super().__init__(config)
        if config.n_labels:
            self.cls_emb = nn.Embedding(config.n_labels, config.n_channels)
        self.encoder = ViTEncoder(
            config.n_channels, config.encoder_dim, config.encoder_depth, config.encoder_num_heads,
            patch_size=config.patch_size, image_size=config.encoder_image_size,
            patch_projection=config.patch_proj, post_mlp=config.post_mlp, mlp_ratio=config.mlp_ratio,
        )
        self.quant_proj = nn.Conv2d(config.encoder_dim, config.latent_dim, 1)
        self.quantize = LucidQuantizer(config.codebook_size, config.latent_dim)
        self.post_quant_proj = nn.Conv2d(config.latent_dim, config.decoder_dim, 1)
        self.decoder = ViTDecoder(
            config.output_channels, config.decoder_dim, config.decoder_depth, config.decoder_num_heads,
            patch_size=config.decoder_patch_size, image_size=config.decoder_image_size,
            patch_projection=config.patch_proj, post_mlp=config.post_mlp,
            num_out_conv_blocks=NUM_OUT_CONV_BLOCKS if config.out_conv else 0, mlp_ratio=config.mlp_ratio,
        )
        self.post_init()

    # ---- checks -------------------------------------------------------------------------------
    @property
    def token_patch_size(self) -> int:
        """Pixels per token side (1 for feature maps)."""
        return self.config.patch_size if self.config.patch_proj else 1

    def check_inputs(self, inputs: torch.Tensor) -> None:
        """``ValueError`` unless ``inputs`` is a batch ``encode`` reads (see the module docstring)."""
        config = self.config
        name = f"FourMViTVQVAE ({config.modality})"
        if not isinstance(inputs, torch.Tensor):
            raise TypeError(f"{name}: inputs must be a torch.Tensor, got {type(inputs).__name__}.")
        if config.n_labels:
            if inputs.dtype.is_floating_point or inputs.dtype == torch.bool or inputs.dim() != 3:
                raise ValueError(f"{name}: expected integer class ids of shape (B, H, W), got {inputs.dtype} {tuple(inputs.shape)}.")
            if inputs.numel() and (int(inputs.min()) < 0 or int(inputs.max()) >= config.n_labels):
                raise ValueError(
                    f"{name}: class ids must lie in [0, {config.n_labels}) (n_labels), got [{int(inputs.min())}, {int(inputs.max())}]."
                )
            spatial = tuple(inputs.shape[1:])
        else:
            if not inputs.dtype.is_floating_point or inputs.dim() != 4 or inputs.shape[1] != config.n_channels:
                raise ValueError(
                    f"{name}: expected a float tensor of shape (B, {config.n_channels}, H, W), got {inputs.dtype} {tuple(inputs.shape)}."
                )
            spatial = tuple(inputs.shape[2:])
        patch = self.token_patch_size
        if any(side < patch or side % patch for side in spatial):
            raise ValueError(f"{name}: spatial size {spatial} must be a positive multiple of the patch size {patch}.")

    def check_ids(self, ids: torch.Tensor) -> None:
        name = f"FourMViTVQVAE ({self.config.modality})"
        if not isinstance(ids, torch.Tensor) or ids.dtype.is_floating_point or ids.dtype == torch.bool or ids.dim() != 3:
            raise ValueError(f"{name}: ids must be an integer tensor of shape (B, h, w), got {getattr(ids, 'shape', type(ids))}.")
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= self.config.codebook_size):
            raise ValueError(f"{name}: ids must lie in [0, {self.config.codebook_size}), got [{int(ids.min())}, {int(ids.max())}].")

    # ---- tokenizer API ------------------------------------------------------------------------
    def encode_latents(self, inputs: torch.Tensor, intermediates: dict | None = None) -> torch.Tensor:
        """inputs -> continuous latents [B, latent_dim, h, w] (``enc.*`` intermediates)."""
        self.check_inputs(inputs)
        if self.config.n_labels:
            inputs = self.cls_emb(inputs.long()).permute(0, 3, 1, 2)
            _put(intermediates, "enc.class_embedded", inputs)
        encoder_record = {} if intermediates is not None else None
        tokens = self.encoder(inputs, encoder_record)
        latents = self.quant_proj(tokens)
        if intermediates is not None:
            intermediates.update({f"enc.{key}": value for key, value in encoder_record.items()})
            intermediates["enc.latents"] = latents.detach()
        return latents

    def encode(self, inputs: torch.Tensor, intermediates: dict | None = None) -> torch.LongTensor:
        """inputs -> code ids [B, h, w] int64 (raster order = the 4M token order).

        ``intermediates`` (optional) receives the fixtures' ``enc.*`` and ``quant.*`` tensors.
        """
        latents = self.encode_latents(inputs, intermediates)
        quant_record = {} if intermediates is not None else None
        _, ids = self.quantize.quantize(latents, quant_record)
        if intermediates is not None:
            intermediates.update({f"quant.{key}": value for key, value in quant_record.items()})
        return ids

    def decode(self, ids: torch.LongTensor, intermediates: dict | None = None) -> torch.Tensor:
        """ids [B, h, w] -> decoder output [B, C_out, h*P, w*P] (semseg: class logits; argmax = class).

        ``intermediates`` (optional) receives ``dec.codebook_lookup``, ``dec.input`` and the
        decoder's ``dec.*`` tensors.
        """
        self.check_ids(ids)
        codes = self.quantize.lookup(ids.long())
        return self.decode_codes(codes, intermediates)

    def decode_codes(self, codes: torch.Tensor, intermediates: dict | None = None) -> torch.Tensor:
        """Codebook vectors [B, latent_dim, h, w] -> decoder output."""
        token_map = self.post_quant_proj(codes)
        decoder_record = {} if intermediates is not None else None
        output = self.decoder(token_map, decoder_record)
        if intermediates is not None:
            intermediates["dec.codebook_lookup"] = codes.detach()
            intermediates["dec.input"] = token_map.detach()
            intermediates.update({f"dec.{key}": value for key, value in decoder_record.items()})
        return output

    def forward(self, inputs: torch.Tensor) -> FourMViTVQVAEOutput:
        """Encode, quantise and decode: ids, latents and the reconstruction."""
        latents = self.encode_latents(inputs)
        quantized, ids = self.quantize.quantize(latents)
        return FourMViTVQVAEOutput(ids=ids, latents=latents, reconstruction=self.decode_codes(quantized))


def _put(intermediates: dict | None, key: str, tensor: torch.Tensor) -> None:
    if intermediates is not None:
        intermediates[key] = tensor.detach()


__all__ = ["FourMViTVQVAE", "FourMViTVQVAEConfig", "FourMViTVQVAEOutput", "FourMViTVQVAEPreTrainedModel", "RELEASED_VIT_VQVAE_KEYS"]
