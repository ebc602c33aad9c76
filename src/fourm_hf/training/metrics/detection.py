"""Object detection: COCO average precision, computed by ``pycocotools`` (the COCO evaluation code)."""

from __future__ import annotations

import contextlib
import io
import math

import datasets
import evaluate
import numpy as np

from .base import _FourMMetric

COCO_IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)
"""The IoU thresholds COCO's primary AP averages over (0.50, 0.55, ..., 0.95)."""

_AREA_ALL = 0  # index of COCOeval's "all" area range
_MAX_DETECTIONS = -1  # index of COCOeval's largest maxDets (100 per image)


def _xywh(box) -> list[float]:
    return [box[0], box[1], box[2] - box[0], box[3] - box[1]]


def coco_precision(predictions, references, iou_thresholds) -> tuple[np.ndarray, list[str]]:
    """Run ``pycocotools.cocoeval.COCOeval`` (``iouType="bbox"``) on prepared boxes.

    Args:
        predictions: per image ``[{"label", "score", "box"}]``; references: per image ``[{"label", "box"}]``;
            boxes ``[xmin, ymin, xmax, ymax]`` (converted to COCO's ``[x, y, w, h]``).
        iou_thresholds: (T,) IoU thresholds.

    Returns:
        precision (T, 101, K): COCO's interpolated precision at its 101 recall points for the "all"
        area range and at most 100 detections per image, -1 for a label without reference boxes;
        and the K labels in that order. None instead of the array when there is no detection at all.
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    labels = sorted({entry["label"] for boxes in (*references, *predictions) for entry in boxes})
    category = {label: number + 1 for number, label in enumerate(labels)}
    annotations = []
    for image, boxes in enumerate(references):
        for entry in boxes:
            xmin, ymin, xmax, ymax = entry["box"]
            annotations.append({"id": len(annotations) + 1, "image_id": image + 1, "category_id": category[entry["label"]],
                                "bbox": _xywh(entry["box"]), "area": (xmax - xmin) * (ymax - ymin), "iscrowd": 0})
    detections = [
        {"image_id": image + 1, "category_id": category[entry["label"]], "bbox": _xywh(entry["box"]), "score": entry["score"]}
        for image, boxes in enumerate(predictions) for entry in boxes
    ]
    if not detections:
        return None, labels
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
        truth = COCO()
        truth.dataset = {"images": [{"id": image + 1} for image in range(len(references))], "annotations": annotations,
                         "categories": [{"id": category[label], "name": label} for label in labels]}
        truth.createIndex()
        evaluation = COCOeval(truth, truth.loadRes(detections), iouType="bbox")
        evaluation.params.iouThrs = np.asarray(iou_thresholds, dtype=np.float64)
        evaluation.evaluate()
        evaluation.accumulate()
    return evaluation.eval["precision"][:, :, :, _AREA_ALL, _MAX_DETECTIONS], labels


class DetectionMAP(_FourMMetric):
    r"""COCO box average precision, computed by ``pycocotools``' ``COCOeval`` (``iouType="bbox"``).

    Inputs per image: ``predictions`` = ``[{"label", "score", "box"}]``, ``references`` =
    ``[{"label", "box"}]``; boxes are normalised ``[xmin, ymin, xmax, ymax]`` in [0, 1]; labels are
    strings (ints are converted with ``str``). Each label is one COCO category.

    The definition is COCO's: per category, detections of all images sorted by score, matched
    greedily to the unmatched reference box of their image with the highest IoU (a true positive
    when that IoU >= the threshold); AP is the mean of the precision envelope at COCO's 101 recall
    points (0, 0.01, ..., 1), for the "all" area range and at most 100 detections per image; the
    mean is over the categories that have a reference box (detections of other labels count for
    nothing). Normalised coordinates change nothing: IoU does not depend on scale.

    Returns ``map``: AP at ``iou_threshold`` (COCO's "AP50" for the default 0.5), ``map_50_95``:
    COCO's primary AP@[.50:.95] (mean over ``COCO_IOU_THRESHOLDS``), ``per_class_ap`` (at
    ``iou_threshold``) and ``iou_threshold``. Raises ``ValueError`` when there is no reference box.
    """

    def __init__(self, iou_threshold: float = 0.5, **kwargs):
        if not 0.0 < iou_threshold <= 1.0:
            raise ValueError(f"DetectionMAP: iou_threshold must be in (0, 1], got {iou_threshold}")
        self.iou_threshold = float(iou_threshold)
        super().__init__(**kwargs)

    def _info(self):
        box = datasets.List(datasets.Value("float64"), length=4)
        return evaluate.MetricInfo(
            description="COCO box average precision (pycocotools COCOeval): AP at one IoU threshold and AP@[.50:.95].",
            citation="Lin et al., Microsoft COCO: Common Objects in Context, ECCV 2014.",
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
        if not any(references):
            raise ValueError("DetectionMAP: the references contain no box; mAP is undefined")
        thresholds = np.unique(np.concatenate([COCO_IOU_THRESHOLDS, [self.iou_threshold]]))
        precision, labels = coco_precision(predictions, references, thresholds)
        referenced = sorted({entry["label"] for boxes in references for entry in boxes})
        if precision is None:  # no detection at all: every category's AP is 0
            return {"map": 0.0, "map_50_95": 0.0, "per_class_ap": {label: 0.0 for label in referenced},
                    "iou_threshold": self.iou_threshold}
        ap = precision.mean(axis=1)  # (T, K); -1 for labels without reference boxes
        at_threshold = ap[int(np.flatnonzero(np.isclose(thresholds, self.iou_threshold))[0])]
        coco = np.isclose(thresholds[:, None], COCO_IOU_THRESHOLDS[None, :]).any(axis=1)
        per_class_ap = {label: float(at_threshold[labels.index(label)]) for label in referenced}
        columns = [labels.index(label) for label in referenced]
        return {
            "map": float(np.mean(list(per_class_ap.values()))),
            "map_50_95": float(ap[coco][:, columns].mean()),
            "per_class_ap": per_class_ap,
            "iou_threshold": self.iou_threshold,
        }
