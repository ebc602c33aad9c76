"""``clip``: the patch-grid feature map of a vision tower (CLIP, SigLIP, DINOv2, ViT...)."""

from __future__ import annotations

import numpy as np

from ..base import Labeller


class FeatureLabeller(Labeller):
    """Patch feature map of a vision tower through ``AutoModel`` (last hidden state, prefix tokens dropped)."""

    task = "image feature map"

    def __init__(self, model_id: str, device: str = "cpu", batch_size: int = 8, column: str = "clip", dtype: str = "float16"):
        from transformers import AutoImageProcessor, AutoModel

        if dtype not in ("float16", "float32"):
            raise ValueError(f"{column}: feature dtype must be 'float16' or 'float32', got {dtype!r}")
        try:
            model = AutoModel.from_pretrained(model_id)
        except (OSError, ValueError, KeyError) as error:
            raise ValueError(f"{column}: cannot load model {model_id!r} (expected a local folder or Hub id of a vision model): {error}") from error
        if getattr(model, "main_input_name", None) != "pixel_values" and hasattr(model, "vision_model"):
            model = model.vision_model  # e.g. a full CLIP / SigLIP model: keep its vision tower
            model.main_input_name = "pixel_values"
        if getattr(model, "main_input_name", None) != "pixel_values":
            raise ValueError(
                f"{column}: model {model_id!r} is a {type(model).__name__}, not a vision model; the {self.task} labeller "
                "expects a vision tower taking pixel_values (CLIP, SigLIP, DINOv2, ViT, ...)"
            )
        try:
            self.processor = AutoImageProcessor.from_pretrained(model_id)
        except (OSError, ValueError) as error:
            raise ValueError(f"{column}: model {model_id!r} has no image processor: {error}") from error
        self.model = model.to(device).eval()
        self.model_id, self.device, self.batch_size, self.dtype = model_id, device, batch_size, dtype
        self.column, self.columns = column, (column,)
        self._grid_shapes = {}  # image size -> (h, w, C)

    def _feature_maps(self, images) -> list[np.ndarray]:
        """(h, w, C) arrays of ``dtype``, one per image."""
        maps, _ = self._forward(images)
        return [m.astype(self.dtype) for m in maps.numpy()]

    def _forward(self, images):
        """One model call: ((B, h, w, C) float32 patch grid, (B, P, C) float32 prefix tokens (CLS first, then
        registers; P = 0 for convolutional backbones)), on the CPU."""
        import torch

        pixel_values = self.processor(images=images, return_tensors="pt")["pixel_values"].to(self.device)
        with torch.no_grad():
            hidden = self.model(pixel_values=pixel_values).last_hidden_state.float()
        if hidden.ndim == 4:  # convolutional backbone: (B, C, h, w)
            return hidden.permute(0, 2, 3, 1).cpu(), hidden.new_zeros((hidden.shape[0], 0, hidden.shape[1])).cpu()
        if hidden.ndim != 3:
            raise ValueError(f"{self.column}: model {self.model_id!r} last_hidden_state has shape {tuple(hidden.shape)}, expected 3 or 4 dims")
        config = getattr(self.model.config, "vision_config", self.model.config)  # transformer: (B, prefix + h * w, C)
        patch = getattr(config, "patch_size", None)
        patch = patch[0] if isinstance(patch, (list, tuple)) else patch
        if patch is None:
            raise ValueError(f"{self.column}: model {self.model_id!r} has no patch_size; cannot reshape its tokens to a grid")
        rows, cols = pixel_values.shape[-2] // patch, pixel_values.shape[-1] // patch
        prefix = hidden.shape[1] - rows * cols
        if prefix < 0:
            raise ValueError(f"{self.column}: model {self.model_id!r} gave {hidden.shape[1]} tokens for a {rows}x{cols} patch grid")
        maps = hidden[:, prefix:].reshape(hidden.shape[0], rows, cols, hidden.shape[-1])
        return maps.cpu(), hidden[:, :prefix].cpu()

    def features(self, size):
        from datasets import Array3D
        from PIL import Image

        if size not in self._grid_shapes:  # the grid depends on the processor: run it once on a blank image
            self._grid_shapes[size] = self._feature_maps([Image.new("RGB", (size, size))])[0].shape
        return {self.column: Array3D(self._grid_shapes[size], self.dtype)}

    def label(self, images, labels):
        maps = []
        for start in range(0, len(images), self.batch_size):
            maps.extend(self._feature_maps(images[start : start + self.batch_size]))
        return {self.column: maps}

    def metadata(self):
        return {"model": self.model_id, "source": "last_hidden_state without prefix tokens, (h, w, C)", "dtype": self.dtype}
