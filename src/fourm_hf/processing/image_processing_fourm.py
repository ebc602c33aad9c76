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

Resampling per modality (``image_modalities.py``, with the decoding of each input): RGB bicubic
(or bilinear); depth bilinear over valid pixels only (a normalised convolution: invalid pixels,
depth 0, do not bleed into their neighbours; an output pixel is valid when more than half of its
interpolation weight falls on valid input pixels) or nearest; normals bilinear, then re-normalised
to unit length; segmentation nearest only. The crop box choice and the boxes that follow it live in
``image_crops.py``. A horizontal flip negates the x component of the normals (x points right in
the image, as in the embedded scene corpus's OpenCV camera frame) and mirrors the boxes.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
from transformers.image_processing_utils import BaseImageProcessor, BatchFeature
from transformers.processing_utils import ImagesKwargs

from ..remote_code import write_class_code
from .image_crops import (
    CROP_MODES,
    check_crop_box,
    choose_crop_box,
    explicit_crop_boxes,
    explicit_flips,
    transform_boxes,
    validate_boxes,
)
from .image_modalities import (
    DATA_FORMATS,
    DEPTH_RESAMPLING,
    RGB_RESAMPLING,
    decode_depth,
    decode_normal,
    decode_rgb,
    decode_semseg,
    resize_depth,
    resize_ids,
    resize_normal,
    resize_rgb,
)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Saved folders carry this module and the modules it imports (remote_code.write_class_code), so that
# AutoImageProcessor.from_pretrained(folder, trust_remote_code=True) works without fourm_hf.
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


def unnest_images(images):
    """A batch given as one list of images per sample (``[[image], [image]]``, as transformers processors
    take them) -> one image per sample (``[image, image]``); anything else is returned as it is.

    4M reads exactly one RGB image per sample: an empty or longer inner list is a ValueError naming the sample.
    """
    if not isinstance(images, (list, tuple)) or not images or not all(isinstance(entry, (list, tuple)) for entry in images):
        return images
    if any(isinstance(item, (int, float, list, tuple)) for entry in images for item in entry):
        return images  # nested numbers: one image written as a list of pixel rows, decoded (and checked) later
    for index, entry in enumerate(images):
        if len(entry) != 1:
            raise ValueError(
                f"images[{index}]: a 4M sample holds exactly one RGB image, got a list of {len(entry)}; every sample "
                "of a batch needs its image (4M batches hold one (B, ...) array per modality: process samples "
                "without an image in a call of their own, as the any-to-any pipeline groups them)"
            )
    return [entry[0] for entry in images]


class FourMImageProcessor(BaseImageProcessor):
    r"""Shared-crop image processor for the aligned dense modalities of 4M.

    Args:
        image_size: side S of every output map (224 for the 4M presets).
        rgb_resample: ``"bicubic"`` (default) or ``"bilinear"``.
        depth_resample: ``"bilinear"`` (over valid pixels, default) or ``"nearest"``.
        image_mean / image_std: normalisation of ``pixel_values`` (ImageNet by default).
        do_rescale / rescale_factor: integer images (PIL, uint8/uint16/int arrays or tensors) are
            multiplied by ``rescale_factor`` (1/255) to [0, 1]; with the default 1/255, 16-bit images
            are first scaled to 8 bits and bool ones map to 0/255 (``image_reading.py``); other
            values outside [0, 1] after rescaling are refused, never clipped. With ``do_rescale=False``
            images must already be floats in [0, 1]. Float images are taken as already rescaled.
        do_normalize: ``pixel_values = (rgb - image_mean) / image_std`` (else the [0, 1] pixels).
        do_convert_rgb: PIL images in other modes (L, P, RGBA, ...) and gray or RGBA arrays /
            tensors are converted to RGB (an alpha channel is dropped); with False they are rejected.
        crop_scale: range of the crop's area as a fraction of the image for ``crop="random"``.
        crop_ratio: range of the crop's width / height for ``crop="random"``.
        flip_probability: default probability of a horizontal flip per sample (0: never).
        num_semseg_classes: segmentation ids must lie in ``[0, num_semseg_classes)``.
        semseg_ignore_index: an extra id allowed in segmentation maps (e.g. 255 for unlabeled).

    Call with ``processor(images=..., depth=..., normal=..., semseg=..., boxes=...)``. A batch is a
    list (one entry per sample); anything else is one sample. Accepted inputs per sample:

    - ``images``: PIL image (``"RGB"``; grayscale, palette and RGBA modes are converted with
      ``Image.convert("RGB")``, which DROPS the alpha channel without compositing) or a numpy
      array / torch tensor (H, W, C) or (C, H, W) with C = 3, or with ``do_convert_rgb`` also
      C = 1 (gray, repeated; also (H, W)) or C = 4 (RGBA, alpha dropped); ``input_data_format``
      says which layout, else channels-last when the last axis is a channel count. Integer pixels
      are rescaled by ``rescale_factor``; floats must lie in [0, 1].
    - ``depth``: numpy (H, W) or (H, W, 1) in metres (>= 0, 0 = invalid) or a PIL ``"F"`` image.
    - ``normal``: numpy (H, W, 3) float in [-1, 1] or uint8 (mapped by v / 255 * 2 - 1), or an RGB
      PIL image (uint8 mapping).
    - ``semseg``: numpy (H, W) integer ids or a PIL ``"L"`` / ``"P"`` / ``"I"`` image.
    - ``boxes``: ``[{"label": ..., "box": [xmin, ymin, xmax, ymax]}]`` normalised to [0, 1] in the
      original image; other keys are kept.
    """

    model_input_names = ["pixel_values"]
    valid_kwargs = FourMImageProcessorKwargs
    # Class-level defaults of transformers' RGB settings (as transformers' own image processors declare
    # them); every instance sets its own values in __init__.
    do_rescale = True
    rescale_factor = 1 / 255
    do_normalize = True
    image_mean = IMAGENET_MEAN
    image_std = IMAGENET_STD
    do_convert_rgb = True

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
        write_class_code(save_directory, type(self))
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
        """Process one sample or a batch (lists). See the module docstring for the output keys. ``images`` may
        also come as one list per sample (``[[image], [image]]``, as transformers processors take them).

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
        inputs = {"images": unnest_images(images), "depth": depth, "normal": normal, "semseg": semseg}
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

        crop_boxes = explicit_crop_boxes(crop_box, batch_size, crop)
        if crop not in CROP_MODES:
            raise ValueError(f"FourMImageProcessor: crop must be one of {CROP_MODES}, got {crop!r}")
        flips = explicit_flips(flip, batch_size)
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
                sample_crop = check_crop_box(crop_boxes[index], size, index)
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
            decoded["rgb"] = decode_rgb(images, f"images[{index}]", pixel_options or self.pixel_options())
        if depth is not None:
            decoded["depth"] = decode_depth(depth, f"depth[{index}]")
        if normal is not None:
            decoded["normal"] = decode_normal(normal, f"normal[{index}]")
        if semseg is not None:
            decoded["semseg"] = decode_semseg(semseg, f"semseg[{index}]", self.num_semseg_classes, self.semseg_ignore_index)
        sizes = {name: array.shape[:2] for name, array in decoded.items()}
        if not sizes:
            raise ValueError(f"sample {index}: boxes need an image-like modality to give the image size")
        if len(set(sizes.values())) > 1:
            raise ValueError(
                f"sample {index}: modalities have different sizes {sizes} (height, width); "
                "all modalities of one sample must be aligned at the same resolution"
            )
        if boxes is not None:
            decoded["boxes"] = validate_boxes(boxes, index)
        return decoded, next(iter(sizes.values()))

    # --------------------------------------------------------------------------------- crops

    def choose_crop_box(self, size, crop: str | None, generator: np.random.Generator | None = None):
        """(left, top, right, bottom) pixel crop of an (H, W) image for a crop mode (see ``__call__``)."""
        return choose_crop_box(size, crop, self.crop_scale, self.crop_ratio, generator)

    def apply_crop(self, decoded: dict, size, crop_box, flip: bool, pixel_options: dict | None = None) -> dict:
        """Crop, resize to S x S and optionally flip every modality of one decoded sample.

        Returns the per-sample outputs (channels-first arrays, boxes) plus its crop metadata.
        ``pixel_options`` (:meth:`pixel_options`) decides the normalisation of ``pixel_values``.
        """
        options = pixel_options or self.pixel_options()
        output = {"crop_box": np.asarray(crop_box, dtype=np.int64), "flipped": np.bool_(flip),
                  "original_size": np.asarray(size, dtype=np.int64)}
        if "rgb" in decoded:
            rgb = resize_rgb(decoded["rgb"], crop_box, self.image_size, self.rgb_resample)
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
            depth = resize_depth(decoded["depth"], crop_box, self.image_size, self.depth_resample)
            if flip:
                depth = depth[:, ::-1]
            output["depth"] = depth[None]
        if "normal" in decoded:
            normal = resize_normal(decoded["normal"], crop_box, self.image_size)
            if flip:
                normal = normal[:, ::-1] * np.asarray([-1.0, 1.0, 1.0], dtype=np.float32)
            output["normal"] = normal.transpose(2, 0, 1)
        if "semseg" in decoded:
            semseg = resize_ids(decoded["semseg"], crop_box, self.image_size)
            if flip:
                semseg = semseg[:, ::-1]
            output["semseg"] = semseg
        if "boxes" in decoded:
            output["boxes"], output["dropped_boxes"] = transform_boxes(decoded["boxes"], size, crop_box, flip)
        return {name: np.ascontiguousarray(value) if isinstance(value, np.ndarray) else value
                for name, value in output.items()}

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


__all__ = ["FourMImageProcessor", "IMAGENET_MEAN", "IMAGENET_STD", "transform_boxes"]
