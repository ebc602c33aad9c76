"""Object detection: mean average precision over classes."""

from __future__ import annotations

import math

import datasets
import evaluate
import numpy as np

from .base import _FourMMetric


def box_iou(box_a, box_b) -> float:
    """IoU of two xyxy boxes; 0 when the union has no area."""
    width = min(box_a[2], box_b[2]) - max(box_a[0], box_b[0])
    height = min(box_a[3], box_b[3]) - max(box_a[1], box_b[1])
    intersection = max(width, 0.0) * max(height, 0.0)
    area_a = (box_a[2] - box_a[0]) * (box_a[3] - box_a[1])
    area_b = (box_b[2] - box_b[0]) * (box_b[3] - box_b[1])
    union = area_a + area_b - intersection
    return intersection / union if union > 0 else 0.0


def average_precision(is_true_positive: np.ndarray, num_references: int) -> float:
    """All-point interpolated AP (PASCAL VOC 2010+) of detections already sorted by score.

    precision is made monotone (p_interp(r) = max precision at recall >= r) and AP is the area
    under that step curve: sum_i (r_i - r_{i-1}) * p_interp(r_i).
    """
    if num_references == 0:
        raise ValueError("average_precision: no reference boxes")
    if len(is_true_positive) == 0:
        return 0.0
    true_positives = np.cumsum(is_true_positive)
    false_positives = np.cumsum(~is_true_positive)
    recall = np.concatenate([[0.0], true_positives / num_references])
    precision = np.concatenate([[0.0], true_positives / (true_positives + false_positives)])
    precision = np.maximum.accumulate(precision[::-1])[::-1]
    return float(np.sum((recall[1:] - recall[:-1]) * precision[1:]))


class DetectionMAP(_FourMMetric):
    r"""Mean average precision at one IoU threshold (default 0.5, i.e. mAP@0.5).

    Inputs per image: ``predictions`` = ``[{"label", "score", "box"}]``, ``references`` =
    ``[{"label", "box"}]``; boxes are normalised ``[xmin, ymin, xmax, ymax]`` in [0, 1]; labels are
    strings (ints are converted with ``str``).

    Per class, detections of all images are sorted by score (descending, ties in input order) and
    matched greedily as in COCO: each one to the unmatched reference box of its image and class with
    the highest IoU, a true positive when that IoU >= ``iou_threshold``, a false positive otherwise.
    AP is the all-point interpolated area under the precision-recall curve (:func:`average_precision`).
    ``map`` averages AP over the classes that have at least one reference box; detections of other
    classes do not count (as COCO). Also returns ``per_class_ap``. Raises ``ValueError`` when there
    is no reference box at all.
    """

    def __init__(self, iou_threshold: float = 0.5, **kwargs):
        if not 0.0 < iou_threshold <= 1.0:
            raise ValueError(f"DetectionMAP: iou_threshold must be in (0, 1], got {iou_threshold}")
        self.iou_threshold = float(iou_threshold)
        super().__init__(**kwargs)

    def _info(self):
        box = datasets.List(datasets.Value("float64"), length=4)
        return evaluate.MetricInfo(
            description="Mean average precision of boxes at a fixed IoU threshold (mAP@0.5 by default).",
            citation="Everingham et al., The PASCAL Visual Object Classes Challenge, IJCV 2010.",
            inputs_description="predictions: per image [{label, score, box}]; references: per image [{label, box}]",
            features=datasets.Features(
                {
                    "predictions": datasets.List(
                        {"label": datasets.Value("string"), "score": datasets.Value("float64"), "box": box}
                    ),
                    "references": datasets.List({"label": datasets.Value("string"), "box": box}),
                }
            ),
        )

    @staticmethod
    def _prepare_boxes(entries, field: str, index: int, with_score: bool) -> list[dict]:
        if not isinstance(entries, (list, tuple)):
            raise ValueError(f"DetectionMAP: {field}[{index}] must be a list of box dicts, got {type(entries).__name__}")
        prepared = []
        for number, entry in enumerate(entries):
            where = f"DetectionMAP: {field}[{index}][{number}]"
            needed = ("label", "score", "box") if with_score else ("label", "box")
            if not isinstance(entry, dict) or any(key not in entry for key in needed):
                raise ValueError(f"{where} must be a dict with keys {needed}, got {entry!r}")
            box = np.asarray(entry["box"], dtype=np.float64)
            if box.shape != (4,) or not np.isfinite(box).all():
                raise ValueError(f"{where}: box must be 4 finite numbers [xmin, ymin, xmax, ymax], got {entry['box']!r}")
            if box.min() < 0.0 or box.max() > 1.0:
                raise ValueError(f"{where}: box {box.tolist()} is outside [0, 1]; expected normalised coordinates")
            if box[0] > box[2] or box[1] > box[3]:
                raise ValueError(f"{where}: box {box.tolist()} has xmin > xmax or ymin > ymax")
            item = {"label": str(entry["label"]), "box": box.tolist()}
            if with_score:
                score = float(entry["score"])
                if not math.isfinite(score):
                    raise ValueError(f"{where}: score must be finite, got {entry['score']!r}")
                item["score"] = score
            prepared.append(item)
        return prepared

    def _prepare_sample(self, index, prediction, reference):
        prediction = self._prepare_boxes(prediction, "predictions", index, with_score=True)
        reference = self._prepare_boxes(reference, "references", index, with_score=False)
        return prediction, reference, {}

    def _compute(self, predictions, references):
        reference_boxes = {}  # label -> {image index -> list of boxes}
        for image, boxes in enumerate(references):
            for entry in boxes:
                reference_boxes.setdefault(entry["label"], {}).setdefault(image, []).append(entry["box"])
        if not reference_boxes:
            raise ValueError("DetectionMAP: the references contain no box; mAP is undefined")
        per_class_ap = {}
        for label, boxes_by_image in sorted(reference_boxes.items()):
            detections = [
                (entry["score"], image, entry["box"])
                for image, entries in enumerate(predictions)
                for entry in entries
                if entry["label"] == label
            ]
            order = np.argsort([-score for score, _, _ in detections], kind="stable")
            matched = {image: [False] * len(boxes) for image, boxes in boxes_by_image.items()}
            is_true_positive = np.zeros(len(detections), dtype=bool)
            for rank, detection_index in enumerate(order):
                _, image, box = detections[detection_index]
                best_iou, best_reference = 0.0, None
                for reference_index, reference_box in enumerate(boxes_by_image.get(image, [])):
                    if matched[image][reference_index]:
                        continue
                    iou = box_iou(box, reference_box)
                    if iou > best_iou:
                        best_iou, best_reference = iou, reference_index
                if best_reference is not None and best_iou >= self.iou_threshold:
                    matched[image][best_reference] = True
                    is_true_positive[rank] = True
            num_references = sum(len(boxes) for boxes in boxes_by_image.values())
            per_class_ap[label] = average_precision(is_true_positive, num_references)
        return {
            "map": float(np.mean(list(per_class_ap.values()))),
            "per_class_ap": per_class_ap,
            "iou_threshold": self.iou_threshold,
        }
