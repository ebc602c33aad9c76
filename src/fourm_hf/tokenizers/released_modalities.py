"""A released 4M tokenizer as one modality of :class:`~fourm_hf.processing.processing_fourm.FourMProcessor`.

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
vector     [B, C] (``vectors=``): a global      the vector as a 1x1 "image" [B, C] the vector
           embedding (tok_dinov2_global, ...)   [B, C, 1, 1] (MLP tokenizer)
pose       [B, 23, 3, 3] or [B, 207]            the 207 rotation entries,   [B, 23, 3, 3]
           SMPL body-pose rotations              flattened, [B, 207, 1, 1]
edge       [B, S, S] (``edges=``) in [0, 1]:    [B, 1, S, S] in [-1, 1]     [B, S, S] in [0, 1]
           SAM / Canny edges (tok_*_edge)        (2 * edge - 1, assumed)
instance   decode only: the 16 ids of a SAM     -                           [B, 1, 64, 64] raw map
           instance mask (4M-21's sam_instance)                              (``processing/sequence_tokens.py``)
=========  ==================================  ==========================  ===============================

Vector kinds (the released bottleneck-MLP tokenizers, ``FourMMLPVQVAE``) give ``num_codebooks`` ids
per sample, head-major: ``config.num_tokens`` ids (16 for the global embeddings, 8 for poses) instead
of ``grid_size ** 2``.

A feature tokenizer built with ``grid_size=`` instead of a ``feature_extractor`` is decode-only
(``config.can_encode`` False): ids -> features on that grid; the processor's ``images=`` skips it.

Depth: the reference reads 16-bit PNGs in 1/512 m units scaled by 1/65535, then standardises each
image with the mean and (unbiased) variance of its middle 80 % of values:
``(d - mean) / sqrt(var + 1e-6)``; the same is done here from metres.

Edges: the fixture README gives no normalisation for the released edge tokenizer (``edge_8k_224-512``, a
1-channel DiVAE serving ``tok_sam_edge`` and ``tok_canny_edge``). This module assumes the RGB convention of
the other DiVAEs: an edge map in [0, 1] (1 = edge) is read as ``2 * edge - 1`` and decoded back with
``(x + 1) / 2`` clamped to [0, 1]. Edge maps come in the processor's ``edges=`` argument at the processor's
size (they are not cropped) and are rendered as grayscale (``"L"``) images.

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

from ..processing.visualization import colorize_depth, colorize_normals, colorize_semseg, decoded_to_arrays
from .feature_maps import VisionFeatureExtractor
from .released import FourMTokenizerModel

MODALITY_TOKENIZER_FILE = "modality_tokenizer.json"
FEATURE_MODEL_FOLDER = "feature_model"
KINDS = ("rgb", "depth", "normal", "semseg", "feature", "vector", "pose", "edge", "instance")
VECTOR_KINDS = ("vector", "pose")
# the processor input each kind reads (feature maps are computed from the RGB image; vectors come in
# the processor's ``vectors=`` argument)
KIND_TARGETS = {"rgb": "rgb", "depth": "depth", "normal": "normal", "semseg": "semseg", "feature": "rgb",
                "vector": "vector", "pose": "vector", "edge": "edge", "instance": "instance"}
# modality name prefix -> kind, for modalities named as in 4M (the longest matching prefix wins)
_MODALITY_KINDS = {"tok_rgb": "rgb", "tok_depth": "depth", "tok_normal": "normal", "tok_semseg": "semseg",
                   "tok_clip": "feature", "tok_dinov2": "feature", "tok_imagebind": "feature",
                   "tok_dinov2_global": "vector", "tok_imagebind_global": "vector", "tok_pose": "pose",
                   "human_poses": "pose", "tok_sam_edge": "edge", "tok_canny_edge": "edge", "sam_instance": "instance"}
POSE_SHAPE = (23, 3, 3)  # SMPL body pose: 23 joint rotation matrices
MLP_MODEL_TYPE = "fourm_mlp_vqvae"
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
    num_tokens: int | None = None  # ids per sample; None = grid_size ** 2
    can_encode: bool = True  # False: a decode-only feature tokenizer (no vision model to compute the features)

    def __post_init__(self):
        if self.num_tokens is None:
            self.num_tokens = self.grid_size**2


def modality_kind(modality: str) -> str | None:
    """The kind (``KINDS``) of a modality named as in 4M, by its longest known prefix (``tok_depth`` ->
    ``"depth"``, ``tok_dinov2_global`` -> ``"vector"``, ``tok_sam_edge`` -> ``"edge"``); None when unknown."""
    matches = [prefix for prefix in _MODALITY_KINDS if modality.startswith(prefix)]
    return _MODALITY_KINDS[max(matches, key=len)] if matches else None


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
        kind: one of ``KINDS`` (``"rgb"``, ``"depth"``, ..., ``"edge"``); default from the modality name.
        image_size: the processor's crop size (a multiple of the tokenizer's patch size).
        feature_extractor: for ``"feature"``: the :class:`VisionFeatureExtractor` (or a local folder
            of a transformers vision model) that turns the RGB image into the feature grid.
        grid_size: for ``"feature"`` without ``feature_extractor``: the token grid side; the tokenizer is
            then decode-only (``config.can_encode`` False: ids -> features, e.g. ImageBind, which has no
            transformers model to compute its features from the image).
        num_diffusion_steps: default DDIM steps when the tokenizer is a DiVAE.
    """

    is_modality_tokenizer = True

    def __init__(self, tokenizer: nn.Module, modality: str, kind: str | None = None, image_size: int = 224,
                 feature_extractor: VisionFeatureExtractor | str | os.PathLike | None = None, num_diffusion_steps: int = 25,
                 grid_size: int | None = None):
        super().__init__()
        kind = kind or _default_kind(modality, tokenizer)
        if kind not in KINDS:
            raise ValueError(f"ReleasedModalityTokenizer({modality!r}): kind must be one of {KINDS}, got {kind!r}.")
        self.tokenizer = tokenizer.eval()
        tokenizer_config = tokenizer.config
        self.is_diffusion = hasattr(tokenizer, "noise_scheduler")
        if isinstance(feature_extractor, (str, os.PathLike)):
            feature_extractor = VisionFeatureExtractor.from_pretrained(feature_extractor)
        self.feature_extractor = feature_extractor
        self._decode_only_grid = None if grid_size is None else int(grid_size)
        is_vector = kind in VECTOR_KINDS
        patch = self._check_vector_kind(modality, kind, tokenizer_config) if is_vector else self._check_kind(
            modality, kind, tokenizer_config, image_size)
        if int(num_diffusion_steps) < 1:
            raise ValueError(f"ReleasedModalityTokenizer({modality!r}): num_diffusion_steps must be >= 1, got {num_diffusion_steps}.")
        self.config = ModalityTokenizerConfig(
            modality=modality, input_kind=kind, target=KIND_TARGETS[kind], image_size=int(image_size),
            grid_size=1 if is_vector else int(image_size) // patch, vocab_size=int(tokenizer_config.codebook_size),
            num_classes=tokenizer_config.n_labels if kind == "semseg" else None, num_diffusion_steps=int(num_diffusion_steps),
            num_tokens=int(tokenizer_config.num_codebooks) if is_vector else None,
            can_encode=not (kind == "feature" and self.feature_extractor is None),
        )

    @property
    def token_shape(self) -> tuple[int, ...]:
        """The shape of one sample's ids as the tokenizer reads them: (grid, grid), or (H, 1, 1) for vectors."""
        if self.config.input_kind in VECTOR_KINDS:
            return (self.config.num_tokens, 1, 1)
        return (self.config.grid_size, self.config.grid_size)

    @property
    def vector_shape(self) -> tuple[int, ...]:
        """One sample's vector for the vector kinds: (C,), or (23, 3, 3) for poses."""
        if self.config.input_kind == "pose":
            return POSE_SHAPE
        return (int(self.tokenizer.config.n_channels),)

    def _check_vector_kind(self, modality: str, kind: str, tokenizer_config) -> int:
        """Check an MLP tokenizer serves a vector kind (and a pose tokenizer reads 23 x 3 x 3 values)."""
        name = f"ReleasedModalityTokenizer({modality!r})"
        if getattr(tokenizer_config, "model_type", None) != MLP_MODEL_TYPE:
            raise ValueError(f"{name}: the {kind} kind needs a bottleneck-MLP tokenizer (FourMMLPVQVAE), got "
                             f"{type(self.tokenizer).__name__}.")
        if kind == "pose" and tokenizer_config.n_channels != int(np.prod(POSE_SHAPE)):
            raise ValueError(f"{name}: a pose tokenizer reads {int(np.prod(POSE_SHAPE))} values (23 x 3 x 3 rotations), "
                             f"this one {tokenizer_config.n_channels}.")
        return 1

    def _check_kind(self, modality: str, kind: str, tokenizer_config, image_size: int) -> int:
        """Check the tokenizer fits ``kind``; returns the image pixels per token side."""
        name = f"ReleasedModalityTokenizer({modality!r})"
        if getattr(tokenizer_config, "model_type", None) == MLP_MODEL_TYPE:
            raise ValueError(f"{name}: a bottleneck-MLP tokenizer tokenizes one vector per sample; give kind "
                             f"'vector' or 'pose', not {kind!r}.")
        expected_channels = {"rgb": 3, "normal": 3, "depth": 1, "edge": 1, "instance": 1}.get(kind)
        if expected_channels is not None and tokenizer_config.n_channels != expected_channels:
            raise ValueError(f"{name}: {'an' if kind == 'edge' else 'a'} {kind} tokenizer reads {expected_channels} channel(s), this one {tokenizer_config.n_channels}.")
        if kind == "semseg" and not tokenizer_config.n_labels:
            raise ValueError(f"{name}: a semseg tokenizer needs n_labels (a class-embedding VQ-VAE).")
        patch = tokenizer_config.patch_size
        if kind == "feature":
            if self.feature_extractor is None and self._decode_only_grid is None:
                raise ValueError(f"{name}: a feature tokenizer needs feature_extractor= (a local transformers vision model "
                                 "folder), or grid_size= for a decode-only tokenizer.")
            if tokenizer_config.patch_proj:
                raise ValueError(f"{name}: a feature tokenizer has patch_proj false; this one patches its input.")
            if self.feature_extractor is None:  # decode-only: the grid is given
                if self._decode_only_grid < 1 or image_size % self._decode_only_grid:
                    raise ValueError(f"{name}: grid_size {self._decode_only_grid} does not divide image_size {image_size}.")
                return image_size // self._decode_only_grid
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
    def prepare_vectors(self, value, where: str | None = None) -> torch.Tensor:
        """A vector kind's input (one sample ``vector_shape`` or a batch ``(B, *vector_shape)``; a pose may
        also come flattened, (207,) / (B, 207)) -> float32 [B, C]. Anything else is a ValueError."""
        where = where or f"vectors[{self.config.modality!r}]"
        if self.config.input_kind not in VECTOR_KINDS:
            raise ValueError(f"{where}: {self.config.modality!r} is a {self.config.input_kind} tokenizer; vectors= is for "
                             f"the vector kinds {VECTOR_KINDS}.")
        if isinstance(value, (list, tuple)) and value and isinstance(value[0], torch.Tensor):
            value = torch.stack(list(value))
        array = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
        if array.dtype == object or not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
            raise ValueError(f"{where}: expected real numbers, got dtype {array.dtype}.")
        shape, flat = self.vector_shape, (int(np.prod(self.vector_shape)),)
        for one in {shape, flat}:
            if array.shape == one:
                array = array[None]
        if array.ndim < 2 or array.shape[0] < 1 or (array.shape[1:] != shape and array.shape[1:] != flat):
            expected = " or ".join(f"{s} / (B, {', '.join(map(str, s))})" for s in dict.fromkeys([shape, flat]))
            raise ValueError(f"{where}: expected shape {expected}, got {array.shape}.")
        if not np.isfinite(array).all():
            raise ValueError(f"{where}: the vector holds NaN or infinite values.")
        return torch.from_numpy(np.ascontiguousarray(array.reshape(array.shape[0], -1), dtype=np.float32))

    def prepare_edges(self, value, where: str | None = None) -> torch.Tensor:
        """An edge map in [0, 1] (one sample (S, S) or a batch (B, S, S), at the processor's size S; a list of
        samples is stacked) -> float32 [B, 1, S, S]. Anything else is a ValueError."""
        where = where or f"edges[{self.config.modality!r}]"
        if self.config.input_kind != "edge":
            raise ValueError(f"{where}: {self.config.modality!r} is a {self.config.input_kind} tokenizer; edges= is for "
                             "edge tokenizers (tok_sam_edge, tok_canny_edge).")
        if isinstance(value, (list, tuple)):
            value = [v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else np.asarray(v) for v in value]
            if len({v.shape for v in value}) > 1:
                raise ValueError(f"{where}: the samples have different shapes {[v.shape for v in value]}.")
            value = np.stack(value) if value else np.zeros((0,))
        array = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
        if array.dtype == object or not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)
                                         or array.dtype == bool):
            raise ValueError(f"{where}: expected real numbers in [0, 1], got dtype {array.dtype}.")
        size = self.config.image_size
        if array.shape == (size, size):
            array = array[None]
        if array.ndim != 3 or array.shape[0] < 1 or array.shape[1:] != (size, size):
            raise ValueError(f"{where}: expected an edge map of shape ({size}, {size}) or (B, {size}, {size}) (the "
                             f"processor's size, not cropped), got {array.shape}.")
        array = array.astype(np.float32)
        if not np.isfinite(array).all() or array.min() < 0 or array.max() > 1:
            raise ValueError(f"{where}: edge values must lie in [0, 1], got [{array.min()}, {array.max()}].")
        return torch.from_numpy(np.ascontiguousarray(array[:, None]))

    def encode(self, batch: torch.Tensor) -> torch.LongTensor:
        """A processor map batch (module docstring) -> ids [B, grid, grid]; vectors [B, C] -> [B, H, 1, 1]."""
        kind = self.config.input_kind
        if kind in VECTOR_KINDS:
            return self.tokenizer.encode(batch.reshape(batch.shape[0], -1).float())
        if kind == "depth":
            batch = truncated_depth_standardization(batch)
        elif kind == "edge":  # [0, 1] -> [-1, 1] (module docstring)
            batch = batch.float() * 2.0 - 1.0
        elif kind == "feature":
            if self.feature_extractor is None:
                raise ValueError(f"ReleasedModalityTokenizer({self.config.modality!r}) is decode-only: it has no "
                                 "feature_extractor to compute the features from the image.")
            batch = self.feature_extractor(batch)
        return self.tokenizer.encode(batch)

    def decode(self, ids: torch.LongTensor, num_diffusion_steps: int | None = None, generator=None) -> torch.Tensor:
        """ids [B, *token_shape] -> the map (or vector) in the units of the module docstring's last column."""
        if self.config.input_kind in VECTOR_KINDS:
            return self.tokenizer.decode(ids.reshape(ids.shape[0], -1, 1, 1))[:, :, 0, 0]
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
        if kind == "edge":
            return ((output[:, 0] + 1.0) / 2.0).clamp(0, 1)
        return output

    def postprocess(self, decoded: torch.Tensor) -> np.ndarray:
        """``decode`` output -> numpy: rgb uint8 (B, S, S, 3); depth float32 (B, S, S) standardised;
        normal float32 (B, S, S, 3) in [-1, 1]; semseg int64 (B, S, S); feature float32 (B, h, w, C);
        vector float32 (B, C); pose float32 (B, 23, 3, 3); edge float32 (B, S, S) in [0, 1]."""
        kind = self.config.input_kind
        if kind in VECTOR_KINDS:
            vectors = decoded.detach().cpu().float().numpy()
            return vectors.reshape(vectors.shape[0], *self.vector_shape)
        if kind == "edge":
            return decoded.detach().cpu().float().numpy()
        return decoded_to_arrays(decoded, kind)

    def render(self, array: np.ndarray) -> list | None:
        """``postprocess`` arrays -> PIL-ready uint8 (H, W, 3) arrays for viewing, (H, W) grayscale for edges
        (None for features and vectors)."""
        kind = self.config.input_kind
        if kind == "rgb":
            return list(array)
        if kind == "depth":  # standardised depth -> a positive monotone stand-in for the colour ramp
            return [colorize_depth(np.exp(sample)) for sample in array]
        if kind == "normal":
            return [colorize_normals(sample) for sample in array]
        if kind == "edge":
            return [np.round(sample * 255.0).astype(np.uint8) for sample in array]
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
        keys = ("modality", "input_kind", "image_size", "num_diffusion_steps") + (() if settings["can_encode"] else ("grid_size",))
        path = os.path.join(folder, MODALITY_TOKENIZER_FILE)
        with open(path + ".tmp", "w", encoding="utf-8") as handle:
            json.dump({key: settings[key] for key in keys}, handle, indent=2)
        os.replace(path + ".tmp", path)

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike) -> "ReleasedModalityTokenizer":
        folder = os.fspath(folder)
        with open(os.path.join(folder, MODALITY_TOKENIZER_FILE), encoding="utf-8") as handle:
            settings = json.load(handle)
        feature_folder = os.path.join(folder, FEATURE_MODEL_FOLDER)
        extractor = VisionFeatureExtractor.from_pretrained(feature_folder) if os.path.isdir(feature_folder) else None
        return cls(FourMTokenizerModel.from_pretrained(folder), settings["modality"], settings["input_kind"],
                   settings["image_size"], extractor, settings.get("num_diffusion_steps", 25),
                   settings.get("grid_size") if extractor is None else None)


def _default_kind(modality: str, tokenizer: nn.Module) -> str | None:
    """The kind a modality name implies (:func:`modality_kind`); an MLP tokenizer is a vector kind whatever its name."""
    kind = modality_kind(modality)
    if getattr(tokenizer.config, "model_type", None) == MLP_MODEL_TYPE and kind not in VECTOR_KINDS:
        kind = "pose" if "pose" in modality else "vector"
    return kind


__all__ = ["ModalityTokenizerConfig", "ReleasedModalityTokenizer", "modality_kind", "truncated_depth_standardization"]
