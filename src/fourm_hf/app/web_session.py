"""What the web demo computes, without Gradio: checked inputs in, viewable outputs out.

::

    session = WebDemoSession()                                   # the bundled checkpoint
    views = session.rgb_to_targets("scene.png", ["depth", "caption"], DecodingSettings(num_steps=4))
    views = session.caption_to_targets("a red cube.", ["rgb"], guidance_scale=2.0)
    views = session.caption_to_targets("a cube.", ["rgb"], guidance_scale=2.0, negative_prompt="a red cube.")
    views["depth"]     # PIL (VIEW_SIZE, VIEW_SIZE) colour-mapped depth; "caption" a str; "boxes" rows

Every bad input (no image, a file that is not an image, an image too small, an empty caption, no
target, settings out of range) is a ``ValueError`` whose message the app shows as it is.
"""

from __future__ import annotations

import html
import os
from dataclasses import dataclass

import numpy as np
from PIL import Image
from transformers import pipeline

from ..checkpoints import bundled_checkpoint
from ..data.scenes import SCENE_CLASSES
from ..processing.image_reading import UnreadableImageError, normalise_pixels, open_image, pil_to_rgb
from ..processing.visualization import centre_square, draw_boxes, semseg_palette

MIN_IMAGE_SIDE = 32  # px; smaller uploads are refused (the model reads 64 px centre crops)
VIEW_SIZE = 256  # px; the 64 px outputs are shown upscaled (nearest neighbour: the model's own pixels)
BOX_COLUMNS = ["label", "score", "x0", "y0", "x1", "y1"]
IMAGE_VIEWS = ("rgb", "depth", "normal", "semseg", "det")
# The app's panels that show each target: its image, plus the legend under a segmentation and the box table.
TARGET_PANELS = {"rgb": ("rgb",), "depth": ("depth",), "normal": ("normal",), "semseg": ("semseg", "legend"),
                 "det": ("det", "boxes"), "caption": ("caption",)}
BOX_BACKGROUND = (128, 128, 128)


@dataclass
class DecodingSettings:
    """The app's "advanced settings", turned into ``pipeline(...)`` keyword arguments.

    Image targets (MaskGIT) use ``num_steps``, ``image_temperature`` and ``image_top_p``; sequence
    targets (caption, boxes; autoregressive) ``text_temperature`` and ``text_top_p``; ``top_k``
    applies to both (0 = off). Defaults are the pipeline's ``DEFAULT_DECODING``.
    """

    num_steps: int = 8
    image_temperature: float = 2.0
    image_top_p: float = 0.0
    text_temperature: float = 0.3
    text_top_p: float = 0.8
    top_k: int = 0
    seed: int = 0

    def pipeline_kwargs(self, targets: list[str]) -> dict:
        """``{num_steps, temperature, top_k, top_p, seed}`` for a call generating ``targets``."""
        steps, top_k, seed = _whole(self.num_steps, "steps", 1), _whole(self.top_k, "top-k", 0), _whole(self.seed, "seed", 0)
        for value, field in ((self.image_temperature, "image temperature"), (self.text_temperature, "text temperature")):
            if not float(value) > 0:
                raise ValueError(f"{field} must be > 0, got {value}.")
        for value, field in ((self.image_top_p, "image top-p"), (self.text_top_p, "text top-p")):
            if not 0.0 <= float(value) <= 1.0:
                raise ValueError(f"{field} must lie in [0, 1] (0 = off), got {value}.")
        is_image = {name: name in ("rgb", "depth", "normal", "semseg") for name in targets}
        return {
            "num_steps": steps,
            "temperature": {n: float(self.image_temperature if is_image[n] else self.text_temperature) for n in targets},
            "top_p": {n: float(self.image_top_p if is_image[n] else self.text_top_p) for n in targets},
            "top_k": top_k,
            "seed": seed,
        }


class WebDemoSession:
    """One loaded ``pipeline("any-to-any")`` and the two things the app does with it.

    Args:
        checkpoint: a folder or Hub repo id with a FourM model and its processor (default: the
            bundled ``fourm-scenes64``).
    """

    def __init__(self, checkpoint=None):
        self.checkpoint = bundled_checkpoint() if checkpoint is None else str(checkpoint)
        if os.path.isdir(self.checkpoint) and not os.path.isfile(os.path.join(self.checkpoint, "config.json")):
            raise ValueError(f"checkpoint {self.checkpoint}: no config.json; expected a folder with a FourM model and "
                             "its processor (or a Hub repo id).")
        self.pipe = pipeline("any-to-any", model=self.checkpoint)
        self.targets = self.pipe.available_targets()
        self.image_targets = [name for name in self.targets if name != "rgb"]  # rgb is the input there
        semseg_vqvae = self.pipe.processor.vqvaes.get("tok_semseg")
        self.num_classes = semseg_vqvae.config.num_classes if semseg_vqvae is not None else 0
        self.class_names = semseg_class_names(self.num_classes)

    def rgb_to_targets(self, image, targets, settings: DecodingSettings | None = None, progress: bool = False) -> dict:
        """An uploaded image (path, PIL or array) -> the views of the chosen targets (see ``views``)."""
        image = load_uploaded_image(image)
        targets = self._check_targets(targets, self.image_targets, "RGB ->")
        settings = settings or DecodingSettings()
        output = self.pipe(image, target_modalities=targets, progress=progress, **settings.pipeline_kwargs(targets))
        return self.views(output, centre_square(image))

    def caption_to_targets(self, caption, targets, guidance_scale: float = 1.0, settings: DecodingSettings | None = None,
                           progress: bool = False, negative_prompt: str | None = None) -> dict:
        """A caption -> the views of the chosen targets. ``guidance_scale``: classifier-free guidance on
        the caption (1 = off, > 1 follows it more closely, < 0 steers away from it). ``negative_prompt``:
        a second caption to steer away from (the pipeline's ``negative_prompt``, weight 1; empty = none)."""
        if negative_prompt is not None and not isinstance(negative_prompt, str):
            raise ValueError(f"The negative prompt must be text, got {type(negative_prompt).__name__}.")
        if not isinstance(caption, str) or not caption.strip():
            raise ValueError("The caption is empty: type a description of a scene, e.g. "
                             "'a red cube in front of a blue sphere.'")
        targets = self._check_targets(targets, [name for name in self.targets if name != "caption"], "caption ->")
        scale = float(guidance_scale)
        if not -10.0 <= scale <= 10.0:
            raise ValueError(f"guidance scale must lie in [-10, 10], got {scale}.")
        settings = settings or DecodingSettings()
        output = self.pipe(text=caption.strip(), target_modalities=targets, cfg_scale=scale, progress=progress,
                           negative_prompt=negative_prompt or None, **settings.pipeline_kwargs(targets))
        return self.views(output, None)

    def views(self, output: dict, input_square: Image.Image | None) -> dict:
        """Pipeline output -> ``{name: PIL (VIEW_SIZE px) or None for each of IMAGE_VIEWS, "caption": str,
        "boxes": rows of BOX_COLUMNS, "legend": HTML of the classes in the segmentation, "panels": the
        panels to show}``. ``panels`` (see :func:`shown_panels`) names only what the call generated: the app
        hides the panels of targets that were not asked for."""
        views = {name: None for name in IMAGE_VIEWS}
        views["panels"] = shown_panels([name for name in output if name in TARGET_PANELS])
        for name in ("rgb", "depth", "normal", "semseg"):
            if name in output:
                views[name] = upscale(output[name]["image"])
        views["caption"] = output.get("caption", "")
        views["legend"] = semseg_legend_html(output["semseg"]["array"], self.class_names) if "semseg" in output else ""
        views["boxes"] = box_rows(output["det"]["boxes"]) if "det" in output else []
        if "det" in output:
            background = input_square if input_square is not None else (
                output["rgb"]["image"] if "rgb" in output else Image.new("RGB", (VIEW_SIZE, VIEW_SIZE), BOX_BACKGROUND))
            views["det"] = draw_boxes(upscale(background), output["det"]["boxes"], line_width=2)  # label and score
        return views

    @staticmethod
    def _check_targets(targets, allowed: list[str], what: str) -> list[str]:
        targets = [targets] if isinstance(targets, str) else list(targets or [])
        if not targets:
            raise ValueError(f"No target chosen: tick at least one of {', '.join(allowed)}.")
        unknown = [name for name in targets if name not in allowed]
        if unknown:
            raise ValueError(f"{what} cannot generate {unknown}; choose among {allowed}.")
        return [name for name in allowed if name in targets]  # the pipeline's chaining order


def load_uploaded_image(value) -> Image.Image:
    """An upload (file path, PIL image or (H, W, 3) array) -> an RGB PIL image, or a clear ValueError."""
    if value is None or (isinstance(value, str) and not value):
        raise ValueError("No image: upload one (PNG, JPEG, WebP, ...) or pick an example.")
    if isinstance(value, (str, os.PathLike)):
        name = os.path.basename(os.fspath(value))
        try:
            image = open_image(value, "upload")
        except UnreadableImageError as error:
            reason = type(error.__cause__).__name__ if error.__cause__ is not None else "empty or missing"
            raise ValueError(f"'{name}' is not an image this demo can read ({reason}); upload a PNG, "
                             "JPEG or WebP photo.") from error
    elif isinstance(value, np.ndarray):
        if value.ndim == 2:
            value = np.repeat(value[..., None], 3, axis=2)
        if value.ndim != 3 or value.shape[2] not in (3, 4):
            raise ValueError(f"The image array has shape {value.shape}; expected (H, W, 3) RGB.")
        pixels = normalise_pixels(value[..., :3], "The image array")
        if pixels.dtype != np.uint8:
            pixels = np.round(pixels.astype(np.float64) * 255.0).astype(np.uint8)
        image = Image.fromarray(np.ascontiguousarray(pixels))
    elif isinstance(value, Image.Image):
        image = pil_to_rgb(value, "The image")
    else:
        raise ValueError(f"Expected an image file, got {type(value).__name__}.")
    if min(image.size) < MIN_IMAGE_SIDE:
        raise ValueError(f"The image is too small ({image.width}x{image.height} px); it needs at least "
                         f"{MIN_IMAGE_SIDE} px on its shorter side.")
    return image


def upscale(image: Image.Image, size: int = VIEW_SIZE) -> Image.Image:
    """A square view of ``image`` at ``size`` px (nearest neighbour when enlarging, so pixels stay sharp)."""
    square = centre_square(image.convert("RGB"))
    resample = Image.Resampling.NEAREST if square.width <= size else Image.Resampling.BICUBIC
    return square.resize((size, size), resample)


def semseg_class_names(num_classes: int) -> list[str]:
    """Names of the segmentation classes: the rendered scenes' classes when the count matches, else ``class k``."""
    if num_classes == len(SCENE_CLASSES):
        return list(SCENE_CLASSES)
    return [f"class {index}" for index in range(num_classes)]


def semseg_legend_html(semseg: np.ndarray, class_names: list[str]) -> str:
    """The classes present in an (H, W) id map as HTML swatches in the decoder's palette, most frequent first."""
    semseg = np.asarray(semseg)
    palette = semseg_palette(max(len(class_names), int(semseg.max(initial=0)) + 1))
    ids, counts = np.unique(semseg, return_counts=True)
    items = []
    for class_id, count in sorted(zip(ids.tolist(), counts.tolist()), key=lambda pair: -pair[1]):
        name = class_names[class_id] if 0 <= class_id < len(class_names) else f"class {class_id}"
        red, green, blue = (int(c) for c in palette[class_id])
        items.append(f'<span class="fourm-legend-item"><span style="display:inline-block;width:14px;height:14px;'
                     f'background:rgb({red},{green},{blue});border:1px solid #444;margin-right:4px;'
                     f'vertical-align:middle"></span>{html.escape(name)} {html.escape(_percent(count, semseg.size))}</span>')
    return '<div class="fourm-legend">' + " &nbsp; ".join(items) + "</div>"


def _percent(count: int, total: int) -> str:
    share = 100 * count / total
    return f"{share:.0f}%" if share >= 0.5 else "<1%"


def shown_panels(targets: list[str]) -> list[str]:
    """The output panels that show ``targets`` (``TARGET_PANELS``), in the app's order."""
    unknown = [name for name in targets if name not in TARGET_PANELS]
    if unknown:
        raise ValueError(f"no panel shows {unknown}; the panels show {list(TARGET_PANELS)}.")
    return [panel for name in TARGET_PANELS if name in targets for panel in TARGET_PANELS[name]]


def box_rows(boxes: list[dict]) -> list[list]:
    """``[{"label", "score", "box": [x0, y0, x1, y1]}]`` -> table rows: label, score (None when unknown), then the
    coordinates normalised to [0, 1]."""
    return [[box["label"], None if box.get("score") is None else round(float(box["score"]), 3)]
            + [round(float(v), 3) for v in box["box"]] for box in boxes]


def _whole(value, field: str, minimum: int) -> int:
    number = float(value)
    if not number.is_integer() or number < minimum:
        raise ValueError(f"{field} must be a whole number >= {minimum}, got {value}.")
    return int(number)
