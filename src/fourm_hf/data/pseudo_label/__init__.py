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
- ``t5_caption`` float16 (N, d): ``T5EncoderModel`` last hidden states of the row's ``caption`` (from the caption
              labeller or the input dataset), the caption's tokens only, at most 77 (4M-21's T5-XXL: d 4096).
- ``canny_edge`` uint8 (size, size) in {0, 1}: ``skimage.feature.canny`` of the grayscale image.
- ``color_palette`` ``[[r, g, b], ...]``: 1..7 colours of the image (0..255), k-means, largest cluster first.
- ``metadata`` str: JSON ``{key: bin}`` of 4M-21's metadata keys, from the image and the other columns.
              These four are defined in docs/pseudo-labeling-4m21.md.
- ``sam_instance``, ``sam_edge``, ``dinov2``, ``dinov2_global``, ``human_poses``: 4M-21's modalities, in the
              formats of docs/pseudo-labeling-4m21.md (``labellers/sam_instance.py``, ``derived/sam_edge.py``,
              ``labellers/dinov2.py``; ``human_poses`` has no labeller in the HF stack and is validated and
              passed through from the input dataset, ``labellers/human_poses.py``).
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

The package has one module per concern: ``images`` (decoding, RGB conversion, crop), ``geometry``
(stored depth, normals from depth), ``base`` (the ``Labeller`` interface), one module per labeller,
in ``labellers/`` when a pretrained model computes the column (``depth``, ``segmentation``, ``detection``,
``features``, ``caption``, ``t5_caption``) and in ``derived/`` when it is computed without one (``normals``,
``canny_edge``, ``color_palette``, ``metadata``), ``build``
(``build_labellers``), ``source`` (the input images) and ``runner`` (shards, resume, merge). The
command ``fourm-hf pseudo-label`` is ``fourm_hf.commands.pseudo_label``.
"""

from .base import Labeller, check_model_task
from .build import build_labellers
from .labellers.caption import CaptionLabeller
from .labellers.depth import METRIC_DEPTH_MODEL_TYPES, DepthLabeller
from .labellers.detection import DetectionLabeller
from .labellers.features import FeatureLabeller
from .labellers.dinov2 import Dinov2Labeller
from .labellers.human_poses import HumanPosesFromInput
from .labellers.sam_instance import SamInstanceLabeller, pack_instance_mask, unpack_instance_mask
from .derived.sam_edge import SamEdgeLabeller
from .geometry import (
    DEFAULT_FIELD_OF_VIEW_DEGREES,
    MAX_RELATIVE_DEPTH,
    SKY_NORMAL,
    depth_from_inverse_depth,
    normals_from_depth,
)
from .images import (
    IMAGE_EXTENSIONS,
    UnreadableImageError,
    decode_image,
    resize_and_center_crop,
    to_rgb,
)
from .derived.canny_edge import CannyEdgeLabeller, canny_edges
from .derived.color_palette import MAX_PALETTE_COLORS, ColorPaletteLabeller, extract_palette
from .derived.metadata import MetadataLabeller
from .derived.normals import NormalsFromDepthLabeller
from .labellers.t5_caption import T5CaptionLabeller
from .runner import load_metadata, merge_shards, output_features, pseudo_label_dataset
from .labellers.segmentation import UNLABELLED_CLASS, SegmentationLabeller
from .source import ImageSource

__all__ = [
    "CannyEdgeLabeller", "ColorPaletteLabeller", "MAX_PALETTE_COLORS", "MetadataLabeller", "T5CaptionLabeller",
    "canny_edges", "extract_palette", "CaptionLabeller", "DEFAULT_FIELD_OF_VIEW_DEGREES", "DepthLabeller", "DetectionLabeller",
    "Dinov2Labeller", "FeatureLabeller",
    "HumanPosesFromInput", "SamEdgeLabeller", "SamInstanceLabeller", "pack_instance_mask", "unpack_instance_mask",
    "IMAGE_EXTENSIONS", "ImageSource", "Labeller", "MAX_RELATIVE_DEPTH", "METRIC_DEPTH_MODEL_TYPES",
    "NormalsFromDepthLabeller", "SKY_NORMAL", "SegmentationLabeller", "UNLABELLED_CLASS", "UnreadableImageError",
    "build_labellers", "check_model_task", "decode_image", "depth_from_inverse_depth", "load_metadata",
    "merge_shards", "normals_from_depth", "output_features", "pseudo_label_dataset", "resize_and_center_crop",
    "to_rgb",
]
