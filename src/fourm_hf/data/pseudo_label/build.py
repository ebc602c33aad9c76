"""The labellers for a set of model ids, in the order their columns are written."""

from __future__ import annotations

from .base import Labeller
from .labellers.caption import CaptionLabeller
from .labellers.depth import DepthLabeller
from .labellers.detection import DetectionLabeller
from .labellers.features import FeatureLabeller
from .geometry import DEFAULT_FIELD_OF_VIEW_DEGREES
from .derived.normals import NormalsFromDepthLabeller
from .labellers.segmentation import SegmentationLabeller


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
