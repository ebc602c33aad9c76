"""Feature maps from an image with a transformers vision model (CLIP / DINOv2 / ImageBind-style).

The released 4M feature tokenizers read the patch-token grid of a frozen vision network (fixture
README section 10): CLIP-B/16 -> ``[B, 512, 14, 14]`` at 224 px (the last layer's tokens after
``post_layernorm`` and the visual projection), DINOv2-B/14 -> ``[B, 768, 16, 16]`` (the normed patch
tokens), ImageBind-H/14 likewise. :class:`VisionFeatureExtractor` computes such a grid with a model
the user names (a local folder saved by transformers), so feature modalities become processor
inputs::

    extractor = VisionFeatureExtractor.from_pretrained("clip-vit-base-patch16")   # a local folder
    features = extractor(rgb)   # rgb [B, 3, 224, 224] in [-1, 1] -> [B, 512, 14, 14]

The model's own normalisation (``image_mean`` / ``image_std`` of the folder's
``preprocessor_config.json``; else CLIP's or ImageNet's by model type) is applied to the [0, 1] image.
"""

from __future__ import annotations

import json
import os

import torch
import transformers
from torch import nn
from transformers import AutoConfig, AutoModel

CLIP_MEAN, CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class VisionFeatureExtractor(nn.Module):
    """A transformers vision model turned into an image -> patch-feature-grid function.

    Args:
        model: a loaded transformers vision model (``CLIPVisionModel``, ``CLIPVisionModelWithProjection``,
            ``CLIPModel``, ``Dinov2Model``, or any model returning ``last_hidden_state`` with the
            patch tokens last).
        image_mean / image_std: the normalisation the model expects for [0, 1] RGB.
    """

    def __init__(self, model: nn.Module, image_mean=None, image_std=None):
        super().__init__()
        self.model = model.eval().requires_grad_(False)
        default_mean, default_std = _default_normalisation(model.config)
        self.image_mean = tuple(float(v) for v in (image_mean or default_mean))
        self.image_std = tuple(float(v) for v in (image_std or default_std))

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike) -> "VisionFeatureExtractor":
        """Load the vision model in ``folder`` (and its ``preprocessor_config.json`` normalisation if any)."""
        folder = os.fspath(folder)
        if not os.path.isfile(os.path.join(folder, "config.json")):
            raise ValueError(f"VisionFeatureExtractor: {folder!r} is not a folder with a transformers config.json.")
        config = AutoConfig.from_pretrained(folder)
        # the saved class (e.g. CLIPVisionModelWithProjection keeps its projection; AutoModel would drop it)
        architecture = getattr(transformers, (config.architectures or [""])[0], None)
        loader = architecture if architecture is not None and hasattr(architecture, "from_pretrained") else AutoModel
        model = loader.from_pretrained(folder, config=config)
        mean = std = None
        preprocessor = os.path.join(folder, "preprocessor_config.json")
        if os.path.isfile(preprocessor):
            with open(preprocessor, encoding="utf-8") as handle:
                settings = json.load(handle)
            mean, std = settings.get("image_mean"), settings.get("image_std")
        return cls(model, mean, std)

    def save_pretrained(self, folder: str | os.PathLike) -> None:
        """The model (``save_pretrained``) and its normalisation (``preprocessor_config.json``)."""
        self.model.save_pretrained(folder)
        with open(os.path.join(folder, "preprocessor_config.json"), "w", encoding="utf-8") as handle:
            json.dump({"image_mean": list(self.image_mean), "image_std": list(self.image_std)}, handle, indent=2)

    @property
    def patch_size(self) -> int:
        return int(_vision_config(self.model.config).patch_size)

    @property
    def feature_dim(self) -> int:
        """Channels of the returned grid (the projection width for CLIP models with a projection)."""
        if hasattr(self.model, "visual_projection"):
            return int(self.model.visual_projection.out_features)
        return int(_vision_config(self.model.config).hidden_size)

    @torch.no_grad()
    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        """rgb [B, 3, H, W] in [-1, 1] (H, W multiples of the patch size) -> features [B, C, H/p, W/p]."""
        if rgb.dim() != 4 or rgb.shape[1] != 3:
            raise ValueError(f"VisionFeatureExtractor: expected RGB of shape (B, 3, H, W), got {tuple(rgb.shape)}.")
        height, width = rgb.shape[2] // self.patch_size, rgb.shape[3] // self.patch_size
        if rgb.shape[2] % self.patch_size or rgb.shape[3] % self.patch_size:
            raise ValueError(f"VisionFeatureExtractor: image size {tuple(rgb.shape[2:])} is not a multiple of patch size {self.patch_size}.")
        mean = torch.tensor(self.image_mean, device=rgb.device).view(1, 3, 1, 1)
        std = torch.tensor(self.image_std, device=rgb.device).view(1, 3, 1, 1)
        pixels = ((rgb.float() + 1) / 2 - mean) / std
        tokens = self._patch_tokens(pixels, height * width)
        return tokens.transpose(1, 2).reshape(rgb.shape[0], -1, height, width)

    def _patch_tokens(self, pixels: torch.Tensor, num_patches: int) -> torch.Tensor:
        """[B, num_patches, C]: the last layer's patch tokens as the 4M feature tokenizers read them."""
        model = self.model
        vision = getattr(model, "vision_model", None)
        if vision is not None:  # CLIP family: post_layernorm on every token, then the projection if any
            hidden = vision(pixel_values=pixels, interpolate_pos_encoding=True).last_hidden_state
            hidden = vision.post_layernorm(hidden)
            if hasattr(model, "visual_projection"):
                hidden = model.visual_projection(hidden)
            return hidden[:, -num_patches:]
        hidden = model(pixel_values=pixels).last_hidden_state  # DINOv2: already layer-normed
        if hidden.shape[1] < num_patches:
            raise ValueError(f"VisionFeatureExtractor: the model returned {hidden.shape[1]} tokens for {num_patches} patches.")
        return hidden[:, -num_patches:]


def _vision_config(config):
    return getattr(config, "vision_config", None) or config


def _default_normalisation(config) -> tuple[tuple, tuple]:
    model_type = getattr(config, "model_type", "")
    return (CLIP_MEAN, CLIP_STD) if model_type.startswith("clip") else (IMAGENET_MEAN, IMAGENET_STD)


__all__ = ["VisionFeatureExtractor"]
