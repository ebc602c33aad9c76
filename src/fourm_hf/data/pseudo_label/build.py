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
from .labellers.dinov2 import Dinov2Labeller
from .labellers.human_poses import HumanPosesFromInput, human_poses_model_unavailable
from .labellers.sam_instance import DEFAULT_QUERY_POINTS_PER_SIDE, SamInstanceLabeller
from .labellers.t5_caption import T5CaptionLabeller
from .derived.sam_edge import SamEdgeLabeller

_OPTIONS = ("--depth-model, --segmentation-model, --detection-model, --feature-model, --caption-model, --t5-model, --sam-model, "
            "--dinov2-model, --human-poses-from-input, --canny, --color-palette, --metadata")


def build_labellers(
    depth_model=None, segmentation_model=None, detection_model=None, caption_model=None, feature_model=None,
    device: str = "cpu", batch_size: int = 8, normals: bool = True, field_of_view_degrees: float = DEFAULT_FIELD_OF_VIEW_DEGREES,
    depth_kind: str = "auto", detection_threshold: float = 0.5, feature_dtype: str = "float16", caption_prompt: str = "",
    caption_max_new_tokens: int = 30, t5_model=None, t5_max_length: int = 77, t5_dtype: str = "float32",
    canny: bool = False, canny_sigma: float = DEFAULT_CANNY_SIGMA, canny_thresholds=DEFAULT_CANNY_THRESHOLDS,
    color_palette: bool = False, palette_colors="random", metadata: bool = False, sam_model=None,
    sam_points_per_side: int = 32, sam_query_points_per_side: int = DEFAULT_QUERY_POINTS_PER_SIDE,
    sam_pred_iou_thresh: float = 0.88, sam_stability_score_thresh: float = 0.95, sam_edges: bool = True,
    dinov2_model=None, human_poses_model=None, human_poses_from_input: bool = False,
) -> list[Labeller]:
    """The labellers for the given model ids and switches, in the order their columns are written: the model
    labellers, normals after depth, ``t5_caption`` after ``caption``, ``sam_edge`` after ``sam_instance``, the
    ``human_poses`` pass-through, then the derived ``canny_edge`` and ``color_palette``, and ``metadata`` last
    (it reads every earlier column). ``human_poses_model`` is always an error (no SMPL regressor in transformers)."""
    if human_poses_model:
        raise human_poses_model_unavailable(human_poses_model)
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
    if sam_model:
        labellers.append(SamInstanceLabeller(
            sam_model, device, batch_size, points_per_side=sam_points_per_side, query_points_per_side=sam_query_points_per_side,
            pred_iou_thresh=sam_pred_iou_thresh, stability_score_thresh=sam_stability_score_thresh,
        ))
        if sam_edges:
            labellers.append(SamEdgeLabeller())
    if dinov2_model:
        labellers.append(Dinov2Labeller(dinov2_model, device, batch_size))
    if human_poses_from_input:
        labellers.append(HumanPosesFromInput())
    if canny:
        labellers.append(CannyEdgeLabeller(canny_sigma, canny_thresholds))
    if color_palette:
        labellers.append(ColorPaletteLabeller(palette_colors))
    if metadata:
        labellers.append(MetadataLabeller(segmentation.classes if segmentation is not None else None))
    if not labellers:
        raise ValueError(f"pseudo-label: no labeller given; pass at least one of {_OPTIONS}")
    return labellers
