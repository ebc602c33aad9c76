"""VQ-VAE tokenizers: dense maps (RGB, depth, normals, segmentation, feature maps) <-> grids of code ids.

One small convolutional autoencoder serves every dense modality; ``config.input_kind`` says how the
map enters and leaves it:

=========  ====================================  ===========================  ==================
kind       what ``encode`` takes / ``decode``     internal (normalised) space  reconstruction loss
           returns (natural units)
=========  ====================================  ===========================  ==================
rgb        (B, 3, H, W) float in [-1, 1]          same                         MSE
depth      (B, 1, H, W) float, metres, > 0        (log(d) - mean) / std        MSE
normal     (B, 3, H, W) float unit vectors        same                         MSE
semseg     (B, H, W) int class ids                learned class embedding      cross-entropy
feature    (B, C, H, W) float                     same                         MSE + (1 - cosine)
=========  ====================================  ===========================  ==================

Depth is modelled in log space, standardised with ``config.depth_log_mean`` / ``depth_log_std``
(set from the training data by ``train_vqvae``), so a fixed error in the latent is a fixed
*relative* error in metres, the quantity AbsRel and delta<1.25 score. ``decode`` undoes it and
returns metres. Decoded normals are re-normalised to unit length, decoded segmentation is the
argmax class.

Quantizer: finite scalar quantization (FSQ, Mentzer et al. 2023). The encoder emits
``len(levels)`` channels per grid cell; each channel is bounded and rounded to one of ``levels[i]``
values, and the code id is the mixed-radix number of the rounded values, so the vocabulary is
``prod(levels)``. We chose FSQ over the paper's EMA codebook because it has no learned codebook
that can collapse (every id is a fixed point of the grid, so there are no dead codes to restart),
no codebook loss, commitment weight or EMA state to tune, and it is deterministic, which keeps
resumed training bit-identical. Usage is still measured (``codebook_usage_stats``): an encoder can
use few of the grid's cells, it just cannot lose them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedConfig, PreTrainedModel
from transformers import initialization as init
from transformers.utils import ModelOutput

from ..processing.visualization import decoded_to_arrays

INPUT_KINDS = ("rgb", "depth", "normal", "semseg", "feature")

# vocab size -> FSQ levels whose product is exactly that size, so ids fill [0, vocab_size) and match
# the vocab sizes of the modality registry. 8 and 4 levels (powers of two) make exact products;
# the FSQ paper's level sets (e.g. [8, 6, 5] for ~2^8) give only approximate sizes.
FSQ_LEVELS = {
    256: (8, 8, 4),
    512: (8, 8, 8),
    1024: (8, 8, 4, 4),
    2048: (8, 8, 8, 4),
    4096: (8, 8, 4, 4, 4),
    8192: (8, 8, 8, 4, 4),
    16384: (8, 8, 8, 8, 4),
    65536: (8, 8, 8, 8, 4, 4),
}

_DEFAULT_CHANNELS = {"rgb": 3, "depth": 1, "normal": 3}


class FourMVQVAEConfig(PreTrainedConfig):
    r"""Configuration of a :class:`FourMVQVAE` tokenizer.

    Args:
        modality: name of the 4M token modality this tokenizer produces (e.g. ``"tok_depth"``).
            Defaults to ``"tok_<input_kind>"``.
        input_kind: ``"rgb"``, ``"depth"``, ``"normal"``, ``"semseg"`` or ``"feature"``.
        target: the dense map it reads (dataset column / processor input, as ``ModalitySpec.target``).
            Defaults to ``input_kind``.
        num_channels: channels of the dense map (3 rgb / normal, 1 depth; required for feature
            maps; unused for semseg).
        num_classes: number of segmentation classes (semseg only).
        image_size: side of the (square) maps the tokenizer reads; inputs must have this size.
        patch_size: downsampling factor, a power of two (8 or 16 for images; 1 or 2 for feature
            maps already at grid resolution). The token grid is ``image_size // patch_size``.
        vocab_size: number of code ids; ``fsq_levels`` is looked up in ``FSQ_LEVELS`` from it.
        fsq_levels: explicit FSQ levels (each >= 3); ``vocab_size`` becomes their product.
        base_channels / max_channels: width at full resolution, doubled at each downsampling
            stage up to ``max_channels``.
        num_res_blocks: residual blocks per resolution stage.
        semseg_embed_dim: width of the learned class embedding that feeds segmentation maps in.
        depth_log_mean / depth_log_std: standardisation of log-depth (metres).
    """

    model_type = "fourm_vqvae"

    modality: str | None = None
    input_kind: str = "rgb"
    target: str | None = None
    num_channels: int | None = None
    num_classes: int | None = None
    image_size: int = 64
    patch_size: int = 8
    vocab_size: int | None = 1024
    fsq_levels: list[int] | None = None
    base_channels: int = 16
    max_channels: int = 128
    num_res_blocks: int = 1
    semseg_embed_dim: int = 16
    depth_log_mean: float = 0.0
    depth_log_std: float = 1.0

    def __post_init__(self, **kwargs):
        if self.input_kind not in INPUT_KINDS:
            raise ValueError(f"FourMVQVAEConfig.input_kind must be one of {INPUT_KINDS}, got {self.input_kind!r}.")
        if self.target is None:
            self.target = self.input_kind
        if self.modality is None:
            self.modality = f"tok_{self.target}"
        if self.num_channels is None:
            self.num_channels = _DEFAULT_CHANNELS.get(self.input_kind)
        if self.fsq_levels is None:
            if self.vocab_size not in FSQ_LEVELS:
                raise ValueError(
                    f"FourMVQVAEConfig: no FSQ level set for vocab_size={self.vocab_size}; pass fsq_levels "
                    f"explicitly or use one of {sorted(FSQ_LEVELS)}."
                )
            self.fsq_levels = list(FSQ_LEVELS[self.vocab_size])
        self.fsq_levels = [int(level) for level in self.fsq_levels]
        self.vocab_size = math.prod(self.fsq_levels)
        super().__post_init__(**kwargs)
        self._check()

    def _check(self):
        name = f"FourMVQVAEConfig({self.modality})"
        if any(level < 3 for level in self.fsq_levels):
            raise ValueError(f"{name}: every FSQ level must be >= 3, got fsq_levels={self.fsq_levels}.")
        if self.patch_size < 1 or self.patch_size & (self.patch_size - 1):
            raise ValueError(f"{name}: patch_size must be a power of two, got {self.patch_size}.")
        if self.image_size % self.patch_size != 0:
            raise ValueError(f"{name}: image_size ({self.image_size}) must be a multiple of patch_size ({self.patch_size}).")
        if self.input_kind == "semseg":
            if self.num_classes is None or self.num_classes < 2:
                raise ValueError(f"{name}: a semseg tokenizer needs num_classes >= 2, got {self.num_classes}.")
        elif self.num_channels is None or self.num_channels < 1:
            raise ValueError(f"{name}: a {self.input_kind} tokenizer needs num_channels >= 1, got {self.num_channels}.")
        if self.input_kind in _DEFAULT_CHANNELS and self.num_channels != _DEFAULT_CHANNELS[self.input_kind]:
            raise ValueError(
                f"{name}: {self.input_kind} maps have {_DEFAULT_CHANNELS[self.input_kind]} channels, got num_channels={self.num_channels}."
            )
        if self.depth_log_std <= 0:
            raise ValueError(f"{name}: depth_log_std must be > 0, got {self.depth_log_std}.")

    @property
    def grid_size(self) -> int:
        """Code ids per side of the token grid."""
        return self.image_size // self.patch_size

    @property
    def latent_dim(self) -> int:
        """Channels the encoder emits per grid cell (one per FSQ level)."""
        return len(self.fsq_levels)

    @property
    def stage_channels(self) -> list[int]:
        """Width at each resolution, full resolution first: ``log2(patch_size) + 1`` entries."""
        num_stages = int(math.log2(self.patch_size)) + 1
        return [min(self.base_channels * 2**i, self.max_channels) for i in range(num_stages)]


@dataclass
class FourMVQVAEOutput(ModelOutput):
    """Output of :meth:`FourMVQVAE.forward`.

    Args:
        loss: scalar reconstruction loss (in the normalised space, see the module docstring).
        reconstruction: the decoded map in natural units, as :meth:`FourMVQVAE.decode` returns it.
        prediction: raw decoder output in the normalised space, (B, C, H, W); class logits
            (B, num_classes, H, W) for semseg.
        ids: (B, h, w) int64 code ids.
        codebook_usage: fraction of the vocabulary used by ``ids`` in this batch.
        perplexity: exp(entropy) of the id histogram of this batch.
    """

    loss: torch.FloatTensor | None = None
    reconstruction: torch.Tensor | None = None
    prediction: torch.FloatTensor | None = None
    ids: torch.LongTensor | None = None
    codebook_usage: torch.FloatTensor | None = None
    perplexity: torch.FloatTensor | None = None


def codebook_usage_stats(ids: torch.Tensor, vocab_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Fraction of the ``vocab_size`` ids that occur in ``ids`` (any shape), and the perplexity
    ``exp(-sum p log p)`` of their histogram (1 when one id is used, ``vocab_size`` when all are used
    equally often)."""
    counts = torch.bincount(ids.reshape(-1), minlength=vocab_size).double()
    fraction_used = (counts > 0).double().mean()
    probs = counts / counts.sum().clamp_min(1)
    entropy = -(probs * probs.clamp_min(1e-30).log()).sum()
    return fraction_used.float(), entropy.exp().float()


class FiniteScalarQuantizer(nn.Module):
    """FSQ: bound each latent channel, round it to one of ``levels[i]`` values, read the rounded
    channels as digits of a mixed-radix number to get the id. No parameters.

    ``quantize`` maps latents (B, d, h, w) to codes (B, d, h, w) on the grid, scaled into [-1, 1],
    with a straight-through gradient; ``codes_to_ids`` / ``ids_to_codes`` convert to and from
    (B, h, w) int64 ids in ``[0, prod(levels))``.
    """

    def __init__(self, levels: list[int]):
        super().__init__()
        # Plain Python, not buffers: transformers' from_pretrained leaves non-persistent buffers
        # uninitialised, and these are fixed by the config anyway.
        self.level_counts = tuple(int(level) for level in levels)
        self.vocab_size = math.prod(self.level_counts)

    def _per_channel(self, values, like: torch.Tensor, dtype=torch.float32) -> torch.Tensor:
        """(d,) Python numbers -> a (1, d, 1, 1) tensor on ``like``'s device."""
        return torch.tensor(values, dtype=dtype, device=like.device).view(1, -1, 1, 1)

    def _levels(self, like: torch.Tensor) -> torch.Tensor:
        return self._per_channel(self.level_counts, like)

    def _half_levels(self, like: torch.Tensor) -> torch.Tensor:
        return self._per_channel([level // 2 for level in self.level_counts], like)

    def _radix(self, like: torch.Tensor) -> torch.Tensor:
        return self._per_channel([math.prod(self.level_counts[:i]) for i in range(len(self.level_counts))], like, torch.int64)

    def bound(self, latents: torch.Tensor) -> torch.Tensor:
        """Squash to ``(-L/2, L/2)`` for odd L and ``(-L/2, L/2 - 1)`` for even L, so that rounding
        gives exactly L integer values; 0 maps to 0."""
        levels = self._levels(latents)
        half_width = (levels - 1) * (1 - 1e-3) / 2
        offset = torch.where(levels % 2 == 0, 0.5, 0.0)
        shift = torch.atanh(offset / half_width)
        return torch.tanh(latents + shift) * half_width - offset

    def quantize(self, latents: torch.Tensor) -> torch.Tensor:
        bounded = self.bound(latents)
        rounded = bounded + (torch.round(bounded) - bounded).detach()  # straight-through estimator
        return rounded / self._half_levels(latents)

    def codes_to_ids(self, codes: torch.Tensor) -> torch.LongTensor:
        half = self._half_levels(codes)
        digits = torch.round(codes * half + half).long()
        return (digits * self._radix(codes)).sum(dim=1)

    def ids_to_codes(self, ids: torch.LongTensor) -> torch.Tensor:
        digits = (ids.unsqueeze(1) // self._radix(ids)) % self._radix(ids).new_tensor(self.level_counts).view(1, -1, 1, 1)
        half = self._half_levels(ids)
        return (digits.float() - half) / half


def _num_groups(channels: int) -> int:
    return next(groups for groups in (8, 4, 2, 1) if channels % groups == 0)


class ResidualBlock(nn.Module):
    """GroupNorm -> SiLU -> 3x3 conv, twice, plus the input. (B, C, H, W) -> (B, C, H, W)."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(_num_groups(channels), channels)
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.norm2 = nn.GroupNorm(_num_groups(channels), channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        residual = self.conv1(F.silu(self.norm1(hidden)))
        residual = self.conv2(F.silu(self.norm2(residual)))
        return hidden + residual


class VQVAEEncoder(nn.Module):
    """(B, in_channels, H, W) -> (B, latent_dim, H/p, W/p) with log2(p) stride-2 convolutions."""

    def __init__(self, config: FourMVQVAEConfig, in_channels: int):
        super().__init__()
        channels = config.stage_channels
        self.stem = nn.Conv2d(in_channels, channels[0], 3, padding=1)
        self.stages = nn.ModuleList()
        for stage in range(len(channels)):
            blocks = [ResidualBlock(channels[stage]) for _ in range(config.num_res_blocks)]
            if stage + 1 < len(channels):
                blocks.append(nn.Conv2d(channels[stage], channels[stage + 1], 3, stride=2, padding=1))
            self.stages.append(nn.Sequential(*blocks))
        self.norm_out = nn.GroupNorm(_num_groups(channels[-1]), channels[-1])
        self.proj_out = nn.Conv2d(channels[-1], config.latent_dim, 1)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        hidden = self.stem(pixels)
        for stage in self.stages:
            hidden = stage(hidden)
        return self.proj_out(F.silu(self.norm_out(hidden)))


class VQVAEDecoder(nn.Module):
    """(B, latent_dim, h, w) -> (B, out_channels, h*p, w*p): nearest upsampling + 3x3 convs."""

    def __init__(self, config: FourMVQVAEConfig, out_channels: int):
        super().__init__()
        channels = list(reversed(config.stage_channels))  # coarsest first
        self.proj_in = nn.Conv2d(config.latent_dim, channels[0], 3, padding=1)
        self.stages = nn.ModuleList()
        for stage in range(len(channels)):
            blocks = [ResidualBlock(channels[stage]) for _ in range(config.num_res_blocks)]
            if stage + 1 < len(channels):
                blocks += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(channels[stage], channels[stage + 1], 3, padding=1)]
            self.stages.append(nn.Sequential(*blocks))
        self.norm_out = nn.GroupNorm(_num_groups(channels[-1]), channels[-1])
        self.conv_out = nn.Conv2d(channels[-1], out_channels, 3, padding=1)

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        hidden = self.proj_in(codes)
        for stage in self.stages:
            hidden = stage(hidden)
        return self.conv_out(F.silu(self.norm_out(hidden)))


class FourMVQVAEPreTrainedModel(PreTrainedModel):
    config_class = FourMVQVAEConfig
    base_model_prefix = "vqvae"
    main_input_name = "inputs"

    @torch.no_grad()
    def _init_weights(self, module):
        # PyTorch's default conv init (the generic 0.02-normal init starves a conv stack of signal).
        if isinstance(module, nn.Conv2d):
            init.kaiming_uniform_(module.weight, a=math.sqrt(5))
            if module.bias is not None:
                bound = 1 / math.sqrt(module.weight[0].numel())
                init.uniform_(module.bias, -bound, bound)
        elif isinstance(module, nn.GroupNorm):
            init.ones_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            init.normal_(module.weight, mean=0.0, std=1.0)


class FourMVQVAE(FourMVQVAEPreTrainedModel):
    """A VQ-VAE tokenizer for one dense modality (see the module docstring for the per-kind units).

    Example::

        vqvae = FourMVQVAE(FourMVQVAEConfig(input_kind="depth", image_size=64, patch_size=8, vocab_size=1024))
        ids = vqvae.encode(depth_metres)          # (B, 1, 64, 64) float -> (B, 8, 8) int64
        depth = vqvae.decode(ids)                  # (B, 8, 8) int64 -> (B, 1, 64, 64) metres
    """

    def __init__(self, config: FourMVQVAEConfig):
        super().__init__(config)
        kind = config.input_kind
        if kind == "semseg":
            self.class_embedding = nn.Embedding(config.num_classes, config.semseg_embed_dim)
            in_channels, out_channels = config.semseg_embed_dim, config.num_classes
        else:
            in_channels = out_channels = config.num_channels
        self.encoder = VQVAEEncoder(config, in_channels)
        self.quantizer = FiniteScalarQuantizer(config.fsq_levels)
        self.decoder = VQVAEDecoder(config, out_channels)
        self.post_init()

    # ---- input checks ------------------------------------------------------------------------
    def _name(self) -> str:
        return f"{self.config.modality} ({self.config.input_kind} VQ-VAE)"

    def check_inputs(self, inputs: torch.Tensor) -> None:
        """Raise ``ValueError`` unless ``inputs`` is a valid batch in natural units for this kind."""
        config, name = self.config, self._name()
        if not isinstance(inputs, torch.Tensor):
            raise ValueError(f"{name}: inputs must be a torch.Tensor, got {type(inputs).__name__}.")
        size = config.image_size
        if config.input_kind == "semseg":
            if inputs.dtype.is_floating_point or inputs.dtype.is_complex or inputs.dtype == torch.bool:
                raise ValueError(f"{name}: semseg inputs must be integer class ids, got dtype {inputs.dtype}.")
            if inputs.dim() != 3:
                raise ValueError(f"{name}: semseg inputs must have shape (B, H, W), got {tuple(inputs.shape)}.")
            spatial = tuple(inputs.shape[1:])
        else:
            if not inputs.dtype.is_floating_point:
                raise ValueError(f"{name}: {config.input_kind} inputs must be a floating-point tensor, got dtype {inputs.dtype}.")
            if inputs.dim() != 4:
                raise ValueError(
                    f"{name}: inputs must have shape (B, {config.num_channels}, H, W), got {tuple(inputs.shape)}."
                )
            if inputs.shape[1] != config.num_channels:
                raise ValueError(
                    f"{name}: expected {config.num_channels} channel(s) (shape (B, {config.num_channels}, H, W)), "
                    f"got {inputs.shape[1]} in shape {tuple(inputs.shape)}."
                )
            spatial = tuple(inputs.shape[2:])
        if spatial != (size, size):
            raise ValueError(
                f"{name}: expected spatial size ({size}, {size}) (config.image_size, a multiple of patch_size "
                f"{config.patch_size}), got {spatial}."
            )
        if config.input_kind == "semseg":
            if inputs.numel() and (int(inputs.min()) < 0 or int(inputs.max()) >= config.num_classes):
                raise ValueError(
                    f"{name}: segmentation ids must lie in [0, {config.num_classes}) (num_classes), "
                    f"got values in [{int(inputs.min())}, {int(inputs.max())}]."
                )
            return
        if not torch.isfinite(inputs).all():
            raise ValueError(f"{name}: {config.input_kind} inputs contain NaN or infinite values.")
        if config.input_kind == "depth" and inputs.numel() and float(inputs.min()) <= 0:
            raise ValueError(f"{name}: depth must be > 0 metres everywhere, got a minimum of {float(inputs.min())}.")
        if config.input_kind in ("rgb", "normal") and inputs.numel() and float(inputs.abs().max()) > 1 + 1e-3:
            raise ValueError(
                f"{name}: {config.input_kind} inputs must lie in [-1, 1], got values up to {float(inputs.abs().max())} "
                "(rgb: scale uint8 images with x / 127.5 - 1; or use preprocess())."
            )

    def check_ids(self, ids: torch.Tensor) -> None:
        config, name = self.config, self._name()
        grid = config.grid_size
        if not isinstance(ids, torch.Tensor) or ids.dtype.is_floating_point or ids.dtype == torch.bool:
            raise ValueError(f"{name}: ids must be an integer torch.Tensor of shape (B, {grid}, {grid}).")
        if ids.dim() != 3 or tuple(ids.shape[1:]) != (grid, grid):
            raise ValueError(f"{name}: ids must have shape (B, {grid}, {grid}), got {tuple(ids.shape)}.")
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= config.vocab_size):
            raise ValueError(
                f"{name}: ids must lie in [0, {config.vocab_size}), got values in [{int(ids.min())}, {int(ids.max())}]."
            )

    # ---- natural units <-> normalised space ---------------------------------------------------
    def normalize(self, inputs: torch.Tensor) -> torch.Tensor:
        """Natural units -> what the encoder reads: (B, C_in, H, W) float."""
        kind = self.config.input_kind
        if kind == "depth":
            return (inputs.log() - self.config.depth_log_mean) / self.config.depth_log_std
        if kind == "semseg":
            return self.class_embedding(inputs.long()).permute(0, 3, 1, 2)
        return inputs

    def denormalize(self, prediction: torch.Tensor) -> torch.Tensor:
        """Decoder output -> natural units (see the module docstring for each kind)."""
        kind = self.config.input_kind
        if kind == "rgb":
            return prediction.clamp(-1, 1)
        if kind == "depth":
            return torch.exp(prediction * self.config.depth_log_std + self.config.depth_log_mean)
        if kind == "normal":
            return F.normalize(prediction, dim=1, eps=1e-6)
        if kind == "semseg":
            return prediction.argmax(dim=1)
        return prediction

    # ---- tokenizer API ------------------------------------------------------------------------
    def _encode_codes(self, inputs: torch.Tensor) -> torch.Tensor:
        latents = self.encoder(self.normalize(inputs))
        return self.quantizer.quantize(latents)

    def encode(self, inputs: torch.Tensor) -> torch.LongTensor:
        """Dense map in natural units -> code ids (B, h, w) int64, h = w = image_size // patch_size."""
        self.check_inputs(inputs)
        return self.quantizer.codes_to_ids(self._encode_codes(inputs))

    def decode(self, ids: torch.LongTensor) -> torch.Tensor:
        """Code ids (B, h, w) -> dense map in natural units: (B, 3, H, W) rgb in [-1, 1], (B, 1, H, W)
        depth in metres, (B, 3, H, W) unit normals, (B, H, W) int64 class ids, (B, C, H, W) features."""
        self.check_ids(ids)
        prediction = self.decoder(self.quantizer.ids_to_codes(ids.long()))
        return self.denormalize(prediction)

    def forward(self, inputs: torch.Tensor, return_loss: bool = True) -> FourMVQVAEOutput:
        """Encode, quantize and decode a batch; returns the loss, the reconstruction and the ids."""
        self.check_inputs(inputs)
        codes = self._encode_codes(inputs)
        prediction = self.decoder(codes)
        ids = self.quantizer.codes_to_ids(codes.detach())
        loss = self.reconstruction_loss(prediction, inputs) if return_loss else None
        fraction_used, perplexity = codebook_usage_stats(ids, self.config.vocab_size)
        return FourMVQVAEOutput(
            loss=loss,
            reconstruction=self.denormalize(prediction.detach()),
            prediction=prediction,
            ids=ids,
            codebook_usage=fraction_used,
            perplexity=perplexity,
        )

    def reconstruction_loss(self, prediction: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
        """Scalar loss between decoder output (normalised space / logits) and the natural-unit inputs."""
        kind = self.config.input_kind
        if kind == "semseg":
            return F.cross_entropy(prediction, inputs.long())
        target = self.normalize(inputs)
        loss = F.mse_loss(prediction, target)
        if kind == "feature":
            loss = loss + (1 - F.cosine_similarity(prediction, target, dim=1)).mean()
        return loss

    # ---- numpy helpers for the scene dataset --------------------------------------------------
    def preprocess(self, arrays) -> torch.Tensor:
        """Scene-dataset arrays -> an ``encode``-ready batch (see :func:`arrays_to_batch`), checked
        with :meth:`check_inputs` (so it must already have the configured size)."""
        batch = arrays_to_batch(arrays, self.config.input_kind, name=self._name())
        self.check_inputs(batch)
        return batch

    def postprocess(self, decoded: torch.Tensor) -> np.ndarray:
        """``decode`` output -> numpy arrays in the scene-dataset layout, stacked over the batch:
        rgb uint8 (B, H, W, 3); depth float32 (B, H, W); normal float32 (B, H, W, 3);
        semseg int64 (B, H, W); feature float32 (B, H, W, C)."""
        return decoded_to_arrays(decoded, self.config.input_kind)


def arrays_to_batch(arrays, input_kind: str, name: str = "VQ-VAE") -> torch.Tensor:
    """Scene-dataset arrays (channels last) -> a batch in ``encode``'s layout and natural units.

    ``arrays`` is one array / PIL image or a list / stacked array of them: rgb uint8 (H, W, 3) or
    PIL; depth float (H, W) metres; normal float (H, W, 3); semseg int (H, W); feature float
    (H, W, C). Returns (B, C, H, W) float32 (rgb scaled to [-1, 1]), or (B, H, W) int64 for semseg.
    No size or value checks (``FourMVQVAE.check_inputs`` does those).
    """
    per_sample_dims = {"rgb": 3, "depth": 2, "normal": 3, "semseg": 2, "feature": 3}[input_kind]
    if isinstance(arrays, (list, tuple)):
        arrays = np.stack([np.asarray(array) for array in arrays])
    else:
        arrays = np.asarray(arrays)
    if arrays.ndim == per_sample_dims:
        arrays = arrays[None]
    if arrays.ndim != per_sample_dims + 1:
        raise ValueError(
            f"{name}: {input_kind} arrays must have {per_sample_dims} dims per sample (channels last), "
            f"got an array of shape {arrays.shape}."
        )
    if input_kind == "semseg":
        if not np.issubdtype(arrays.dtype, np.integer):
            raise ValueError(f"{name}: semseg arrays must hold integer class ids, got dtype {arrays.dtype}.")
        return torch.from_numpy(arrays.astype(np.int64))
    if input_kind == "rgb":
        if arrays.dtype != np.uint8:
            raise ValueError(f"{name}: rgb arrays must be uint8 (H, W, 3), got dtype {arrays.dtype}.")
        arrays = arrays.astype(np.float32) / 127.5 - 1.0
    elif not np.issubdtype(arrays.dtype, np.floating):
        raise ValueError(f"{name}: {input_kind} arrays must be floating point, got dtype {arrays.dtype}.")
    arrays = np.ascontiguousarray(arrays, dtype=np.float32)
    if input_kind == "depth":
        return torch.from_numpy(arrays)[:, None]
    return torch.from_numpy(arrays).permute(0, 3, 1, 2).contiguous()


__all__ = [
    "arrays_to_batch",
    "FSQ_LEVELS",
    "FiniteScalarQuantizer",
    "FourMVQVAE",
    "FourMVQVAEConfig",
    "FourMVQVAEOutput",
    "FourMVQVAEPreTrainedModel",
    "codebook_usage_stats",
]
