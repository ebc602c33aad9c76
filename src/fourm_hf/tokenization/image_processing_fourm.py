"""FourMImageProcessor: one crop shared by every modality of a sample, per-modality resampling and
normalisation. PIL/numpy backend (no torchvision).

A sample is any subset of aligned maps of the same height and width H x W: an RGB image, a depth
map, a surface-normal map, a semantic segmentation, plus boxes in normalised xyxy coordinates of
that image. The processor picks ONE crop box per sample (``crop=None | "center" | "random"``, or an
explicit ``crop_box``), resizes the crop of every modality to ``image_size`` x ``image_size`` (S) with
the resampling that suits it, optionally flips it horizontally, and returns:

=================  =====================  ======================================================
key                shape / type           content
=================  =====================  ======================================================
``pixel_values``   (B, 3, S, S) float32   RGB for the 4M encoder's pixel input: ImageNet
                                          normalised, (x - mean) / std with
                                          mean (0.485, 0.456, 0.406), std (0.229, 0.224, 0.225)
``tokenizer_rgb``  (B, 3, S, S) float32   the same RGB for the RGB VQ-VAE: in [-1, 1] (2x - 1)
``depth``          (B, 1, S, S) float32   metres; 0 marks an invalid pixel
``normal``         (B, 3, S, S) float32   unit vectors in [-1, 1]; 0 where invalid
``semseg``         (B, S, S) int64        class ids, never new ids
``boxes``          list of B lists        ``{"label", "box", ...}`` with ``box`` normalised xyxy in
                                          the output crop, clipped to [0, 1]
``dropped_boxes``  list of B lists        the input box dicts that lie outside the crop
``crop_box``       (B, 4) int64           (left, top, right, bottom) in original pixels,
                                          right/bottom exclusive
``flipped``        (B,) bool              whether the sample was flipped horizontally
``original_size``  (B, 2) int64           (H, W) of the input
=================  =====================  ======================================================

Only the keys of the modalities given are returned (RGB gives both ``pixel_values`` and
``tokenizer_rgb``). ``crop_box`` and ``flipped`` travel with the sample: passing them back
(``crop_box=out["crop_box"], flip=out["flipped"]``) re-applies the very same crop to other
modalities of the same samples later.

Resampling per modality: RGB bicubic (or bilinear); depth bilinear over valid pixels only (a
normalised convolution: invalid pixels, depth 0, do not bleed into their neighbours; an output
pixel is valid when more than half of its interpolation weight falls on valid input pixels) or
nearest; normals bilinear, then re-normalised to unit length; segmentation nearest only. A
horizontal flip negates the x component of the normals (x points right in the image, as in the
embedded scene corpus's OpenCV camera frame) and mirrors the boxes.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import numpy as np
from PIL import Image
from transformers.image_processing_utils import BaseImageProcessor, BatchFeature
from transformers.processing_utils import ImagesKwargs

from ..remote_code import write_remote_code

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CROP_MODES = (None, "center", "random")
RGB_RESAMPLING = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR}
DEPTH_RESAMPLING = ("bilinear", "nearest")
# PIL modes turned into RGB with ``Image.convert("RGB")``; an alpha channel is dropped, not composited.
PIL_MODES_CONVERTED_TO_RGB = ("1", "L", "LA", "La", "P", "PA", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr", "LAB", "HSV")
NORMAL_RANGE_TOLERANCE = 1e-3
# Saved folders carry this module (see remote_code.py) so that
# AutoImageProcessor.from_pretrained(folder, trust_remote_code=True) works without fourm_hf.
REMOTE_CODE_MODULES = ("remote_code.py", "tokenization/image_processing_fourm.py")
REMOTE_CODE_AUTO_MAP = {"AutoImageProcessor": "image_processing_fourm.FourMImageProcessor"}


class FourMImageProcessorKwargs(ImagesKwargs, total=False):
    """The settings ``FourMImageProcessor`` saves and ``from_pretrained(..., **kwargs)`` may override."""

    image_size: int
    rgb_resample: str
    depth_resample: str
    crop_scale: list[float]
    crop_ratio: list[float]
    flip_probability: float
    num_semseg_classes: int
    semseg_ignore_index: int | None


# The RGB settings a call may override (transformers' names); None = the processor's own value.
PIXEL_OPTIONS = ("do_rescale", "rescale_factor", "do_normalize", "image_mean", "image_std", "do_convert_rgb",
                 "input_data_format")
DATA_FORMATS = ("channels_first", "channels_last")


class FourMImageProcessor(BaseImageProcessor):
    r"""Shared-crop image processor for the aligned dense modalities of 4M.

    Args:
        image_size: side S of every output map (224 for the 4M presets).
        rgb_resample: ``"bicubic"`` (default) or ``"bilinear"``.
        depth_resample: ``"bilinear"`` (over valid pixels, default) or ``"nearest"``.
        image_mean / image_std: normalisation of ``pixel_values`` (ImageNet by default).
        do_rescale / rescale_factor: integer images (PIL, uint8/uint16/int arrays or tensors) are
            multiplied by ``rescale_factor`` (1/255) to [0, 1]; with ``do_rescale=False`` images must
            already be floats in [0, 1]. Float images are taken as already rescaled.
        do_normalize: ``pixel_values = (rgb - image_mean) / image_std`` (else the [0, 1] pixels).
        do_convert_rgb: PIL images in other modes (L, P, RGBA, ...) are converted to RGB; with False
            they are rejected.
        crop_scale: range of the crop's area as a fraction of the image for ``crop="random"``.
        crop_ratio: range of the crop's width / height for ``crop="random"``.
        flip_probability: default probability of a horizontal flip per sample (0: never).
        num_semseg_classes: segmentation ids must lie in ``[0, num_semseg_classes)``.
        semseg_ignore_index: an extra id allowed in segmentation maps (e.g. 255 for unlabeled).

    Call with ``processor(images=..., depth=..., normal=..., semseg=..., boxes=...)``. A batch is a
    list (one entry per sample); anything else is one sample. Accepted inputs per sample:

    - ``images``: PIL image (``"RGB"``; grayscale, palette and RGBA modes are converted with
      ``Image.convert("RGB")``, which DROPS the alpha channel without compositing) or a numpy
      array / torch tensor (H, W, 3) or (3, H, W) (``input_data_format`` says which when both fit;
      inferred otherwise), integer (rescaled by ``rescale_factor``) or float in [0, 1].
    - ``depth``: numpy (H, W) or (H, W, 1) in metres (>= 0, 0 = invalid) or a PIL ``"F"`` image.
    - ``normal``: numpy (H, W, 3) float in [-1, 1] or uint8 (mapped by v / 255 * 2 - 1), or an RGB
      PIL image (uint8 mapping).
    - ``semseg``: numpy (H, W) integer ids or a PIL ``"L"`` / ``"P"`` / ``"I"`` image.
    - ``boxes``: ``[{"label": ..., "box": [xmin, ymin, xmax, ymax]}]`` normalised to [0, 1] in the
      original image; other keys are kept.
    """

    model_input_names = ["pixel_values"]
    valid_kwargs = FourMImageProcessorKwargs

    def __init__(
        self,
        image_size: int = 224,
        rgb_resample: str = "bicubic",
        depth_resample: str = "bilinear",
        image_mean: Sequence[float] = IMAGENET_MEAN,
        image_std: Sequence[float] = IMAGENET_STD,
        crop_scale: Sequence[float] = (0.8, 1.0),
        crop_ratio: Sequence[float] = (3 / 4, 4 / 3),
        flip_probability: float = 0.0,
        num_semseg_classes: int = 133,
        semseg_ignore_index: int | None = None,
        do_rescale: bool = True,
        rescale_factor: float = 1 / 255,
        do_normalize: bool = True,
        do_convert_rgb: bool = True,
        **kwargs,
    ):
        kwargs.pop("image_processor_type", None)
        kwargs.setdefault("auto_map", dict(REMOTE_CODE_AUTO_MAP))
        super().__init__(**kwargs)
        if int(image_size) < 1:
            raise ValueError(f"FourMImageProcessor: image_size must be >= 1, got {image_size}")
        if rgb_resample not in RGB_RESAMPLING:
            raise ValueError(f"FourMImageProcessor: rgb_resample must be one of {list(RGB_RESAMPLING)}, got {rgb_resample!r}")
        if depth_resample not in DEPTH_RESAMPLING:
            raise ValueError(
                f"FourMImageProcessor: depth_resample must be one of {list(DEPTH_RESAMPLING)}, got {depth_resample!r}"
            )
        for name, value in (("image_mean", image_mean), ("image_std", image_std)):
            if len(value) != 3:
                raise ValueError(f"FourMImageProcessor: {name} needs 3 values (R, G, B), got {value}")
        if min(image_std) <= 0:
            raise ValueError(f"FourMImageProcessor: image_std must be positive, got {image_std}")
        for name, (low, high), lowest in (("crop_scale", crop_scale, 0.0), ("crop_ratio", crop_ratio, 0.0)):
            if not lowest < low <= high:
                raise ValueError(f"FourMImageProcessor: {name} must be (low, high) with 0 < low <= high, got {(low, high)}")
        if crop_scale[1] > 1.0:
            raise ValueError(f"FourMImageProcessor: crop_scale is a fraction of the image area (<= 1), got {crop_scale}")
        if not 0.0 <= flip_probability <= 1.0:
            raise ValueError(f"FourMImageProcessor: flip_probability must be in [0, 1], got {flip_probability}")
        self.image_size = int(image_size)
        self.rgb_resample = rgb_resample
        self.depth_resample = depth_resample
        self.image_mean = [float(v) for v in image_mean]
        self.image_std = [float(v) for v in image_std]
        self.crop_scale = [float(v) for v in crop_scale]
        self.crop_ratio = [float(v) for v in crop_ratio]
        self.flip_probability = float(flip_probability)
        self.num_semseg_classes = int(num_semseg_classes)
        self.semseg_ignore_index = None if semseg_ignore_index is None else int(semseg_ignore_index)
        self.do_rescale = bool(do_rescale)
        self.rescale_factor = float(rescale_factor)
        self.do_normalize = bool(do_normalize)
        self.do_convert_rgb = bool(do_convert_rgb)
        self.pixel_options()  # validates mean/std/rescale_factor

    def pixel_options(self, **overrides) -> dict:
        """The RGB settings of one call: the processor's, with the call's non-None ``overrides``."""
        unknown = sorted(set(overrides) - set(PIXEL_OPTIONS))
        if unknown:
            raise TypeError(f"FourMImageProcessor: unknown option(s) {unknown}; expected some of {list(PIXEL_OPTIONS)}")
        options = {name: getattr(self, name, None) for name in PIXEL_OPTIONS}
        options.update({name: value for name, value in overrides.items() if value is not None})
        for name in ("image_mean", "image_std"):
            value = options[name]
            value = [float(value)] * 3 if isinstance(value, (int, float)) else [float(v) for v in value]
            if len(value) != 3:
                raise ValueError(f"FourMImageProcessor: {name} needs 3 values (R, G, B), got {options[name]}")
            options[name] = value
        if min(options["image_std"]) <= 0:
            raise ValueError(f"FourMImageProcessor: image_std must be positive, got {options['image_std']}")
        if not float(options["rescale_factor"]) > 0:
            raise ValueError(f"FourMImageProcessor: rescale_factor must be positive, got {options['rescale_factor']}")
        data_format = options["input_data_format"]
        data_format = getattr(data_format, "value", data_format)  # transformers' ChannelDimension enum
        if data_format is not None and data_format not in DATA_FORMATS:
            raise ValueError(f"FourMImageProcessor: input_data_format must be one of {DATA_FORMATS} or None, got {data_format!r}")
        options["input_data_format"] = data_format
        return options

    def save_pretrained(self, save_directory, push_to_hub: bool = False, **kwargs):
        """Write ``preprocessor_config.json`` plus the module code its ``auto_map`` points at."""
        if push_to_hub:
            files = self.save_pretrained(save_directory)
            repo_id = kwargs.pop("repo_id", os.path.basename(os.path.normpath(str(save_directory))))
            self.push_to_hub(repo_id, **kwargs)  # saves again into a temporary folder and uploads it
            return files
        files = super().save_pretrained(save_directory)
        write_remote_code(save_directory, REMOTE_CODE_MODULES)
        return files

    # ----------------------------------------------------------------------------------- call

    def __call__(
        self,
        images=None,
        depth=None,
        normal=None,
        semseg=None,
        boxes=None,
        *,
        crop: str | None = "center",
        crop_box=None,
        flip=None,
        flip_probability: float | None = None,
        generator: np.random.Generator | None = None,
        return_tensors: str | None = None,
        **pixel_overrides,
    ) -> BatchFeature:
        """Process one sample or a batch (lists). See the module docstring for the output keys.

        Args:
            crop: ``None`` (whole image, squashed to S x S), ``"center"`` (largest centred square)
                or ``"random"`` (area fraction in ``crop_scale``, aspect ratio in ``crop_ratio``, as
                RandomResizedCrop). Ignored when ``crop_box`` is given.
            crop_box: explicit (left, top, right, bottom) pixel boxes, (4,) or (B, 4), e.g. the
                ``crop_box`` of an earlier call, to re-apply its crop.
            flip: explicit horizontal flips, a bool or B bools (e.g. an earlier ``flipped``).
            flip_probability: probability of a flip when ``flip`` is not given (default: the
                processor's ``flip_probability``).
            generator: ``numpy.random.Generator`` for random crops and flips (required for them).
            return_tensors: ``None`` / ``"np"`` for numpy, ``"pt"`` for torch tensors.
            do_rescale, rescale_factor, do_normalize, image_mean, image_std, do_convert_rgb,
            input_data_format: override the processor's RGB settings for this call (see the class).
        """
        options = self.pixel_options(**pixel_overrides)
        inputs = {"images": images, "depth": depth, "normal": normal, "semseg": semseg}
        given = {name: value for name, value in inputs.items() if value is not None}
        if not given:
            raise ValueError("FourMImageProcessor: give at least one of images, depth, normal or semseg")
        is_batch = {name: isinstance(value, (list, tuple)) for name, value in given.items()}
        if len(set(is_batch.values())) > 1:
            raise ValueError(
                f"FourMImageProcessor: some modalities are batches (lists) and some single samples: {is_batch}; "
                "pass all as lists or all as single samples"
            )
        batched = next(iter(is_batch.values()))
        samples = {name: list(value) if batched else [value] for name, value in given.items()}
        batch_size = len(next(iter(samples.values())))
        for name, values in samples.items():
            if len(values) != batch_size:
                raise ValueError(
                    f"FourMImageProcessor: {name} has {len(values)} samples but "
                    f"{next(iter(samples))} has {batch_size}; expected one entry per sample"
                )
        if batch_size == 0:
            raise ValueError("FourMImageProcessor: the batch is empty")
        if boxes is not None:
            if not isinstance(boxes, (list, tuple)):
                raise ValueError(f"boxes: expected a list of box dicts per sample, got {type(boxes).__name__}")
            samples["boxes"] = list(boxes) if batched else [boxes]
            if len(samples["boxes"]) != batch_size:
                raise ValueError(f"boxes: got {len(samples['boxes'])} samples, expected {batch_size}")

        crop_boxes = self._explicit_crop_boxes(crop_box, batch_size, crop)
        if crop not in CROP_MODES:
            raise ValueError(f"FourMImageProcessor: crop must be one of {CROP_MODES}, got {crop!r}")
        flips = self._explicit_flips(flip, batch_size)
        flip_probability = self.flip_probability if flip_probability is None else float(flip_probability)
        needs_randomness = (crop_boxes is None and crop == "random") or (flips is None and flip_probability > 0)
        if needs_randomness and generator is None:
            raise ValueError(
                "FourMImageProcessor: random crops or flips need an explicit `generator=numpy.random.default_rng(seed)`"
            )

        outputs = []
        for index in range(batch_size):
            sample = {name: values[index] for name, values in samples.items()}
            decoded, size = self.decode_sample(index=index, **sample, pixel_options=options)
            if crop_boxes is not None:
                sample_crop = self._check_crop_box(crop_boxes[index], size, index)
            else:
                sample_crop = self.choose_crop_box(size, crop, generator)
            if flips is not None:
                sample_flip = flips[index]
            else:
                sample_flip = bool(flip_probability > 0 and generator.random() < flip_probability)
            outputs.append(self.apply_crop(decoded, size, sample_crop, sample_flip, options))
        return self._collate(outputs, return_tensors)

    def preprocess(self, *args, **kwargs) -> BatchFeature:
        """Same as calling the processor (the base class's single-image pipeline does not apply)."""
        return self(*args, **kwargs)

    # ----------------------------------------------------------------------------- decoding

    def decode_sample(self, index: int = 0, images=None, depth=None, normal=None, semseg=None, boxes=None,
                      pixel_options: dict | None = None):
        """Validate one sample and bring it to canonical numpy form.

        Returns ``(decoded, (H, W))`` with ``decoded`` holding ``rgb`` (H, W, 3) float32 in [0, 1],
        ``depth`` (H, W) float32 metres, ``normal`` (H, W, 3) float32, ``semseg`` (H, W) int64 and
        ``boxes`` (list of dicts) for the modalities given.
        """
        decoded = {}
        if images is not None:
            decoded["rgb"] = self._decode_rgb(images, index, pixel_options or self.pixel_options())
        if depth is not None:
            decoded["depth"] = self._decode_depth(depth, index)
        if normal is not None:
            decoded["normal"] = self._decode_normal(normal, index)
        if semseg is not None:
            decoded["semseg"] = self._decode_semseg(semseg, index)
        sizes = {name: array.shape[:2] for name, array in decoded.items()}
        if not sizes:
            raise ValueError(f"sample {index}: boxes need an image-like modality to give the image size")
        if len(set(sizes.values())) > 1:
            raise ValueError(
                f"sample {index}: modalities have different sizes {sizes} (height, width); "
                "all modalities of one sample must be aligned at the same resolution"
            )
        if boxes is not None:
            decoded["boxes"] = _validate_boxes(boxes, index)
        return decoded, next(iter(sizes.values()))

    def _decode_rgb(self, image, index: int, options: dict) -> np.ndarray:
        """One RGB image -> (H, W, 3) float32 in [0, 1] (rescaled per ``options``)."""
        where = f"images[{index}]"
        if isinstance(image, Image.Image):
            if image.mode != "RGB" and options["do_convert_rgb"] and image.mode in PIL_MODES_CONVERTED_TO_RGB:
                image = image.convert("RGB")
            elif image.mode != "RGB" and not options["do_convert_rgb"]:
                raise ValueError(f"{where}: PIL mode {image.mode!r} is not RGB and do_convert_rgb=False; "
                                 "convert it first or set do_convert_rgb=True")
            elif image.mode != "RGB":
                raise ValueError(f"{where}: PIL mode {image.mode!r} is not a colour image; expected RGB (or L/P/RGBA)")
            array = np.asarray(image)
        else:
            array = _channels_last(_as_array(image, where, allow_tensor=True), options["input_data_format"], where)
        if np.issubdtype(array.dtype, np.integer) or array.dtype == np.bool_:
            if not options["do_rescale"]:
                raise ValueError(f"{where}: integer pixels with do_rescale=False; pass floats in [0, 1] or set do_rescale=True")
            return (array.astype(np.float64) * float(options["rescale_factor"])).astype(np.float32).clip(0.0, 1.0)
        if not np.issubdtype(array.dtype, np.floating):
            raise ValueError(f"{where}: dtype {array.dtype}, expected integers (rescaled by rescale_factor) or float (0..1)")
        if not np.isfinite(array).all():
            raise ValueError(f"{where}: contains NaN or inf")
        if array.min() < 0.0 or array.max() > 1.0:
            raise ValueError(
                f"{where}: float values in [{array.min():.3g}, {array.max():.3g}], expected [0, 1] "
                "(pass uint8 for 0..255 images)"
            )
        return array.astype(np.float32)

    def _decode_depth(self, depth, index: int) -> np.ndarray:
        where = f"depth[{index}]"
        if isinstance(depth, Image.Image):
            if depth.mode != "F":
                raise ValueError(f"{where}: PIL mode {depth.mode!r}; expected 'F' (metres) or a numpy array in metres")
            depth = np.asarray(depth)
        array = _as_array(depth, where)
        if array.ndim == 3 and array.shape[-1] == 1:
            array = array[..., 0]
        if array.ndim != 2:
            raise ValueError(f"{where}: shape {array.shape}, expected (H, W) or (H, W, 1)")
        if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
            raise ValueError(f"{where}: dtype {array.dtype}, expected a real number type (metres)")
        array = array.astype(np.float32)
        if np.isnan(array).any():
            raise ValueError(f"{where}: contains NaN; mark invalid pixels with 0 instead")
        if not np.isfinite(array).all():
            raise ValueError(f"{where}: contains inf; mark invalid pixels with 0 instead")
        if array.min() < 0:
            raise ValueError(f"{where}: negative depth {array.min():.3g}; expected metres >= 0 (0 = invalid)")
        return array

    def _decode_normal(self, normal, index: int) -> np.ndarray:
        where = f"normal[{index}]"
        if isinstance(normal, Image.Image):
            if normal.mode != "RGB":
                raise ValueError(f"{where}: PIL mode {normal.mode!r}; expected an RGB-encoded normal map")
            normal = np.asarray(normal)
        array = _as_array(normal, where)
        if array.ndim != 3 or array.shape[-1] != 3:
            raise ValueError(f"{where}: shape {array.shape}, expected (H, W, 3)")
        if array.dtype == np.uint8:
            return array.astype(np.float32) / 255.0 * 2.0 - 1.0
        if not np.issubdtype(array.dtype, np.floating):
            raise ValueError(f"{where}: dtype {array.dtype}, expected float in [-1, 1] or uint8")
        if not np.isfinite(array).all():
            raise ValueError(f"{where}: contains NaN or inf")
        if np.abs(array).max() > 1.0 + NORMAL_RANGE_TOLERANCE:
            raise ValueError(f"{where}: values up to {np.abs(array).max():.3g} in magnitude, expected [-1, 1]")
        return array.astype(np.float32)

    def _decode_semseg(self, semseg, index: int) -> np.ndarray:
        where = f"semseg[{index}]"
        if isinstance(semseg, Image.Image):
            if semseg.mode not in ("L", "P", "I", "I;16"):
                raise ValueError(f"{where}: PIL mode {semseg.mode!r}; expected 'L', 'P', 'I' or 'I;16' class ids")
            semseg = np.asarray(semseg)
        array = _as_array(semseg, where)
        if array.ndim == 3 and array.shape[-1] == 1:
            array = array[..., 0]
        if array.ndim != 2:
            raise ValueError(f"{where}: shape {array.shape}, expected (H, W) class ids")
        if not np.issubdtype(array.dtype, np.integer):
            raise ValueError(f"{where}: dtype {array.dtype}, expected integer class ids")
        array = array.astype(np.int64)
        allowed = (array >= 0) & (array < self.num_semseg_classes)
        if self.semseg_ignore_index is not None:
            allowed |= array == self.semseg_ignore_index
        if not allowed.all():
            bad = int(array[~allowed][0])
            raise ValueError(
                f"{where}: class id {bad} outside [0, {self.num_semseg_classes}) "
                f"(num_semseg_classes; ignore index {self.semseg_ignore_index})"
            )
        return array

    # --------------------------------------------------------------------------------- crops

    def choose_crop_box(self, size, crop: str | None, generator: np.random.Generator | None = None):
        """(left, top, right, bottom) pixel crop of an (H, W) image for a crop mode."""
        height, width = size
        if crop is None:
            return (0, 0, width, height)
        if crop == "center":
            side = min(height, width)
            left, top = (width - side) // 2, (height - side) // 2
            return (left, top, left + side, top + side)
        return self._random_crop_box(height, width, generator)

    def _random_crop_box(self, height: int, width: int, generator: np.random.Generator):
        """Random crop with area fraction in ``crop_scale`` and aspect (w / h) in ``crop_ratio``.

        Up to 10 draws (uniform area fraction, log-uniform aspect ratio); when none fits, the
        largest centred crop whose aspect ratio is inside ``crop_ratio``.
        """
        area = height * width
        log_ratio = (math.log(self.crop_ratio[0]), math.log(self.crop_ratio[1]))
        for _ in range(10):
            target_area = area * generator.uniform(*self.crop_scale)
            aspect = math.exp(generator.uniform(*log_ratio))
            crop_width = int(round(math.sqrt(target_area * aspect)))
            crop_height = int(round(math.sqrt(target_area / aspect)))
            if 0 < crop_width <= width and 0 < crop_height <= height:
                top = int(generator.integers(0, height - crop_height + 1))
                left = int(generator.integers(0, width - crop_width + 1))
                return (left, top, left + crop_width, top + crop_height)
        image_ratio = width / height
        if image_ratio < self.crop_ratio[0]:
            crop_width, crop_height = width, max(1, int(round(width / self.crop_ratio[0])))
        elif image_ratio > self.crop_ratio[1]:
            crop_width, crop_height = max(1, int(round(height * self.crop_ratio[1]))), height
        else:
            crop_width, crop_height = width, height
        left, top = (width - crop_width) // 2, (height - crop_height) // 2
        return (left, top, left + crop_width, top + crop_height)

    @staticmethod
    def _explicit_crop_boxes(crop_box, batch_size: int, crop):
        if crop_box is None:
            return None
        if crop == "random":
            raise ValueError("FourMImageProcessor: pass either crop='random' or an explicit crop_box, not both")
        if hasattr(crop_box, "detach"):
            crop_box = crop_box.detach().cpu().numpy()
        boxes = np.asarray(crop_box)
        if boxes.shape == (4,):
            boxes = boxes[None]
        if boxes.shape != (batch_size, 4):
            raise ValueError(f"crop_box: shape {boxes.shape}, expected (4,) or ({batch_size}, 4) (left, top, right, bottom)")
        if not np.issubdtype(boxes.dtype, np.integer):
            if not np.array_equal(boxes, np.round(boxes)):
                raise ValueError(f"crop_box: expected integer pixel coordinates, got {boxes.tolist()}")
        return boxes.astype(np.int64).tolist()

    @staticmethod
    def _check_crop_box(crop_box, size, index: int):
        left, top, right, bottom = (int(v) for v in crop_box)
        height, width = size
        if not (0 <= left < right <= width and 0 <= top < bottom <= height):
            raise ValueError(
                f"crop_box[{index}]: {crop_box} is not a non-empty box inside the {height}x{width} image "
                "(expected 0 <= left < right <= W and 0 <= top < bottom <= H)"
            )
        return (left, top, right, bottom)

    @staticmethod
    def _explicit_flips(flip, batch_size: int):
        if flip is None:
            return None
        if hasattr(flip, "detach"):
            flip = flip.detach().cpu().numpy()
        flips = np.asarray(flip)
        if flips.ndim == 0:
            flips = np.full(batch_size, bool(flips))
        if flips.shape != (batch_size,):
            raise ValueError(f"flip: shape {flips.shape}, expected a bool or {batch_size} bools")
        return [bool(value) for value in flips]

    def apply_crop(self, decoded: dict, size, crop_box, flip: bool, pixel_options: dict | None = None) -> dict:
        """Crop, resize to S x S and optionally flip every modality of one decoded sample.

        Returns the per-sample outputs (channels-first arrays, boxes) plus its crop metadata.
        ``pixel_options`` (:meth:`pixel_options`) decides the normalisation of ``pixel_values``.
        """
        options = pixel_options or self.pixel_options()
        output = {"crop_box": np.asarray(crop_box, dtype=np.int64), "flipped": np.bool_(flip),
                  "original_size": np.asarray(size, dtype=np.int64)}
        if "rgb" in decoded:
            rgb = _resize_float(decoded["rgb"], crop_box, self.image_size, RGB_RESAMPLING[self.rgb_resample])
            rgb = np.clip(rgb, 0.0, 1.0)  # bicubic overshoots at edges
            if flip:
                rgb = rgb[:, ::-1]
            if options["do_normalize"]:
                mean = np.asarray(options["image_mean"], dtype=np.float32)
                std = np.asarray(options["image_std"], dtype=np.float32)
                output["pixel_values"] = ((rgb - mean) / std).transpose(2, 0, 1)
            else:
                output["pixel_values"] = rgb.transpose(2, 0, 1).astype(np.float32)
            output["tokenizer_rgb"] = (rgb * 2.0 - 1.0).transpose(2, 0, 1)
        if "depth" in decoded:
            depth = self._resize_depth(decoded["depth"], crop_box)
            if flip:
                depth = depth[:, ::-1]
            output["depth"] = depth[None]
        if "normal" in decoded:
            normal = _resize_float(decoded["normal"], crop_box, self.image_size, Image.Resampling.BILINEAR)
            length = np.linalg.norm(normal, axis=-1, keepdims=True)
            normal = np.where(length > 1e-6, normal / np.maximum(length, 1e-6), 0.0).astype(np.float32)
            if flip:
                normal = normal[:, ::-1] * np.asarray([-1.0, 1.0, 1.0], dtype=np.float32)
            output["normal"] = normal.transpose(2, 0, 1)
        if "semseg" in decoded:
            semseg = _resize_ids(decoded["semseg"], crop_box, self.image_size)
            if flip:
                semseg = semseg[:, ::-1]
            output["semseg"] = semseg
        if "boxes" in decoded:
            output["boxes"], output["dropped_boxes"] = transform_boxes(decoded["boxes"], size, crop_box, flip)
        return {name: np.ascontiguousarray(value) if isinstance(value, np.ndarray) else value
                for name, value in output.items()}

    def _resize_depth(self, depth: np.ndarray, crop_box) -> np.ndarray:
        size = self.image_size
        if self.depth_resample == "nearest":
            return _resize_float(depth[..., None], crop_box, size, Image.Resampling.NEAREST)[..., 0]
        valid = (depth > 0).astype(np.float32)
        weighted = _resize_float(np.stack([depth * valid, valid], axis=-1), crop_box, size, Image.Resampling.BILINEAR)
        depth_sum, weight = weighted[..., 0], weighted[..., 1]
        return np.where(weight > 0.5, depth_sum / np.maximum(weight, 1e-6), 0.0).astype(np.float32)

    # ------------------------------------------------------------------------------- batching

    @staticmethod
    def _collate(outputs: list[dict], return_tensors) -> BatchFeature:
        data = {}
        for name in outputs[0]:
            values = [output[name] for output in outputs]
            data[name] = values if name in ("boxes", "dropped_boxes") else np.stack(values)
        if return_tensors not in (None, "np", "pt"):
            raise ValueError(f"return_tensors must be None, 'np' or 'pt', got {return_tensors!r}")
        return BatchFeature(data, tensor_type=return_tensors, skip_tensor_conversion={"boxes", "dropped_boxes"})


# ------------------------------------------------------------------------------------ helpers


def _as_array(value, where: str, allow_tensor: bool = False) -> np.ndarray:
    if isinstance(value, np.ndarray):
        return value
    if hasattr(value, "detach"):
        if allow_tensor:
            return value.detach().cpu().numpy()
        raise TypeError(f"{where}: got a torch tensor; pass a channels-last numpy array or a PIL image")
    raise TypeError(f"{where}: expected a PIL image, a numpy array or a torch tensor, got {type(value).__name__}")


def _channels_last(array: np.ndarray, data_format: str | None, where: str) -> np.ndarray:
    """(H, W, 3) or (3, H, W) -> (H, W, 3); ``data_format`` decides, else the axis of size 3 (last when both are)."""
    if array.ndim != 3 or 3 not in (array.shape[0], array.shape[-1]):
        raise ValueError(
            f"{where}: shape {array.shape}, expected (H, W, 3) or (3, H, W) RGB "
            "(convert grayscale or RGBA explicitly, or pass a PIL image)"
        )
    if data_format is None:
        data_format = "channels_last" if array.shape[-1] == 3 else "channels_first"
    if data_format == "channels_first":
        if array.shape[0] != 3:
            raise ValueError(f"{where}: shape {array.shape} is not channels_first RGB (3, H, W)")
        return np.moveaxis(array, 0, -1)
    if array.shape[-1] != 3:
        raise ValueError(f"{where}: shape {array.shape} is not channels_last RGB (H, W, 3)")
    return array


def _resize_float(array: np.ndarray, crop_box, size: int, resample) -> np.ndarray:
    """Crop (H, W, C) float to ``crop_box`` and resize to (size, size, C) with PIL, channel by channel."""
    channels = []
    for channel in range(array.shape[-1]):
        image = Image.fromarray(np.ascontiguousarray(array[..., channel], dtype=np.float32))
        channels.append(np.asarray(image.resize((size, size), resample=resample, box=tuple(crop_box))))
    return np.stack(channels, axis=-1)


def _resize_ids(ids: np.ndarray, crop_box, size: int) -> np.ndarray:
    """Nearest-neighbour crop + resize of (H, W) integer ids (no interpolation: no new ids)."""
    if ids.max(initial=0) > np.iinfo(np.int32).max or ids.min(initial=0) < np.iinfo(np.int32).min:
        raise ValueError("semseg: class ids do not fit in int32")
    image = Image.fromarray(np.ascontiguousarray(ids, dtype=np.int32))
    resized = image.resize((size, size), resample=Image.Resampling.NEAREST, box=tuple(crop_box))
    return np.asarray(resized).astype(np.int64)


def _validate_boxes(boxes, index: int) -> list[dict]:
    where = f"boxes[{index}]"
    if not isinstance(boxes, (list, tuple)):
        raise ValueError(f"{where}: expected a list of box dicts, got {type(boxes).__name__}")
    validated = []
    for number, entry in enumerate(boxes):
        if not isinstance(entry, dict) or "box" not in entry:
            raise ValueError(f"{where}[{number}]: expected a dict with a 'box' key, got {entry!r}")
        box = np.asarray(entry["box"], dtype=np.float64)
        if box.shape != (4,) or not np.isfinite(box).all():
            raise ValueError(f"{where}[{number}]: box must be 4 finite numbers [xmin, ymin, xmax, ymax], got {entry['box']!r}")
        if box.min() < 0.0 or box.max() > 1.0:
            raise ValueError(f"{where}[{number}]: box {box.tolist()} outside [0, 1]; expected normalised coordinates")
        if box[0] > box[2] or box[1] > box[3]:
            raise ValueError(f"{where}[{number}]: box {box.tolist()} has xmin > xmax or ymin > ymax")
        validated.append({**entry, "box": box.tolist()})
    return validated


def transform_boxes(boxes: list[dict], size, crop_box, flip: bool) -> tuple[list[dict], list[dict]]:
    """Map normalised xyxy boxes of an (H, W) image into the crop (and flip), clipped to [0, 1].

    Returns ``(kept, dropped)``: boxes that overlap the crop with positive area (new ``box``), and
    the input dicts of those that lie outside it.
    """
    height, width = size
    left, top, right, bottom = crop_box
    kept, dropped = [], []
    for entry in boxes:
        xmin, ymin, xmax, ymax = entry["box"]
        new = np.array(
            [
                (xmin * width - left) / (right - left),
                (ymin * height - top) / (bottom - top),
                (xmax * width - left) / (right - left),
                (ymax * height - top) / (bottom - top),
            ]
        )
        new = np.clip(new, 0.0, 1.0)
        if new[2] - new[0] <= 0 or new[3] - new[1] <= 0:
            dropped.append(entry)
            continue
        if flip:
            new = np.array([1.0 - new[2], new[1], 1.0 - new[0], new[3]])
        kept.append({**entry, "box": [float(v) for v in new]})
    return kept, dropped


__all__ = ["FourMImageProcessor", "IMAGENET_MEAN", "IMAGENET_STD", "transform_boxes"]
