"""Pseudo-labeling: add depth, normals, segmentation, boxes, feature maps and captions to images.

4M trains on aligned modalities obtained by running off-the-shelf models over RGB images. Each
labeller here wraps one such model, loaded from a local folder or a Hub id through
``transformers.pipeline`` (or ``AutoModel`` for feature maps), and writes columns with the same
schema as the rendered scene corpus (``data/scenes.py``), so the same downstream code reads both:

- ``rgb``     ``datasets.Image``: the input image converted to RGB, resized (bicubic) so that its
              shorter side is ``size`` and centre-cropped to ``size`` x ``size``. Every other column
              is computed on, and aligned with, this very image.
- ``depth``   float32 (size, size), ``depth-estimation`` pipeline (DPT, Depth Anything, ZoeDepth...).
              Most of these models (DPT, Depth Anything "relative") predict *relative inverse depth*
              d (a disparity known only up to scale and shift), not metres. For them we store
              ``depth = median(d) / d``: relative depth with per-image median 1, clipped to at most
              ``MAX_RELATIVE_DEPTH``, which pixels with ``d <= 0`` (sky) also get. It is NOT metric;
              it is monotone in the true depth only as far as the shift of d is small. Models that
              predict metres (Depth Anything "metric", ZoeDepth, Depth Pro) are stored as predicted.
              The choice (``depth_kind``) is in the dataset metadata.
- ``normal``  float32 (size, size, 3): unit camera-frame normals (OpenCV axes: x right, y down,
              z forward; visible surfaces have z < 0), derived from the depth map: pixels are
              back-projected with a pinhole camera of horizontal field of view
              ``field_of_view_degrees`` (an assumption: real photos do not say), and the normal is
              the cross product of the finite differences (``numpy.gradient``) of the 3D points along
              rows and columns. Normals do not depend on the depth's global scale, so relative depth
              is enough. Degenerate pixels get ``SKY_NORMAL``. (``transformers`` has no surface-normal
              pipeline; a custom labeller object can provide ``normal`` instead, see ``Labeller``.)
- ``semseg``  uint8 (size, size): ``image-segmentation`` pipeline with ``subtask="semantic"``
              (SegFormer, Mask2Former, MaskFormer, OneFormer...). Value k is the model's class
              ``id2label[k]``; the class list is stored in the dataset metadata (``semseg_classes``).
- ``boxes``   ``[{"label", "box": [xmin, ymin, xmax, ymax]}]`` normalised to [0, 1] by the image
              size (clipped to the image), from the ``object-detection`` pipeline (DETR, RT-DETR,
              YOLOS...), detections with score >= ``threshold``, highest score first. Coordinates
              have the pipeline's whole-pixel precision.
- ``clip``    float16 (or float32) (h, w, C): the last hidden state of a vision tower (CLIP, SigLIP,
              DINOv2, ViT... any ``AutoModel`` whose input is ``pixel_values``) without its prefix
              tokens (CLS, registers), reshaped to the patch grid. Convolutional backbones whose last
              hidden state is already (C, h, w) are transposed to (h, w, C).
- ``caption`` str: ``image-text-to-text`` pipeline (BLIP, GIT, VisionEncoderDecoder...), greedy
              decoding of at most ``max_new_tokens`` after an optional ``prompt``.
- ``source``  str: the image file's path relative to the input folder, or the row index in the
              input dataset.

Input images are converted to RGB explicitly: grayscale ("L", "1", "I;16" scaled by 1/257) is
replicated over the three channels; images with alpha ("RGBA", "LA", palette with transparency) are
composited over white; EXIF orientation is applied. An image that cannot be read (not an image,
truncated, unsupported mode) is skipped and reported: one line per image in ``skipped.jsonl`` next to
the dataset and a warning with the count; it is never silently dropped.

``pseudo_label_dataset`` / ``fourm-hf pseudo-label`` label in shards of ``shard_size`` images, each
saved atomically (temporary folder, then ``os.replace``) under ``<out>.shards/``, so a killed run
resumes where it stopped and gives the same dataset as an uninterrupted run. Shards are split over
``num_processes`` processes (shard k goes to process ``k % num_processes``; ``accelerate launch``
sets the defaults through ``WORLD_SIZE`` / ``RANK``); ``merge_shards`` then concatenates them.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import os
import shutil
import sys
import warnings
from pathlib import Path

import numpy as np

IMAGE_EXTENSIONS = (".bmp", ".gif", ".jpeg", ".jpg", ".png", ".tif", ".tiff", ".webp")
"""File name endings (case-insensitive) read as images from an input folder; other files are ignored."""

MAX_RELATIVE_DEPTH = 100.0
"""Largest stored relative depth (in units of the image's median depth); pixels with d <= 0 get it."""

DEFAULT_FIELD_OF_VIEW_DEGREES = 60.0
"""Horizontal field of view assumed to back-project depth when deriving normals."""

SKY_NORMAL = (0.0, 0.0, -1.0)
"""Normal given to pixels where the depth gradient is degenerate (as for the scenes' sky)."""

UNLABELLED_CLASS = 255
"""``semseg`` value of a pixel that no predicted segment covers (semantic post-processing covers all)."""

METRIC_DEPTH_MODEL_TYPES = ("zoedepth", "depth_pro")
"""Model types whose depth output is in metres (Depth Anything says so in ``depth_estimation_type``)."""

_PARAMS_FILE = "pseudo_label.json"
_SKIPPED_FILE = "skipped.jsonl"


# ----------------------------------------------------------------------------------------------
# Images
# ----------------------------------------------------------------------------------------------


class UnreadableImageError(ValueError):
    """An input image that cannot be decoded or converted to RGB (it is skipped and reported)."""


def to_rgb(image):
    """Convert a PIL image to RGB explicitly (rules in the module docstring); raises UnreadableImageError."""
    from PIL import Image, ImageOps

    image = ImageOps.exif_transpose(image)
    has_alpha = image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (image.mode == "P" and "transparency" in image.info)
    if has_alpha:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if image.mode in ("I;16", "I;16B", "I;16L"):
        gray = np.asarray(image, dtype=np.float64) / 257.0
        return Image.fromarray(np.round(gray).astype(np.uint8), mode="L").convert("RGB")
    if image.mode in ("RGB", "L", "1", "P", "CMYK", "YCbCr", "LAB", "HSV"):
        return image.convert("RGB")
    raise UnreadableImageError(f"unsupported image mode {image.mode!r} (expected 8-bit gray, RGB, RGBA, palette or 16-bit gray)")


def resize_and_center_crop(image, size: int):
    """Resize (bicubic) so the shorter side is ``size``, then centre-crop to ``size`` x ``size``."""
    from PIL import Image

    width, height = image.size
    scale = size / min(width, height)
    new_width, new_height = max(size, round(width * scale)), max(size, round(height * scale))
    if (new_width, new_height) != (width, height):
        image = image.resize((new_width, new_height), Image.Resampling.BICUBIC)
    left, top = (new_width - size) // 2, (new_height - size) // 2
    return image.crop((left, top, left + size, top + size))


def decode_image(data: bytes | None = None, path: str | None = None):
    """Decode image bytes (or a file) fully into an RGB PIL image; raises UnreadableImageError."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data) if data is not None else path) as opened:
            opened.load()  # decode now: a truncated file fails here, not later
            return to_rgb(opened)
    except UnreadableImageError:
        raise
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
        raise UnreadableImageError(f"{type(error).__name__}: {error}") from error


# ----------------------------------------------------------------------------------------------
# Depth -> stored depth, depth -> normals
# ----------------------------------------------------------------------------------------------


def depth_from_inverse_depth(inverse_depth: np.ndarray) -> np.ndarray:
    """Relative inverse depth d (H, W) -> relative depth ``median(d) / d`` (H, W) float32 in
    (0, MAX_RELATIVE_DEPTH]; the median is over the pixels with d > 0, pixels with d <= 0 get the maximum."""
    d = np.asarray(inverse_depth, dtype=np.float64)
    if d.ndim != 2 or not np.all(np.isfinite(d)):
        raise ValueError(f"depth: expected a finite (H, W) inverse depth map, got shape {d.shape}")
    positive = d > 0
    if not positive.any():
        return np.full(d.shape, MAX_RELATIVE_DEPTH, dtype=np.float32)
    relative = np.median(d[positive]) / np.where(positive, d, 1.0)
    relative = np.where(positive, np.minimum(relative, MAX_RELATIVE_DEPTH), MAX_RELATIVE_DEPTH)
    return relative.astype(np.float32)


def normals_from_depth(depth: np.ndarray, field_of_view_degrees: float = DEFAULT_FIELD_OF_VIEW_DEGREES) -> np.ndarray:
    """Unit camera-frame normals (H, W, 3) float32 of a z-depth map (H, W) seen by a pinhole camera
    with horizontal field of view ``field_of_view_degrees`` and the principal point at the centre.

    Pixel (row r, column c) is back-projected through its centre to
    ``z * ((c + 0.5 - W/2) / f, (r + 0.5 - H/2) / f, 1)`` with ``f = (W/2) / tan(fov/2)``; the normal is
    ``d/drow x d/dcolumn`` of those points (central differences inside, one-sided at the border), turned to
    face the camera. Pixels whose normal is degenerate (zero or non-finite) get ``SKY_NORMAL``.
    """
    depth = np.asarray(depth, dtype=np.float64)
    if depth.ndim != 2 or min(depth.shape) < 2:
        raise ValueError(f"normal: expected a (H, W) depth map with H, W >= 2, got shape {depth.shape}")
    if not 0.0 < field_of_view_degrees < 180.0:
        raise ValueError(f"normal: field_of_view_degrees must be in (0, 180), got {field_of_view_degrees}")
    height, width = depth.shape
    focal = (width / 2.0) / np.tan(np.radians(field_of_view_degrees) / 2.0)
    u = (np.arange(width) + 0.5 - width / 2.0) / focal
    v = (np.arange(height) + 0.5 - height / 2.0) / focal
    rays = np.stack(np.broadcast_arrays(u[None, :], v[:, None], np.ones((1, 1))), axis=-1)  # (H, W, 3)
    points = depth[..., None] * rays
    along_rows, along_columns = np.gradient(points, axis=(0, 1))
    normals = np.cross(along_rows, along_columns)  # faces the camera (z < 0) for a fronto-parallel plane
    facing_away = np.sum(normals * points, axis=-1) > 0
    normals[facing_away] *= -1.0
    length = np.linalg.norm(normals, axis=-1, keepdims=True)
    valid = (length[..., 0] > 1e-12) & np.all(np.isfinite(normals), axis=-1)
    normals = np.where(valid[..., None], normals / np.where(length > 0, length, 1.0), np.asarray(SKY_NORMAL))
    return normals.astype(np.float32)


# ----------------------------------------------------------------------------------------------
# Labellers
# ----------------------------------------------------------------------------------------------


def _mapping_names(*names: str) -> dict:
    from transformers.models.auto import modeling_auto

    merged = {}
    for name in names:
        merged.update(getattr(modeling_auto, name, {}))
    return merged


def check_model_task(model_id: str, modality: str, task: str, mapping_names: tuple[str, ...]):
    """Load the config of ``model_id`` and check it is a model for ``task``; returns the config.

    The check uses the saved ``architectures`` when there are any (a SegFormer saved as an image
    classifier is not a segmentation model, even though its model type has a segmentation head),
    else the model type. Raises ValueError naming the model, what it is and the task expected.
    """
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(model_id)
    except (OSError, ValueError, KeyError) as error:
        raise ValueError(f"{modality}: cannot load model {model_id!r} (expected a local folder or Hub id of a '{task}' model): {error}") from error
    supported = _mapping_names(*mapping_names)
    architectures = list(getattr(config, "architectures", None) or [])
    if architectures:
        ok = any(arch in supported.values() for arch in architectures)
        what = f"a {', '.join(architectures)}"
    else:
        ok = config.model_type in supported
        what = f"a {config.model_type!r} model"
    if not ok:
        examples = ", ".join(sorted(set(supported.values()))[:8])
        raise ValueError(f"{modality}: model {model_id!r} is {what}, not a model for the '{task}' task expected here (e.g. {examples}, ...)")
    return config


def _pipeline(task: str, model_id: str, device: str):
    from transformers import pipeline

    return pipeline(task, model=model_id, device=device)


class Labeller:
    """What ``pseudo_label_dataset`` needs from a labeller (subclass it for a custom model).

    ``columns``: the column names it writes. ``features(size)``: their ``datasets`` features.
    ``label(images, labels)``: ``images`` is a list of ``size`` x ``size`` RGB PIL images, ``labels``
    the columns of earlier labellers for the same images; returns ``{column: [value per image]}``.
    ``metadata()``: JSON-able description stored with the dataset (model id, scaling, classes).
    """

    columns: tuple[str, ...] = ()

    def features(self, size: int) -> dict:
        raise NotImplementedError

    def label(self, images: list, labels: dict) -> dict:
        raise NotImplementedError

    def metadata(self) -> dict:
        return {}


class DepthLabeller(Labeller):
    """``depth`` from a ``depth-estimation`` pipeline (stored quantity: see the module docstring).

    ``depth_kind``: ``"auto"`` (metric if the model says so, else relative inverse), ``"metric"`` or
    ``"relative-inverse"``.
    """

    columns = ("depth",)
    task = "depth-estimation"

    def __init__(self, model_id: str, device: str = "cpu", batch_size: int = 8, depth_kind: str = "auto"):
        if depth_kind not in ("auto", "metric", "relative-inverse"):
            raise ValueError(f"depth: depth_kind must be 'auto', 'metric' or 'relative-inverse', got {depth_kind!r}")
        config = check_model_task(model_id, "depth", self.task, ("MODEL_FOR_DEPTH_ESTIMATION_MAPPING_NAMES",))
        if depth_kind == "auto":
            metric = getattr(config, "depth_estimation_type", None) == "metric" or config.model_type in METRIC_DEPTH_MODEL_TYPES
            depth_kind = "metric" if metric else "relative-inverse"
        self.model_id, self.depth_kind, self.batch_size = model_id, depth_kind, batch_size
        self.pipeline = _pipeline(self.task, model_id, device)

    def features(self, size):
        from datasets import Array2D

        return {"depth": Array2D((size, size), "float32")}

    def label(self, images, labels):
        with np.errstate(invalid="ignore", divide="ignore"):  # the pipeline's 8-bit preview of a constant map divides by 0
            outputs = self.pipeline(images, batch_size=self.batch_size)
        depths = []
        for image, output in zip(images, outputs):
            predicted = output["predicted_depth"].float().cpu().numpy()
            if predicted.shape != (image.height, image.width):
                raise ValueError(f"depth: model {self.model_id!r} returned shape {predicted.shape}, expected {(image.height, image.width)}")
            if self.depth_kind == "metric":
                depths.append(predicted.astype(np.float32))
            else:
                depths.append(depth_from_inverse_depth(predicted))
        return {"depth": depths}

    def metadata(self):
        scale = "metres as predicted" if self.depth_kind == "metric" else f"median(d) / d, clipped to {MAX_RELATIVE_DEPTH}"
        return {"model": self.model_id, "task": self.task, "depth_kind": self.depth_kind, "depth_scale": scale}


class NormalsFromDepthLabeller(Labeller):
    """``normal`` derived from the ``depth`` column written by an earlier labeller."""

    columns = ("normal",)

    def __init__(self, field_of_view_degrees: float = DEFAULT_FIELD_OF_VIEW_DEGREES):
        if not 0.0 < field_of_view_degrees < 180.0:
            raise ValueError(f"normal: field_of_view_degrees must be in (0, 180), got {field_of_view_degrees}")
        self.field_of_view_degrees = float(field_of_view_degrees)

    def features(self, size):
        from datasets import Array3D

        return {"normal": Array3D((size, size, 3), "float32")}

    def label(self, images, labels):
        if "depth" not in labels:
            raise ValueError("normal: normals are derived from depth; add a depth labeller before the normals labeller")
        return {"normal": [normals_from_depth(depth, self.field_of_view_degrees) for depth in labels["depth"]]}

    def metadata(self):
        return {"source": "finite differences of back-projected depth", "field_of_view_degrees": self.field_of_view_degrees}


class SegmentationLabeller(Labeller):
    """``semseg`` class ids from an ``image-segmentation`` pipeline run with ``subtask="semantic"``."""

    columns = ("semseg",)
    task = "image-segmentation"

    def __init__(self, model_id: str, device: str = "cpu", batch_size: int = 8):
        config = check_model_task(
            model_id, "semseg", self.task,
            ("MODEL_FOR_SEMANTIC_SEGMENTATION_MAPPING_NAMES", "MODEL_FOR_UNIVERSAL_SEGMENTATION_MAPPING_NAMES"),
        )
        id2label = {int(k): str(v) for k, v in config.id2label.items()}
        if sorted(id2label) != list(range(len(id2label))):
            raise ValueError(f"semseg: model {model_id!r} has class ids {sorted(id2label)}, expected 0..{len(id2label) - 1}")
        if len(id2label) > UNLABELLED_CLASS:
            raise ValueError(f"semseg: model {model_id!r} has {len(id2label)} classes; the uint8 semseg column holds at most {UNLABELLED_CLASS}")
        self.classes = [id2label[k] for k in range(len(id2label))]
        if len(set(self.classes)) != len(self.classes):
            raise ValueError(f"semseg: model {model_id!r} has duplicate class names in id2label; segments could not be mapped back to ids")
        self.class_ids = {name: k for k, name in enumerate(self.classes)}
        self.model_id, self.batch_size = model_id, batch_size
        self.pipeline = _pipeline(self.task, model_id, device)

    def features(self, size):
        from datasets import Array2D

        return {"semseg": Array2D((size, size), "uint8")}

    def label(self, images, labels):
        outputs = self.pipeline(images, batch_size=self.batch_size, subtask="semantic")
        maps = []
        for image, segments in zip(images, outputs):
            semseg = np.full((image.height, image.width), UNLABELLED_CLASS, dtype=np.uint8)
            for segment in segments:
                semseg[np.asarray(segment["mask"]) > 127] = self.class_ids[segment["label"]]
            maps.append(semseg)
        return {"semseg": maps}

    def metadata(self):
        return {"model": self.model_id, "task": self.task, "semseg_classes": self.classes, "unlabelled_class": UNLABELLED_CLASS}


class DetectionLabeller(Labeller):
    """``boxes`` from an ``object-detection`` pipeline: detections with score >= ``threshold``."""

    columns = ("boxes",)
    task = "object-detection"

    def __init__(self, model_id: str, device: str = "cpu", batch_size: int = 8, threshold: float = 0.5):
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"boxes: threshold must be in [0, 1], got {threshold}")
        check_model_task(model_id, "boxes", self.task, ("MODEL_FOR_OBJECT_DETECTION_MAPPING_NAMES",))
        self.model_id, self.batch_size, self.threshold = model_id, batch_size, float(threshold)
        self.pipeline = _pipeline(self.task, model_id, device)

    def features(self, size):
        from datasets import List, Value

        return {"boxes": List({"label": Value("string"), "box": List(Value("float32"), length=4)})}

    def label(self, images, labels):
        outputs = self.pipeline(images, batch_size=self.batch_size, threshold=self.threshold)
        all_boxes = []
        for image, detections in zip(images, outputs):
            width, height = image.size
            ranked = sorted(detections, key=lambda d: (-d["score"], d["label"], tuple(d["box"].values())))
            boxes = []
            for detection in ranked:
                box = detection["box"]
                normalised = [box["xmin"] / width, box["ymin"] / height, box["xmax"] / width, box["ymax"] / height]
                boxes.append({"label": str(detection["label"]), "box": [float(np.clip(c, 0.0, 1.0)) for c in normalised]})
            all_boxes.append(boxes)
        return {"boxes": all_boxes}

    def metadata(self):
        return {"model": self.model_id, "task": self.task, "threshold": self.threshold}


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
        import torch

        pixel_values = self.processor(images=images, return_tensors="pt")["pixel_values"].to(self.device)
        with torch.no_grad():
            hidden = self.model(pixel_values=pixel_values).last_hidden_state.float()
        if hidden.ndim == 4:  # convolutional backbone: (B, C, h, w)
            maps = hidden.permute(0, 2, 3, 1)
        elif hidden.ndim == 3:  # transformer: (B, prefix + h * w, C)
            config = getattr(self.model.config, "vision_config", self.model.config)
            patch = getattr(config, "patch_size", None)
            patch = patch[0] if isinstance(patch, (list, tuple)) else patch
            if patch is None:
                raise ValueError(f"{self.column}: model {self.model_id!r} has no patch_size; cannot reshape its tokens to a grid")
            rows, cols = pixel_values.shape[-2] // patch, pixel_values.shape[-1] // patch
            prefix = hidden.shape[1] - rows * cols
            if prefix < 0:
                raise ValueError(f"{self.column}: model {self.model_id!r} gave {hidden.shape[1]} tokens for a {rows}x{cols} patch grid")
            maps = hidden[:, prefix:].reshape(hidden.shape[0], rows, cols, hidden.shape[-1])
        else:
            raise ValueError(f"{self.column}: model {self.model_id!r} last_hidden_state has shape {tuple(hidden.shape)}, expected 3 or 4 dims")
        return [m.astype(self.dtype) for m in maps.cpu().numpy()]

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


class CaptionLabeller(Labeller):
    """``caption`` from an ``image-text-to-text`` pipeline (greedy decoding after ``prompt``)."""

    columns = ("caption",)
    task = "image-text-to-text"

    def __init__(self, model_id: str, device: str = "cpu", batch_size: int = 8, prompt: str = "", max_new_tokens: int = 30):
        check_model_task(model_id, "caption", self.task, ("MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES",))
        self.model_id, self.batch_size, self.prompt, self.max_new_tokens = model_id, batch_size, prompt, int(max_new_tokens)
        self.pipeline = _pipeline(self.task, model_id, device)

    def features(self, size):
        from datasets import Value

        return {"caption": Value("string")}

    def label(self, images, labels):
        outputs = self.pipeline(
            images=images, text=[self.prompt] * len(images), batch_size=self.batch_size,
            max_new_tokens=self.max_new_tokens, generate_kwargs={"do_sample": False}, return_full_text=False,
        )
        captions = []
        for output in outputs:
            output = output[0] if isinstance(output, list) else output
            captions.append(str(output["generated_text"]).strip())
        return {"caption": captions}

    def metadata(self):
        return {"model": self.model_id, "task": self.task, "prompt": self.prompt, "max_new_tokens": self.max_new_tokens}


def build_labellers(
    depth_model=None, segmentation_model=None, detection_model=None, caption_model=None, feature_model=None,
    device: str = "cpu", batch_size: int = 8, normals: bool = True, field_of_view_degrees: float = DEFAULT_FIELD_OF_VIEW_DEGREES,
    depth_kind: str = "auto", detection_threshold: float = 0.5, feature_dtype: str = "float16", caption_prompt: str = "",
    caption_max_new_tokens: int = 30,
) -> list[Labeller]:
    """The labellers for the given model ids, in the order their columns are written (normals after depth)."""
    labellers = []
    if depth_model:
        labellers.append(DepthLabeller(depth_model, device, batch_size, depth_kind))
        if normals:
            labellers.append(NormalsFromDepthLabeller(field_of_view_degrees))
    if segmentation_model:
        labellers.append(SegmentationLabeller(segmentation_model, device, batch_size))
    if detection_model:
        labellers.append(DetectionLabeller(detection_model, device, batch_size, detection_threshold))
    if feature_model:
        labellers.append(FeatureLabeller(feature_model, device, batch_size, dtype=feature_dtype))
    if caption_model:
        labellers.append(CaptionLabeller(caption_model, device, batch_size, caption_prompt, caption_max_new_tokens))
    if not labellers:
        raise ValueError("pseudo-label: no labeller given; pass at least one of --depth-model, --segmentation-model, --detection-model, --feature-model, --caption-model")
    return labellers


# ----------------------------------------------------------------------------------------------
# Inputs: a folder of image files or a saved dataset with an image column
# ----------------------------------------------------------------------------------------------


class ImageSource:
    """The input images in a fixed order: ``sources[i]`` names item i, ``read(i)`` returns its RGB PIL image."""

    def __init__(self, location: str, image_column: str | None = None):
        self.location = Path(location)
        if not self.location.is_dir():
            raise ValueError(f"pseudo-label: --images {location} is not a directory (expected a folder of images or a dataset saved with save_to_disk)")
        self.dataset = None
        if (self.location / "dataset_dict.json").is_file():
            splits = json.loads((self.location / "dataset_dict.json").read_text()).get("splits", [])
            raise ValueError(f"pseudo-label: --images {location} is a DatasetDict with splits {splits}; pass one split's folder, e.g. {self.location / (splits[0] if splits else 'train')}")
        if (self.location / "state.json").is_file():
            self._open_dataset(image_column)
        else:
            self.files = sorted(
                p.relative_to(self.location).as_posix() for p in self.location.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
            )
            if not self.files:
                raise ValueError(f"pseudo-label: --images {location} contains no image files (looked for {', '.join(IMAGE_EXTENSIONS)})")
            self.sources = self.files
            self.extra_features = {}

    def _open_dataset(self, image_column):
        from datasets import Image, load_from_disk

        dataset = load_from_disk(str(self.location))
        image_columns = [name for name, feature in dataset.features.items() if isinstance(feature, Image)]
        if image_column is None:
            image_column = "rgb" if "rgb" in image_columns else "image" if "image" in image_columns else (image_columns[0] if image_columns else None)
        if image_column is None or image_column not in dataset.column_names:
            raise ValueError(f"pseudo-label: dataset {self.location} has no image column {image_column!r}; its image columns are {image_columns}")
        if len(dataset) == 0:
            raise ValueError(f"pseudo-label: dataset {self.location} is empty")
        self.image_column = image_column
        self.dataset = dataset.cast_column(image_column, Image(decode=False))  # decode ourselves: bad images are reported
        self.sources = [str(i) for i in range(len(dataset))]
        self.extra_features = {name: f for name, f in dataset.features.items() if name != image_column}

    def __len__(self):
        return len(self.sources)

    def fingerprint(self) -> str:
        return hashlib.sha256("\n".join(self.sources).encode()).hexdigest()

    def read(self, index: int):
        """(RGB PIL image, extra columns of that row) for item ``index``; raises UnreadableImageError."""
        if self.dataset is None:
            return decode_image(path=str(self.location / self.files[index])), {}
        row = self.dataset[index]
        encoded = row.pop(self.image_column)
        if encoded is None:
            raise UnreadableImageError("the image is missing (None)")
        data = encoded.get("bytes")
        return decode_image(data=data, path=None if data is not None else encoded.get("path")), row


# ----------------------------------------------------------------------------------------------
# Sharded, resumable, multi-process labelling
# ----------------------------------------------------------------------------------------------


def _shard_name(shard: int, num_shards: int) -> str:
    return f"shard-{shard:05d}-of-{num_shards:05d}"


@contextlib.contextmanager
def _quiet_datasets():
    """Hide datasets' own progress bars (ours counts images) and restore the setting afterwards."""
    from datasets import utils as datasets_utils

    was_disabled = datasets_utils.are_progress_bars_disabled()
    datasets_utils.disable_progress_bars()
    try:
        yield
    finally:
        if not was_disabled:
            datasets_utils.enable_progress_bars()


def output_features(source: ImageSource, labellers: list[Labeller], size: int, replace_existing: bool = False):
    """``datasets.Features`` of the labelled dataset: rgb, source, the labellers' columns, then the input's other columns."""
    from datasets import Features, Image, Value

    features = {"rgb": Image(), "source": Value("string")}
    for labeller in labellers:
        for name, feature in labeller.features(size).items():
            if name in features:
                raise ValueError(f"pseudo-label: two labellers write column {name!r}")
            features[name] = feature
    for name, feature in source.extra_features.items():
        if name in features:
            if not replace_existing:
                raise ValueError(f"pseudo-label: the input dataset already has a column {name!r} that a labeller writes; pass --replace-existing to replace it")
            continue
        features[name] = feature
    return Features(features)


def _label_items(source, labellers, indices, size, batch_size, progress=None):
    """Label items ``indices`` in batches; returns (rows as columns, skipped records)."""
    columns, skipped = {}, []
    for start in range(0, len(indices), batch_size):
        images, rows = [], {"source": [], "rgb": []}
        for index in indices[start : start + batch_size]:
            try:
                image, extra = source.read(index)
            except UnreadableImageError as error:
                skipped.append({"index": int(index), "source": source.sources[index], "error": str(error)})
                continue
            image = resize_and_center_crop(image, size)
            images.append(image)
            rows["source"].append(source.sources[index])
            rows["rgb"].append(image)
            for name, value in extra.items():
                rows.setdefault(name, []).append(value)
        if images:
            labels = {}
            for labeller in labellers:
                produced = labeller.label(images, labels)
                for name, values in produced.items():
                    if len(values) != len(images):
                        raise ValueError(f"{name}: labeller {type(labeller).__name__} returned {len(values)} values for {len(images)} images")
                labels.update(produced)
            rows.update(labels)
            for name, values in rows.items():
                columns.setdefault(name, []).extend(values)
        if progress is not None:
            progress.update(len(indices[start : start + batch_size]))
    return columns, skipped


def _save_shard(shards_dir: Path, name: str, columns: dict, skipped: list, features) -> None:
    """Write one shard (dataset + its skipped.jsonl) to a temporary folder, then rename it into place."""
    from datasets import Dataset

    final_dir = shards_dir / name
    temp_dir = shards_dir / f"{name}.tmp-{os.getpid()}"
    shutil.rmtree(temp_dir, ignore_errors=True)
    temp_dir.mkdir()
    if columns.get("source"):  # a shard of only unreadable images holds just its skipped.jsonl
        data = {key: columns.get(key, []) for key in features}
        with _quiet_datasets():
            Dataset.from_dict(data, features=features).save_to_disk(str(temp_dir))
    (temp_dir / _SKIPPED_FILE).write_text("".join(json.dumps(record) + "\n" for record in skipped))
    os.replace(temp_dir, final_dir)


def _write_json_atomically(path: Path, value) -> None:
    temp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    temp.write_text(json.dumps(value, indent=1, sort_keys=True))
    os.replace(temp, path)


def _check_int(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"pseudo-label: {name} must be an int >= {minimum}, got {value!r}")
    return int(value)


def pseudo_label_dataset(
    images, out_dir, labellers: list[Labeller], size: int = 224, batch_size: int = 8, shard_size: int = 256,
    num_processes: int = 1, process_index: int = 0, image_column: str | None = None, replace_existing: bool = False,
    merge: bool | None = None, _stop_after_shards: int | None = None,
):
    """Label the images at ``images`` (a folder of image files, or a ``save_to_disk`` dataset) and save
    the result with ``save_to_disk`` at ``out_dir``.

    Items are cut into shards of ``shard_size`` in a fixed order (sorted file paths / row order); this
    process labels shards ``k`` with ``k % num_processes == process_index`` that are not done yet and
    saves each atomically under ``<out_dir>.shards/``. With ``merge`` (default: when
    ``num_processes == 1``) the shards are then merged into ``out_dir`` (see ``merge_shards``) and the
    merged ``datasets.Dataset`` is returned; otherwise returns None. A rerun with the same arguments
    continues where a killed run stopped. ``_stop_after_shards`` (tests only) raises
    ``KeyboardInterrupt`` after that many new shards.
    """
    from tqdm.auto import tqdm

    size = _check_int("size", size, 8)
    batch_size = _check_int("batch_size", batch_size, 1)
    shard_size = _check_int("shard_size", shard_size, 1)
    num_processes = _check_int("num_processes", num_processes, 1)
    process_index = _check_int("process_index", process_index, 0)
    if process_index >= num_processes:
        raise ValueError(f"pseudo-label: process_index must be < num_processes={num_processes}, got {process_index}")
    if not labellers:
        raise ValueError("pseudo-label: no labeller given")
    out_dir = Path(out_dir)
    source = ImageSource(images, image_column)
    features = output_features(source, labellers, size, replace_existing)
    params = {
        "images": str(Path(images).resolve()), "num_items": len(source), "items_sha256": source.fingerprint(),
        "size": size, "batch_size": batch_size, "shard_size": shard_size,
        "labellers": {",".join(labeller.columns): {"labeller": type(labeller).__name__, **labeller.metadata()} for labeller in labellers},
        "features": features.to_dict(),
    }
    if (out_dir / _PARAMS_FILE).is_file() and json.loads((out_dir / _PARAMS_FILE).read_text()) == json.loads(json.dumps(params)):
        from datasets import load_from_disk

        return load_from_disk(str(out_dir))  # already finished with the same arguments
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise ValueError(f"pseudo-label: --out {out_dir} exists and is not empty; choose a new or empty directory")
    shards_dir = out_dir.parent / f"{out_dir.name}.shards"
    shards_dir.mkdir(parents=True, exist_ok=True)
    params_file = shards_dir / _PARAMS_FILE
    if params_file.is_file():
        existing = json.loads(params_file.read_text())
        normalised = json.loads(json.dumps(params))
        if existing != normalised:
            differing = sorted(k for k in set(existing) | set(normalised) if existing.get(k) != normalised.get(k))
            raise ValueError(f"pseudo-label: {shards_dir} holds an unfinished run with different {differing}; rerun with its arguments or delete it")
    else:
        _write_json_atomically(params_file, params)

    num_shards = (len(source) + shard_size - 1) // shard_size
    mine = [k for k in range(num_shards) if k % num_processes == process_index]
    todo = [k for k in mine if not (shards_dir / _shard_name(k, num_shards)).is_dir()]
    done_items = sum(min(shard_size, len(source) - k * shard_size) for k in mine if k not in todo)
    total_items = sum(min(shard_size, len(source) - k * shard_size) for k in mine)
    if _stop_after_shards is not None:
        todo = todo[:_stop_after_shards]
    with tqdm(total=total_items, initial=done_items, desc="pseudo-labeling", unit="img") as progress:
        for shard in todo:
            indices = list(range(shard * shard_size, min(len(source), (shard + 1) * shard_size)))
            columns, skipped = _label_items(source, labellers, indices, size, batch_size, progress)
            _save_shard(shards_dir, _shard_name(shard, num_shards), columns, skipped, features)
    if _stop_after_shards is not None:
        raise KeyboardInterrupt(f"stopped after {len(todo)} shards (test hook)")
    if merge is None:
        merge = num_processes == 1
    return merge_shards(out_dir) if merge else None


def merge_shards(out_dir):
    """Concatenate the finished shards of ``<out_dir>.shards/`` into ``out_dir`` (atomically), with
    ``pseudo_label.json`` (run parameters and labeller metadata) and ``skipped.jsonl`` beside the data;
    warn with the number of skipped images; remove the shards. Returns the merged ``datasets.Dataset``."""
    from datasets import concatenate_datasets, load_from_disk

    out_dir = Path(out_dir)
    shards_dir = out_dir.parent / f"{out_dir.name}.shards"
    params_file = shards_dir / _PARAMS_FILE
    if not params_file.is_file():
        raise ValueError(f"pseudo-label: nothing to merge: {params_file} does not exist (run the labelling first)")
    params = json.loads(params_file.read_text())
    num_shards = (params["num_items"] + params["shard_size"] - 1) // params["shard_size"]
    names = [_shard_name(k, num_shards) for k in range(num_shards)]
    missing = [name for name in names if not (shards_dir / name).is_dir()]
    if missing:
        raise ValueError(f"pseudo-label: cannot merge {shards_dir}: {len(missing)} of {num_shards} shards are not done yet (e.g. {missing[0]})")
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise ValueError(f"pseudo-label: --out {out_dir} exists and is not empty; choose a new or empty directory")

    skipped_lines = []
    for name in names:
        skipped_lines.extend((shards_dir / name / _SKIPPED_FILE).read_text().splitlines())
    nonempty = [load_from_disk(str(shards_dir / name)) for name in names if (shards_dir / name / "state.json").is_file()]
    if not nonempty:
        raise ValueError(f"pseudo-label: none of the {params['num_items']} images could be read; see {shards_dir}/*/{_SKIPPED_FILE}")
    merged = concatenate_datasets(nonempty)
    merged.info.description = json.dumps({"fourm_hf_pseudo_label": params["labellers"]})
    temp_out = out_dir.parent / f"{out_dir.name}.tmp-{os.getpid()}"
    shutil.rmtree(temp_out, ignore_errors=True)
    with _quiet_datasets():
        merged.save_to_disk(str(temp_out))
    (temp_out / _SKIPPED_FILE).write_text("".join(line + "\n" for line in skipped_lines))
    (temp_out / _PARAMS_FILE).write_text(json.dumps(params, indent=1, sort_keys=True))
    if out_dir.exists():
        out_dir.rmdir()  # empty (checked above); os.replace onto a non-empty directory would fail
    os.replace(temp_out, out_dir)
    shutil.rmtree(shards_dir)
    if skipped_lines:
        warnings.warn(
            f"pseudo-label: skipped {len(skipped_lines)} of {params['num_items']} images that could not be read; "
            f"see {out_dir / _SKIPPED_FILE}",
            stacklevel=2,
        )
    return load_from_disk(str(out_dir))


def load_metadata(out_dir) -> dict:
    """Run parameters and labeller metadata of a labelled dataset, e.g.
    ``load_metadata(out)["labellers"]["semseg"]["semseg_classes"]`` or ``[...]["depth"]["depth_kind"]``
    (labellers are keyed by the columns they write)."""
    return json.loads((Path(out_dir) / _PARAMS_FILE).read_text())


# ----------------------------------------------------------------------------------------------
# fourm-hf pseudo-label
# ----------------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--images", help="folder of image files, or a dataset saved with save_to_disk (one split)")
    parser.add_argument("--out", required=True, help="output directory (datasets.save_to_disk format)")
    parser.add_argument("--depth-model", help="depth-estimation model (local folder or Hub id): DPT, Depth Anything, ...")
    parser.add_argument("--segmentation-model", help="semantic segmentation model: SegFormer, Mask2Former, ...")
    parser.add_argument("--detection-model", help="object-detection model: DETR, RT-DETR, YOLOS, ...")
    parser.add_argument("--caption-model", help="image-text-to-text captioning model: BLIP, GIT, ...")
    parser.add_argument("--feature-model", help="vision tower for the 'clip' feature map: CLIP, SigLIP, DINOv2, ...")
    parser.add_argument("--size", type=int, default=224, help="side of the square centre crop every column is computed on")
    parser.add_argument("--batch-size", type=int, default=8, help="images per model call")
    parser.add_argument("--shard-size", type=int, default=256, help="images per resumable shard")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (cuda under accelerate: cuda:LOCAL_RANK)")
    parser.add_argument("--num-processes", type=int, default=int(os.environ.get("WORLD_SIZE", 1)), help="processes sharing the work (default: $WORLD_SIZE or 1)")
    parser.add_argument("--process-index", type=int, default=int(os.environ.get("RANK", 0)), help="this process's index (default: $RANK or 0)")
    parser.add_argument("--merge", action="store_true", help="only merge the finished shards of a multi-process run into --out")
    parser.add_argument("--image-column", help="image column of an input dataset (default: rgb, image, or the first Image column)")
    parser.add_argument("--replace-existing", action="store_true", help="let labelled columns replace same-named columns of an input dataset")
    parser.add_argument("--no-normals", action="store_true", help="do not derive normals from depth")
    parser.add_argument("--field-of-view", type=float, default=DEFAULT_FIELD_OF_VIEW_DEGREES, help="assumed horizontal field of view (degrees) for normals")
    parser.add_argument("--depth-kind", choices=("auto", "metric", "relative-inverse"), default="auto", help="what the depth model predicts")
    parser.add_argument("--detection-threshold", type=float, default=0.5, help="minimum detection score")
    parser.add_argument("--feature-dtype", choices=("float16", "float32"), default="float16")
    parser.add_argument("--caption-prompt", default="", help="text the caption continues (e.g. 'a picture of')")
    parser.add_argument("--caption-max-new-tokens", type=int, default=30)


def main(args: argparse.Namespace) -> int:
    try:
        if args.merge:
            dataset = merge_shards(args.out)
        else:
            if not args.images:
                raise ValueError("pseudo-label: --images is required (unless --merge)")
            device = args.device
            if device == "cuda" and "LOCAL_RANK" in os.environ:
                device = f"cuda:{os.environ['LOCAL_RANK']}"
            labellers = build_labellers(
                args.depth_model, args.segmentation_model, args.detection_model, args.caption_model, args.feature_model,
                device=device, batch_size=args.batch_size, normals=not args.no_normals, field_of_view_degrees=args.field_of_view,
                depth_kind=args.depth_kind, detection_threshold=args.detection_threshold, feature_dtype=args.feature_dtype,
                caption_prompt=args.caption_prompt, caption_max_new_tokens=args.caption_max_new_tokens,
            )
            dataset = pseudo_label_dataset(
                args.images, args.out, labellers, size=args.size, batch_size=args.batch_size, shard_size=args.shard_size,
                num_processes=args.num_processes, process_index=args.process_index, image_column=args.image_column,
                replace_existing=args.replace_existing,
            )
    except (ValueError, TypeError) as error:
        print(f"fourm-hf: error: {error}", file=sys.stderr)
        return 2
    if dataset is None:
        print(f"process {args.process_index} of {args.num_processes}: shards done; merge with `fourm-hf pseudo-label --out {args.out} --merge` once all processes finished")
    else:
        print(f"wrote {len(dataset)} labelled images with columns {dataset.column_names} to {args.out}")
    return 0
