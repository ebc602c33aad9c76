"""Evaluation metrics for 4M outputs, as ``evaluate.Metric`` subclasses shipped in the package.

``evaluate.load("name")`` fetches metric scripts from the network; these classes are used directly
instead and work offline::

    from fourm_hf.training.metrics import DepthMetric

    metric = DepthMetric()
    for batch in loader:
        metric.add_batch(predictions=batch_pred_depth, references=batch_true_depth)
    metric.compute()  # {"abs_rel": ..., "rmse": ..., "delta1": ..., ...}

Every metric accepts ``add`` / ``add_batch`` / ``compute`` like any ``evaluate`` metric. Inputs are
checked sample by sample when they are added, so a bad sample fails with a ``ValueError`` that names
the field and the sample index.

Which definition each number follows (quote it with the number):

- ``DepthMetric``: AbsRel, RMSE and delta < 1.25^k over pooled valid pixels, as in Eigen et al. 2014 (numpy).
- ``SurfaceNormalMetric``: angular error mean / median / % under 11.25, 22.5, 30 degrees (numpy).
- ``SegmentationMetric``: pixel accuracy and mIoU from one confusion matrix (numpy).
- ``DetectionMAP``: COCO box AP computed by ``pycocotools``' ``COCOeval`` (101-point interpolation,
  area "all", 100 detections per image): ``map`` at one IoU (COCO's AP50 by default) and ``map_50_95``.
- ``CaptionBLEU``: corpus BLEU computed by ``sacrebleu`` (default signature: 13a tokenizer,
  case-sensitive, exp smoothing), on the 0-1 scale; the result carries sacreBLEU's ``signature``.
- ``CaptionObjectF1``: F1 of "colour shape" mentions, our own (no standard exists for it).

Dense metrics (depth, normals, segmentation) pool all valid pixels of all samples (a "micro"
average): a large image weighs more than a small one. They accept an optional per-sample boolean
``valid_masks`` column (same height and width as the reference); leave it out, or pass ``None`` for a
sample, to use every pixel the metric considers valid on its own.

One module per task: ``depth``, ``normals``, ``segmentation``, ``detection``, ``captions``; ``base``
holds the shared ``evaluate.Metric`` plumbing.
"""

from .captions import CaptionBLEU, CaptionObjectF1, tokenize_caption
from .depth import DepthMetric
from .detection import COCO_IOU_THRESHOLDS, DetectionMAP, coco_precision
from .normals import SurfaceNormalMetric
from .segmentation import SegmentationMetric

__all__ = [
    "CaptionBLEU",
    "CaptionObjectF1",
    "DepthMetric",
    "DetectionMAP",
    "SegmentationMetric",
    "SurfaceNormalMetric",
    "COCO_IOU_THRESHOLDS",
    "coco_precision",
    "tokenize_caption",
]
