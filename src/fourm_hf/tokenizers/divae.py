"""The released 4M DiVAE: ViT encoder -> lucid cosine codebook -> patched-UNet diffusion decoder.

The RGB, depth, normal and edge tokenizers (``EPFL-VILAB/4M_tokenizers_{rgb_16k,depth_8k,normal_8k}_224-448``,
``..._edge_8k_224-512``) share this architecture; only ``n_channels`` differs (3 RGB / normals,
1 depth / edges). Fixture README sections 10 and 12:

* ``encode(images)``: ``[B, C, H, W]`` in the modality's normalised range (RGB: [-1, 1]) ->
  ids ``[B, H/16, W/16]``: ViT encoder (+ tanh post-MLP), ``quant_proj`` (1x1 conv to the 32-d code
  space), argmax cosine similarity against the codebook.
* ``decode(ids, num_steps=..., generator=..., initial_noise=..., image_size=...)``: the stored code
  rows condition a :class:`~fourm_hf.tokenizers.diffusion_unet.PatchedUNet` that predicts the clean
  image; DDIM (eta 0, the reference's integer "trailing" spacing) from Gaussian noise to the image
  (``[B, C, H, W]``, about [-1, 1]; not clamped, as the reference).
* ``forward(images, timesteps=..., noise=...)``: the training-style call, one UNet evaluation on
  ``sqrt(a_t) x + sqrt(1 - a_t) noise`` with per-sample ``t``, and the diffusion loss.

Noise schedule and sampler: :mod:`~fourm_hf.tokenizers.diffusion_sampling` (``diffusers``
schedulers with the reference's settings and timesteps).

Loading: ``FourMDiVAE.from_pretrained(folder)`` reads a released Hub folder as is (widths and depths
from the weights, the encoder's head count from the ``enc_type`` preset or ``encoder_num_heads=``)
and folders saved by ``save_pretrained`` (``model_type`` ``"fourm_divae"``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import initialization as init
from transformers.utils import ModelOutput

from .diffusion_sampling import BETA_SCHEDULES, SCHEDULERS, TIMESTEP_SPACINGS, make_scheduler, reference_timesteps, sample_images
from .diffusion_unet import UNET_PRESETS, AttentionBlock, PatchedUNet, ResBlock, UNetSize, unet_named_sizes
from .quantizers import LucidQuantizer
from .released import register_released_family
from .released_layout import (
    ReleasedTokenizerPreTrainedModel,
    ReleasedTokenizerConfig,
    check_released_keys,
    count_blocks,
    require_weight,
)
from .vit_blocks import ViTEncoder, vit_preset_size

# The keys of a released DiVAE config.json (the reference DiVAE constructor's arguments).
RELEASED_DIVAE_KEYS = frozenset(
    {
        "beta_schedule", "clip_sample", "cls_free_guidance_dropout", "codebook_size", "conditioning",
        "dec_transformer_dropout", "dec_type", "enc_type", "image_size", "image_size_dec", "image_size_enc",
        "latent_dim", "masked_cfg", "masked_cfg_high", "masked_cfg_low", "n_channels", "n_labels", "norm_codes",
        "norm_latents", "num_codebooks", "num_train_timesteps", "patch_proj", "patch_size", "post_mlp",
        "prediction_type", "quant_type", "scheduler", "sync_codebook", "thresholding", "undo_std", "zero_terminal_snr",
    }
)

_DEFAULT_MODALITY = {1: "tok_depth", 3: "tok_rgb"}


def is_divae_config(config: dict) -> bool:
    """True for a released ``config.json`` dict of the DiVAE family (diffusion decoder keys or a UNet ``dec_type``)."""
    dec_type = config.get("dec_type")
    return "num_train_timesteps" in config or "scheduler" in config or (isinstance(dec_type, str) and dec_type.startswith(("unet", "uvit")))


class FourMDiVAEConfig(ReleasedTokenizerConfig):
    r"""Configuration of :class:`FourMDiVAE`: the released keys plus the resolved sizes.

    Released (reference) keys beyond :class:`~fourm_hf.tokenizers.released_layout.ReleasedTokenizerConfig`:
    ``scheduler`` ("ddim" / "ddpm"), ``num_train_timesteps``, ``beta_schedule``, ``prediction_type``
    ("sample" in every release), ``clip_sample``, ``thresholding``, ``zero_terminal_snr``,
    ``conditioning`` (unused by the patched UNet) and the training-only ``cls_free_guidance_dropout``,
    ``masked_cfg*``, ``dec_transformer_dropout``.

    Args:
        encoder_dim / encoder_depth / encoder_num_heads: ViT encoder sizes; ``None`` = from the
            ``enc_type`` preset (``vit_b_enc`` = 768 / 12 / 12, or a name with ``_d``/``_l``/``_h`` parts).
        unet_model_channels / unet_num_res_blocks: UNet width and res blocks per level; ``None`` =
            from the ``dec_type`` preset (``unet_patched`` = 256 / 3).
        unet_patch_size / unet_channel_mult / unet_attention_resolutions / unet_num_heads: the other
            UNet parameters (released: 4, (1, 2, 2, 2), (4, 8), 1).
        num_inference_steps: default number of DDIM steps for :meth:`FourMDiVAE.decode`.
        timestep_spacing: default spacing ("trailing", the reference's default; "leading", "linspace").
    """

    model_type = "fourm_divae"
    released_keys = RELEASED_DIVAE_KEYS

    enc_type: str = "vit_b_enc"
    dec_type: str = "unet_patched"
    image_size: int = 448
    scheduler: str = "ddim"
    num_train_timesteps: int = 1000
    beta_schedule: str = "linear"
    prediction_type: str = "sample"
    clip_sample: bool = False
    thresholding: bool = False
    zero_terminal_snr: bool = True
    conditioning: str = "add"
    cls_free_guidance_dropout: float = 0.0
    masked_cfg: bool = False
    masked_cfg_low: int = 0
    masked_cfg_high: int | None = None
    dec_transformer_dropout: float = 0.2
    encoder_dim: int | None = None
    encoder_depth: int | None = None
    encoder_num_heads: int | None = None
    unet_model_channels: int | None = None
    unet_num_res_blocks: int | None = None
    unet_patch_size: int = 4
    unet_channel_mult: list[int] | None = None
    unet_attention_resolutions: list[int] | None = None
    unet_num_heads: int = 1
    num_inference_steps: int = 25
    timestep_spacing: str = "trailing"
    mlp_ratio: int = 4

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        self.check_flags(("lucid",))
        self._resolve_encoder()
        self._resolve_unet()
        self._check_diffusion()
        if self.modality is None:
            self.modality = _DEFAULT_MODALITY.get(self.n_channels, "tok_rgb")

    def _resolve_encoder(self) -> None:
        for field, preset_value in zip(("dim", "depth", "num_heads"), vit_preset_size(self.enc_type)):
            key = f"encoder_{field}"
            value = getattr(self, key)
            if value is None:
                if preset_value is None:
                    raise ValueError(f"FourMDiVAEConfig: the preset name {self.enc_type!r} does not give {key} (pass {key}=...).")
                setattr(self, key, preset_value)
            elif preset_value is not None and value != preset_value:
                raise ValueError(f"FourMDiVAEConfig: {key}={value} disagrees with preset {self.enc_type!r}, which has {preset_value}.")
        if self.encoder_dim % self.encoder_num_heads or self.encoder_dim % 4:
            raise ValueError(f"FourMDiVAEConfig: encoder width {self.encoder_dim} must be divisible by 4 and by {self.encoder_num_heads} heads.")

    def _resolve_unet(self) -> None:
        if isinstance(self.dec_type, str) and self.dec_type.startswith("uvit"):
            raise ValueError(
                f"FourMDiVAEConfig: dec_type {self.dec_type!r} (UViT decoder) is not implemented; no released "
                f"tokenizer uses it (the released DiVAEs use 'unet_patched')."
            )
        named, preset = unet_named_sizes(self.dec_type), UNET_PRESETS["unet_patched"]
        for field in ("model_channels", "num_res_blocks"):
            key, value = f"unet_{field}", getattr(self, f"unet_{field}")
            if value is None:
                setattr(self, key, named.get(field, getattr(preset, field)))
            elif field in named and value != named[field]:
                raise ValueError(f"FourMDiVAEConfig: {key}={value} disagrees with preset {self.dec_type!r}, which has {named[field]}.")
        if self.unet_channel_mult is None:
            self.unet_channel_mult = list(preset.channel_mult)
        if self.unet_attention_resolutions is None:
            self.unet_attention_resolutions = list(preset.attention_resolutions)
        self.unet_channel_mult = [int(value) for value in self.unet_channel_mult]
        self.unet_attention_resolutions = [int(value) for value in self.unet_attention_resolutions]
        for channels in (self.unet_model_channels * mult for mult in self.unet_channel_mult):
            if channels % 32:
                raise ValueError(f"FourMDiVAEConfig: UNet widths must be multiples of 32 (GroupNorm groups), got {channels}.")

    def _check_diffusion(self) -> None:
        if self.n_labels is not None:
            raise ValueError(f"FourMDiVAEConfig: a DiVAE reads images, n_labels must be None, got {self.n_labels!r}.")
        if self.patch_proj is not True:
            raise ValueError("FourMDiVAEConfig: a DiVAE encoder uses patch projection (patch_proj=True).")
        if self.num_codebooks != 1:
            raise ValueError(f"FourMDiVAEConfig: the lucid codebook has num_codebooks=1, got {self.num_codebooks}.")
        if self.scheduler not in SCHEDULERS:
            raise ValueError(f"FourMDiVAEConfig: scheduler must be one of {SCHEDULERS}, got {self.scheduler!r}.")
        if self.beta_schedule not in BETA_SCHEDULES:
            raise ValueError(f"FourMDiVAEConfig: beta_schedule must be one of {BETA_SCHEDULES}, got {self.beta_schedule!r}.")
        if self.timestep_spacing not in TIMESTEP_SPACINGS:
            raise ValueError(f"FourMDiVAEConfig: timestep_spacing must be one of {TIMESTEP_SPACINGS}, got {self.timestep_spacing!r}.")
        if self.prediction_type not in ("sample", "epsilon", "v_prediction"):
            raise ValueError(f"FourMDiVAEConfig: prediction_type must be 'sample', 'epsilon' or 'v_prediction', got {self.prediction_type!r}.")
        reference_timesteps(self.num_inference_steps, self.num_train_timesteps, self.timestep_spacing)  # validates

    @property
    def unet_size(self) -> UNetSize:
        return UNetSize(
            patch_size=self.unet_patch_size,
            model_channels=self.unet_model_channels,
            num_res_blocks=self.unet_num_res_blocks,
            channel_mult=tuple(self.unet_channel_mult),
            attention_resolutions=tuple(self.unet_attention_resolutions),
            num_heads=self.unet_num_heads,
        )

    @property
    def encoder_image_size(self) -> int:
        return self.image_size_enc or self.image_size

    # ---- released layout ----------------------------------------------------------------------
    @classmethod
    def from_released(cls, released: dict, state_dict: dict[str, torch.Tensor], **overrides) -> "FourMDiVAEConfig":
        """A config from a released ``config.json`` dict; widths / depths read from the weights and
        checked against the preset names."""
        check_released_keys(released, RELEASED_DIVAE_KEYS, "FourMDiVAE")
        family = "FourMDiVAE"
        sizes = {
            "encoder_dim": int(require_weight(state_dict, "encoder.pos_emb", family).shape[1]),
            "encoder_depth": count_blocks(state_dict, "encoder.blocks"),
        }
        dim, depth, _ = vit_preset_size(released.get("enc_type", cls.enc_type))
        for key, preset_value in (("encoder_dim", dim), ("encoder_depth", depth)):
            if preset_value is not None and preset_value != sizes[key]:
                raise ValueError(
                    f"{family}: the encoder weights have {key} {sizes[key]}, but the preset {released.get('enc_type')!r} has {preset_value}."
                )
        dec_type = released.get("dec_type", cls.dec_type)
        named = unet_named_sizes(dec_type) if not str(dec_type).startswith("uvit") else {}
        levels = len(overrides.get("unet_channel_mult") or UNET_PRESETS["unet_patched"].channel_mult)
        num_input_blocks = count_blocks(state_dict, "decoder.input_blocks")
        first_mult = (overrides.get("unet_channel_mult") or [1])[0]
        sizes["unet_model_channels"] = int(require_weight(state_dict, "decoder.input_blocks.0.0.weight", family).shape[0]) // first_mult
        sizes["unet_num_res_blocks"] = (num_input_blocks - levels) // levels
        for field, value in named.items():
            if value != sizes[f"unet_{field}"]:
                raise ValueError(
                    f"{family}: the decoder weights have {field} {sizes[f'unet_{field}']}, but the preset {dec_type!r} has {value}."
                )
        return cls(**{**released, **sizes, **overrides})


@dataclass
class FourMDiVAEOutput(ModelOutput):
    """Output of the training-style :meth:`FourMDiVAE.forward`.

    Args:
        loss: MSE between ``decoder_output`` and its target (the clean image for ``prediction_type="sample"``).
        decoder_output: the UNet's prediction, [B, C, H, W].
        noised_input: ``sqrt(a_t) x + sqrt(1 - a_t) noise``, [B, C, H, W].
        timesteps: the per-sample ``t``, [B] int64.
        ids: code ids of the clean input, [B, H/16, W/16].
    """

    loss: torch.FloatTensor | None = None
    decoder_output: torch.FloatTensor | None = None
    noised_input: torch.FloatTensor | None = None
    timesteps: torch.LongTensor | None = None
    ids: torch.LongTensor | None = None


class FourMDiVAEPreTrainedModel(ReleasedTokenizerPreTrainedModel):
    config_class = FourMDiVAEConfig
    base_model_prefix = "divae"
    main_input_name = "images"

    @torch.no_grad()
    def _init_weights(self, module):
        super()._init_weights(module)
        # guided-diffusion zero-initialises the last conv of each residual branch and of the UNet.
        if isinstance(module, ResBlock):
            init.zeros_(module.out_layers[3].weight)
            init.zeros_(module.out_layers[3].bias)
        if isinstance(module, AttentionBlock):
            init.zeros_(module.proj_out.weight)
            init.zeros_(module.proj_out.bias)
        if isinstance(module, PatchedUNet):
            init.zeros_(module.out[2].weight)
            init.zeros_(module.out[2].bias)

    @classmethod
    def check_released_family(cls, folder: str | os.PathLike, released: dict) -> None:
        if not is_divae_config(released):
            raise ValueError(
                f"FourMDiVAE: {os.fspath(folder)!r} is not a DiVAE tokenizer (config.json has dec_type "
                f"{released.get('dec_type')!r} and no diffusion keys; expected dec_type 'unet_patched' and 'scheduler')."
            )


class FourMDiVAE(FourMDiVAEPreTrainedModel):
    """DiVAE tokenizer of the released RGB / depth / normal / edge modalities.

    Example::

        divae = FourMDiVAE.from_pretrained("4M_tokenizers_rgb_16k_224-448")   # a released folder
        ids = divae.encode(images)                       # [B, 3, 224, 224] in [-1, 1] -> [B, 14, 14]
        images = divae.decode(ids, num_steps=25, generator=torch.Generator().manual_seed(0))
    """

    def __init__(self, config: FourMDiVAEConfig):
        super().__init__(config)
        self.encoder = ViTEncoder(
            config.n_channels, config.encoder_dim, config.encoder_depth, config.encoder_num_heads,
            patch_size=config.patch_size, image_size=config.encoder_image_size,
            patch_projection=True, post_mlp=config.post_mlp, mlp_ratio=config.mlp_ratio,
        )
        self.quant_proj = nn.Conv2d(config.encoder_dim, config.latent_dim, 1)
        self.quantize = LucidQuantizer(config.codebook_size, config.latent_dim)
        self.decoder = PatchedUNet(config.n_channels, config.latent_dim, config.unet_size)
        self._noise_scheduler = None
        self.post_init()

    @property
    def noise_scheduler(self):
        """The ``diffusers`` scheduler of the config (built on first use, on the CPU: it holds only the schedule)."""
        if self._noise_scheduler is None:
            config = self.config
            with torch.device("cpu"):  # not the meta device a weight-less construction may be under
                self._noise_scheduler = make_scheduler(
                    config.scheduler, config.num_train_timesteps, config.beta_schedule, config.prediction_type,
                    config.zero_terminal_snr, config.clip_sample, config.thresholding,
                )
        return self._noise_scheduler

    def _name(self) -> str:
        return f"FourMDiVAE ({self.config.modality})"

    # ---- checks -------------------------------------------------------------------------------
    def check_images(self, images: torch.Tensor) -> None:
        """``ValueError`` unless ``images`` is a float [B, n_channels, H, W] batch with H, W multiples of the patch size."""
        config = self.config
        if not isinstance(images, torch.Tensor):
            raise TypeError(f"{self._name()}: images must be a torch.Tensor, got {type(images).__name__}.")
        if not images.dtype.is_floating_point or images.dim() != 4 or images.shape[1] != config.n_channels:
            raise ValueError(
                f"{self._name()}: expected a float tensor of shape (B, {config.n_channels}, H, W), got {images.dtype} {tuple(images.shape)}."
            )
        height, width = images.shape[2:]
        if height < config.patch_size or width < config.patch_size or height % config.patch_size or width % config.patch_size:
            raise ValueError(f"{self._name()}: image size {height}x{width} must be a positive multiple of the patch size {config.patch_size}.")

    def check_ids(self, ids: torch.Tensor) -> None:
        if not isinstance(ids, torch.Tensor) or ids.dtype.is_floating_point or ids.dtype == torch.bool or ids.dim() != 3:
            raise ValueError(f"{self._name()}: ids must be an integer tensor of shape (B, h, w), got {getattr(ids, 'shape', type(ids))}.")
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= self.config.codebook_size):
            raise ValueError(f"{self._name()}: ids must lie in [0, {self.config.codebook_size}), got [{int(ids.min())}, {int(ids.max())}].")

    # ---- encoder side ---------------------------------------------------------------------------
    def encode_latents(self, images: torch.Tensor, intermediates: dict | None = None) -> torch.Tensor:
        """images [B, C, H, W] -> continuous latents [B, latent_dim, H/16, W/16] (``enc.*`` intermediates)."""
        self.check_images(images)
        record = {} if intermediates is not None else None
        latents = self.quant_proj(self.encoder(images, record))
        if intermediates is not None:
            intermediates.update({f"enc.{key}": value for key, value in record.items()})
            intermediates["enc.latents"] = latents.detach()
        return latents

    def encode(self, images: torch.Tensor, intermediates: dict | None = None) -> torch.LongTensor:
        """images [B, C, H, W] -> code ids [B, H/16, W/16] int64 (raster order = the 4M token order).

        ``intermediates`` (optional) receives the fixtures' ``enc.*`` and ``quant.*`` tensors.
        """
        latents = self.encode_latents(images, intermediates)
        record = {} if intermediates is not None else None
        _, ids = self.quantize.quantize(latents, record)
        if intermediates is not None:
            intermediates.update({f"quant.{key}": value for key, value in record.items()})
        return ids

    # ---- decoder side ---------------------------------------------------------------------------
    def denoise(self, noisy: torch.Tensor, timesteps: torch.Tensor, codes: torch.Tensor, intermediates: dict | None = None) -> torch.Tensor:
        """One UNet call: noisy [B, C, H, W], timesteps [B] (or one shared), codes [B, L, h, w] -> [B, C, H, W]."""
        return self.decoder(noisy, timesteps, codes, intermediates)

    def sample_initial_noise(self, shape: tuple[int, ...], generator: torch.Generator | int | None = None) -> torch.Tensor:
        """``torch.randn(shape, generator=...)`` as the reference draws it: on the generator's device
        (CPU for an int seed or no generator), so a seed gives the same image on every device."""
        if isinstance(generator, bool) or not (generator is None or isinstance(generator, (int, torch.Generator))):
            raise TypeError(f"{self._name()}: generator must be a torch.Generator, an int seed or None, got {type(generator).__name__}.")
        if isinstance(generator, int):
            generator = torch.Generator().manual_seed(generator)
        device = generator.device if generator is not None else torch.device("cpu")
        noise = torch.randn(shape, generator=generator, device=device)
        return noise.to(self.device)

    @torch.no_grad()
    def decode(
        self,
        ids: torch.LongTensor,
        num_steps: int | None = None,
        generator: torch.Generator | int | None = None,
        initial_noise: torch.Tensor | None = None,
        image_size: int | tuple[int, int] | None = None,
        timestep_spacing: str | None = None,
        progress: bool = True,
        intermediates: dict | None = None,
    ) -> torch.Tensor:
        """ids [B, h, w] -> images [B, C, H, W] by diffusion sampling (about [-1, 1], not clamped).

        Args:
            ids: code ids.
            num_steps: requested DDIM steps (default ``config.num_inference_steps``); with the
                reference's trailing spacing ``n = 3`` means 4 model calls at [999, 666, 333, 0].
            generator: a ``torch.Generator`` or an int seed for the initial noise (and DDPM's noise).
            initial_noise: an explicit starting noise [B, C, H, W] (overrides ``generator`` for it).
            image_size: output size (int or (H, W)); default ``16 * (h, w)`` (224 px for 14x14 ids).
            timestep_spacing: "trailing" (default), "leading" or "linspace".
            progress: show a tqdm progress bar over the steps.
            intermediates: optional dict receiving ``dec.codebook_lookup``, ``ddim.timesteps``,
                ``ddim.initial_noise`` and per step ``ddim.step{i}.time_embedding`` / ``.model_output`` / ``.sample``.
        """
        self.check_ids(ids)
        config = self.config
        num_steps = config.num_inference_steps if num_steps is None else num_steps
        spacing = timestep_spacing or config.timestep_spacing
        codes = self.quantize.lookup(ids.to(self.device).long())
        height, width = self._output_size(ids, image_size)
        self.decoder.check_image_size(height, width)
        shape = (ids.shape[0], config.n_channels, height, width)
        if isinstance(generator, int) and not isinstance(generator, bool):
            generator = torch.Generator().manual_seed(generator)  # one stream: initial noise, then DDPM's noise
        if initial_noise is None:
            initial_noise = self.sample_initial_noise(shape, generator)
        elif not isinstance(initial_noise, torch.Tensor) or tuple(initial_noise.shape) != shape:
            raise ValueError(f"{self._name()}: initial_noise must be a tensor of shape {shape}, got {getattr(initial_noise, 'shape', type(initial_noise))}.")
        initial_noise = initial_noise.to(self.device, torch.float32)

        unet_record = {} if intermediates is not None else None  # the latest call's time embedding

        def denoiser(sample, timestep):
            return self.denoise(sample, timestep.to(self.device), codes, unet_record)

        def on_step(index, timestep, model_output, sample):
            intermediates[f"ddim.step{index}.time_embedding"] = unet_record["time_embedding"]
            intermediates[f"ddim.step{index}.model_output"] = model_output.detach()
            intermediates[f"ddim.step{index}.sample"] = sample.detach()

        images = sample_images(
            denoiser, self.noise_scheduler, initial_noise, num_steps, spacing, generator=generator, progress=progress,
            on_step=on_step if intermediates is not None else None,
        )
        if intermediates is not None:
            intermediates["dec.codebook_lookup"] = codes.detach()
            intermediates["ddim.initial_noise"] = initial_noise
            intermediates["ddim.timesteps"] = self.noise_scheduler.timesteps.clone()
        return images

    def _output_size(self, ids: torch.Tensor, image_size) -> tuple[int, int]:
        if image_size is None:
            return ids.shape[1] * self.config.patch_size, ids.shape[2] * self.config.patch_size
        if isinstance(image_size, int) and not isinstance(image_size, bool):
            return image_size, image_size
        if isinstance(image_size, (tuple, list)) and len(image_size) == 2 and all(isinstance(side, int) for side in image_size):
            return int(image_size[0]), int(image_size[1])
        raise ValueError(f"{self._name()}: image_size must be an int or a pair of ints, got {image_size!r}.")

    # ---- training-style call ----------------------------------------------------------------------
    def add_noise(self, images: torch.Tensor, noise: torch.Tensor, timesteps: torch.LongTensor) -> torch.Tensor:
        """``sqrt(a_t) x + sqrt(1 - a_t) noise`` per sample (diffusers' ``add_noise`` on our schedule)."""
        return self.noise_scheduler.add_noise(images, noise, timesteps.to(images.device))

    def forward(
        self,
        images: torch.Tensor,
        timesteps: torch.LongTensor | None = None,
        noise: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> FourMDiVAEOutput:
        """Training-style call: encode, quantise (straight-through), noise to per-sample ``t``, one UNet call.

        ``timesteps`` [B] (default uniform in [0, T)) and ``noise`` [B, C, H, W] (default N(0, 1))
        may be given. The loss is the MSE to the target of ``prediction_type`` (the clean image for
        "sample"). The EMA codebook is not updated (its statistics are loaded and kept).
        """
        latents = self.encode_latents(images)
        quantized, ids = self.quantize.quantize(latents)
        codes = latents + (quantized - latents).detach()  # straight-through: the value is the codebook row
        batch = images.shape[0]
        if timesteps is None:
            timesteps = torch.randint(0, self.config.num_train_timesteps, (batch,), generator=generator, device=generator.device if generator else None)
        timesteps = torch.as_tensor(timesteps).to(images.device).long()
        if timesteps.shape != (batch,) or int(timesteps.min()) < 0 or int(timesteps.max()) >= self.config.num_train_timesteps:
            raise ValueError(f"{self._name()}: timesteps must be {batch} integers in [0, {self.config.num_train_timesteps}), got {timesteps.tolist()}.")
        if noise is None:
            noise = torch.randn(images.shape, generator=generator, device=generator.device if generator else None).to(images.device)
        if tuple(noise.shape) != tuple(images.shape):
            raise ValueError(f"{self._name()}: noise must have the images' shape {tuple(images.shape)}, got {tuple(noise.shape)}.")
        noised = self.add_noise(images, noise, timesteps)
        output = self.denoise(noised, timesteps, codes)
        loss = F.mse_loss(output.float(), self._target(images, noise, timesteps).float())
        return FourMDiVAEOutput(loss=loss, decoder_output=output, noised_input=noised, timesteps=timesteps, ids=ids)

    def _target(self, images: torch.Tensor, noise: torch.Tensor, timesteps: torch.LongTensor) -> torch.Tensor:
        if self.config.prediction_type == "sample":
            return images
        if self.config.prediction_type == "epsilon":
            return noise
        return self.noise_scheduler.get_velocity(images, noise, timesteps)


# Released configs with a UNet (or UViT, refused with a clear error) decoder are DiVAEs.
register_released_family("unet_", FourMDiVAE)
register_released_family("uvit_", FourMDiVAE)


__all__ = ["FourMDiVAE", "FourMDiVAEConfig", "FourMDiVAEOutput", "FourMDiVAEPreTrainedModel", "RELEASED_DIVAE_KEYS", "is_divae_config"]
