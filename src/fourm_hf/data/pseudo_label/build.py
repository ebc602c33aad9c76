"""The labellers for a set of model ids and options, in the order their columns are written."""

from __future__ import annotations

from .base import Labeller
from .derived.canny_edge import DEFAULT_CANNY_SIGMA, DEFAULT_CANNY_THRESHOLDS, CannyEdgeLabeller
from .derived.color_palette import ColorPaletteLabeller
from .derived.metadata import MetadataLabeller
from .derived.normals import NormalsFromDepthLabeller
from .geometry import DEFAULT_FIELD_OF_VIEW_DEGREES
from .labellers.caption import CaptionLabeller
from .labellers.depth import DepthLabeller
from .labellers.detection import DetectionLabeller
from .labellers.features import FeatureLabeller
from .labellers.segmentation import SegmentationLabeller
from .labellers.t5_caption import T5CaptionLabeller

_OPTIONS = "--depth-model, --segmentation-model, --detection-model, --feature-model, --caption-model, --t5-model, --canny, --color-palette, --metadata"


def build_labellers(
    depth_model=None, segmentation_model=None, detection_model=None, caption_model=None, feature_model=None,
    device: str = "cpu", batch_size: int = 8, normals: bool = True, field_of_view_degrees: float = DEFAULT_FIELD_OF_VIEW_DEGREES,
    depth_kind: str = "auto", detection_threshold: float = 0.5, feature_dtype: str = "float16", caption_prompt: str = "",
    caption_max_new_tokens: int = 30, t5_model=None, t5_max_length: int = 77, t5_dtype: str = "float32",
    canny: bool = False, canny_sigma: float = DEFAULT_CANNY_SIGMA, canny_thresholds=DEFAULT_CANNY_THRESHOLDS,
    color_palette: bool = False, palette_colors="random", metadata: bool = False,
) -> list[Labeller]:
    """The labellers for the given model ids and switches, in the order their columns are written: the model
    labellers, normals after depth, ``t5_caption`` after ``caption``, then the derived ``canny_edge`` and
    ``color_palette``, and ``metadata`` last (it reads every earlier column)."""
    labellers = []
    if depth_model:
        labellers.append(DepthLabeller(depth_model, device, batch_size, depth_kind))
        if normals:
            labellers.append(NormalsFromDepthLabeller(field_of_view_degrees))
    segmentation = None
    if segmentation_model:
        segmentation = SegmentationLabeller(segmentation_model, device, batch_size)
        labellers.append(segmentation)
    if detection_model:
        labellers.append(DetectionLabeller(detection_model, device, batch_size, detection_threshold))
    if feature_model:
        labellers.append(FeatureLabeller(feature_model, device, batch_size, dtype=feature_dtype))
    if caption_model:
        labellers.append(CaptionLabeller(caption_model, device, batch_size, caption_prompt, caption_max_new_tokens))
    if t5_model:
        labellers.append(T5CaptionLabeller(t5_model, device, batch_size, t5_max_length, dtype=t5_dtype))
    if canny:
        labellers.append(CannyEdgeLabeller(canny_sigma, canny_thresholds))
    if color_palette:
        labellers.append(ColorPaletteLabeller(palette_colors))
    if metadata:
        labellers.append(MetadataLabeller(segmentation.classes if segmentation is not None else None))
    if not labellers:
        raise ValueError(f"pseudo-label: no labeller given; pass at least one of {_OPTIONS}")
    return labellers
