"""A released 4M tokenizer as one modality of :class:`~fourm_hf.tokenization.processing_fourm.FourMProcessor`.

:class:`ReleasedModalityTokenizer` wraps a ``FourMViTVQVAE`` / ``FourMDiVAE`` (any model
``FourMTokenizerModel`` loads) and gives it the interface the processor uses for its VQ-VAEs:
maps in the processor's natural units in, code ids out, and back. It applies the reference's
per-modality input transforms (fixture README section 10; the reference's data transforms):

=========  ==================================  ==========================  ===============================
kind       processor map (natural units)        what the tokenizer reads    ``decode`` returns
=========  ==================================  ==========================  ===============================
rgb        [B, 3, S, S] in [-1, 1]              the same                    [B, 3, S, S] clamped to [-1, 1]
depth      [B, 1, S, S] metres                  truncated standardisation   [B, 1, S, S] standardised depth
                                                 per image (below)           (relative: larger = farther)
normal     [B, 3, S, S] unit vectors            the same ([-1, 1])          [B, 3, S, S] in [-1, 1]
semseg     [B, S, S] class ids                  the same                    [B, S, S] argmax class ids
feature    [B, 3, S, S] RGB in [-1, 1]          the feature grid of a       [B, C, h, w] features
                                                 vision model (tok_clip...)
=========  ==================================  ==========================  ===============================

Depth: the reference reads 16-bit PNGs in 1/512 m units scaled by 1/65535, then standardises each
image with the mean and (unbiased) variance of its middle 80 % of values:
``(d - mean) / sqrt(var + 1e-6)``; the same is done here from metres.

DiVAE decoding runs ``num_diffusion_steps`` DDIM steps (default 25; ``decode(..., num_diffusion_steps=,
generator=)`` overrides it per call).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from .feature_maps import VisionFeatureExtractor
from .visualization import colorize_depth, decoded_to_arrays, colorize_normals, colorize_semseg

MODALITY_TOKENIZER_FILE = "modality_tokenizer.json"
FEATURE_MODEL_FOLDER = "feature_model"
KINDS = ("rgb", "depth", "normal", "semseg", "feature")
# the processor map each kind reads (feature maps are computed from the RGB image)
KIND_TARGETS = {"rgb": "rgb", "depth": "depth", "normal": "normal", "semseg": "semseg", "feature": "rgb"}
# modality name prefix -> kind, for modalities named as in 4M
_MODALITY_KINDS = {"tok_rgb": "rgb", "tok_depth": "depth", "tok_normal": "normal", "tok_semseg": "semseg",
                   "tok_clip": "feature", "tok_dinov2": "feature", "tok_imagebind": "feature"}
DEPTH_UNITS_PER_METRE = 512.0 / 65535.0
DEPTH_TRUNCATION = 0.1


@dataclass
class ModalityTokenizerConfig:
    """What the processor reads about one modality tokenizer (as it does from ``FourMVQVAEConfig``)."""

    modality: str
    input_kind: str
    target: str
    image_size: int
    grid_size: int
    vocab_size: int
    num_classes: int | None = None
    num_diffusion_steps: int = 25


def modality_kind(modality: str) -> str | None:
    """The kind (``KINDS``) of a modality named as in 4M (``tok_depth`` -> ``"depth"``); None when the
    processor has no input map for it (edges, global embeddings are not prefixed here)."""
    return next((kind for prefix, kind in _MODALITY_KINDS.items() if modality.startswith(prefix)), None)


def truncated_depth_standardization(depth_metres: torch.Tensor, truncation: float = DEPTH_TRUNCATION) -> torch.Tensor:
    """[B, 1, H, W] metres -> per-image standardised depth (mean / variance of the middle values)."""
    depth = depth_metres.float() * DEPTH_UNITS_PER_METRE
    standardised = []
    for sample in depth:
        ordered = sample.reshape(-1).sort().values
        count = ordered.numel()
        middle = ordered[int(truncation * count) : int((1 - truncation) * count)]
        standardised.append((sample - middle.mean()) / torch.sqrt(middle.var() + 1e-6))
    return torch.stack(standardised)


class ReleasedModalityTokenizer(nn.Module):
    """A released tokenizer serving one processor modality (see the module docstring).

    Args:
        tokenizer: the loaded tokenizer model (``FourMTokenizerModel.from_pretrained(folder)``).
        modality: the 4M modality name (``"tok_depth"``, ``"tok_clip"``, ...).
        kind: ``"rgb"``, ``"depth"``, ``"normal"``, ``"semseg"`` or ``"feature"``; default from the
            modality name.
        image_size: the processor's crop size (a multiple of the tokenizer's patch size).
        feature_extractor: for ``"feature"``: the :class:`VisionFeatureExtractor` (or a local folder
            of a transformers vision model) that turns the RGB image into the feature grid.
        num_diffusion_steps: default DDIM steps when the tokenizer is a DiVAE.
    """

    is_modality_tokenizer = True

    def __init__(self, tokenizer: nn.Module, modality: str, kind: str | None = None, image_size: int = 224,
                 feature_extractor: VisionFeatureExtractor | str | os.PathLike | None = None, num_diffusion_steps: int = 25):
        super().__init__()
        kind = kind or modality_kind(modality)
        if kind not in KINDS:
            raise ValueError(f"ReleasedModalityTokenizer({modality!r}): kind must be one of {KINDS}, got {kind!r}.")
        self.tokenizer = tokenizer.eval()
        tokenizer_config = tokenizer.config
        self.is_diffusion = hasattr(tokenizer, "noise_scheduler")
        if isinstance(feature_extractor, (str, os.PathLike)):
            feature_extractor = VisionFeatureExtractor.from_pretrained(feature_extractor)
        self.feature_extractor = feature_extractor
        patch = self._check_kind(modality, kind, tokenizer_config, image_size)
        if int(num_diffusion_steps) < 1:
            raise ValueError(f"ReleasedModalityTokenizer({modality!r}): num_diffusion_steps must be >= 1, got {num_diffusion_steps}.")
        self.config = ModalityTokenizerConfig(
            modality=modality, input_kind=kind, target=KIND_TARGETS[kind], image_size=int(image_size),
            grid_size=int(image_size) // patch, vocab_size=int(tokenizer_config.codebook_size),
            num_classes=tokenizer_config.n_labels if kind == "semseg" else None, num_diffusion_steps=int(num_diffusion_steps),
        )

    def _check_kind(self, modality: str, kind: str, tokenizer_config, image_size: int) -> int:
        """Check the tokenizer fits ``kind``; returns the image pixels per token side."""
        name = f"ReleasedModalityTokenizer({modality!r})"
        expected_channels = {"rgb": 3, "normal": 3, "depth": 1}.get(kind)
        if expected_channels is not None and tokenizer_config.n_channels != expected_channels:
            raise ValueError(f"{name}: a {kind} tokenizer reads {expected_channels} channel(s), this one {tokenizer_config.n_channels}.")
        if kind == "semseg" and not tokenizer_config.n_labels:
            raise ValueError(f"{name}: a semseg tokenizer needs n_labels (a class-embedding VQ-VAE).")
        patch = tokenizer_config.patch_size
        if kind == "feature":
            if self.feature_extractor is None:
                raise ValueError(f"{name}: a feature tokenizer needs feature_extractor= (a local transformers vision model folder).")
            if tokenizer_config.patch_proj:
                raise ValueError(f"{name}: a feature tokenizer has patch_proj false; this one patches its input.")
            if self.feature_extractor.feature_dim != tokenizer_config.n_channels:
                raise ValueError(
                    f"{name}: the vision model gives {self.feature_extractor.feature_dim}-d features, the tokenizer reads "
                    f"{tokenizer_config.n_channels}."
                )
            patch = self.feature_extractor.patch_size
        if image_size % patch:
            raise ValueError(f"{name}: image_size {image_size} is not a multiple of the patch size {patch}.")
        return patch

    # ---- processor interface --------------------------------------------------------------------
    def encode(self, batch: torch.Tensor) -> torch.LongTensor:
        """A processor map batch (module docstring) -> ids [B, grid, grid]."""
        kind = self.config.input_kind
        if kind == "depth":
            batch = truncated_depth_standardization(batch)
        elif kind == "feature":
            batch = self.feature_extractor(batch)
        return self.tokenizer.encode(batch)

    def decode(self, ids: torch.LongTensor, num_diffusion_steps: int | None = None, generator=None) -> torch.Tensor:
        """ids [B, grid, grid] -> the map in the units of the module docstring's last column."""
        if self.is_diffusion:
            steps = self.config.num_diffusion_steps if num_diffusion_steps is None else int(num_diffusion_steps)
            output = self.tokenizer.decode(ids, num_steps=steps, generator=generator, progress=False)
        else:
            output = self.tokenizer.decode(ids)
        kind = self.config.input_kind
        if kind == "semseg":
            return output.argmax(dim=1)
        if kind in ("rgb", "normal"):
            return output.clamp(-1, 1)
        return output

    def postprocess(self, decoded: torch.Tensor) -> np.ndarray:
        """``decode`` output -> numpy: rgb uint8 (B, S, S, 3); depth float32 (B, S, S) standardised;
        normal float32 (B, S, S, 3) in [-1, 1]; semseg int64 (B, S, S); feature float32 (B, h, w, C)."""
        return decoded_to_arrays(decoded, self.config.input_kind)

    def render(self, array: np.ndarray) -> list | None:
        """``postprocess`` arrays -> PIL-ready uint8 (H, W, 3) arrays for viewing (None for features)."""
        kind = self.config.input_kind
        if kind == "rgb":
            return list(array)
        if kind == "depth":  # standardised depth -> a positive monotone stand-in for the colour ramp
            return [colorize_depth(np.exp(sample)) for sample in array]
        if kind == "normal":
            return [colorize_normals(sample) for sample in array]
        if kind == "semseg":
            return [colorize_semseg(sample, self.config.num_classes) for sample in array]
        return None

    # ---- save / load ------------------------------------------------------------------------------
    def save_pretrained(self, folder: str | os.PathLike) -> None:
        """The tokenizer (our format), ``modality_tokenizer.json`` and the feature model if any."""
        folder = os.fspath(folder)
        self.tokenizer.save_pretrained(folder)
        if self.feature_extractor is not None:
            self.feature_extractor.save_pretrained(os.path.join(folder, FEATURE_MODEL_FOLDER))
        settings = asdict(self.config)
        path = os.path.join(folder, MODALITY_TOKENIZER_FILE)
        with open(path + ".tmp", "w", encoding="utf-8") as handle:
            json.dump({key: settings[key] for key in ("modality", "input_kind", "image_size", "num_diffusion_steps")}, handle, indent=2)
        os.replace(path + ".tmp", path)

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike) -> "ReleasedModalityTokenizer":
        from .released import FourMTokenizerModel

        folder = os.fspath(folder)
        with open(os.path.join(folder, MODALITY_TOKENIZER_FILE), encoding="utf-8") as handle:
            settings = json.load(handle)
        feature_folder = os.path.join(folder, FEATURE_MODEL_FOLDER)
        extractor = VisionFeatureExtractor.from_pretrained(feature_folder) if os.path.isdir(feature_folder) else None
        return cls(FourMTokenizerModel.from_pretrained(folder), settings["modality"], settings["input_kind"],
                   settings["image_size"], extractor, settings.get("num_diffusion_steps", 25))


__all__ = ["ModalityTokenizerConfig", "ReleasedModalityTokenizer", "modality_kind", "truncated_depth_standardization"]
