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
the field and the sample index. All math is numpy.

Dense metrics (depth, normals, segmentation) pool all valid pixels of all samples (a "micro"
average): a large image weighs more than a small one. They accept an optional per-sample boolean
``valid_masks`` column (same height and width as the reference); leave it out, or pass ``None`` for a
sample, to use every pixel the metric considers valid on its own.
"""

from __future__ import annotations

import math
from collections import Counter

import datasets
import evaluate
import numpy as np

_FLOAT_MAP = datasets.List(datasets.List(datasets.Value("float32")))
_FLOAT_VECTOR_MAP = datasets.List(datasets.List(datasets.List(datasets.Value("float32"))))
_INT_MAP = datasets.List(datasets.List(datasets.Value("int64")))
_BOOL_MAP = datasets.List(datasets.List(datasets.Value("bool")))


def _to_numpy(value, field: str, index: int) -> np.ndarray:
    """Array from a numpy array, torch tensor or nested list; clear error for anything else."""
    if hasattr(value, "detach"):  # torch.Tensor, without importing torch
        value = value.detach().cpu().numpy()
    try:
        return np.asarray(value)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{field}[{index}]: could not be read as an array ({error})") from None


class _FourMMetric(evaluate.Metric):
    """Shared plumbing: optional per-sample columns and per-sample validation on ``add``/``add_batch``.

    Subclasses list their optional columns in ``_optional_inputs`` and implement
    ``_prepare_sample(index, prediction, reference, **optional) -> (prediction, reference, optional)``
    which validates one sample and returns it in the stored form.
    """

    _optional_inputs: tuple[str, ...] = ()

    def _prepare_sample(self, index, prediction, reference, **optional):
        return prediction, reference, optional

    def _prepare_batch(self, predictions, references, optional):
        if predictions is None or references is None:
            raise ValueError(f"{type(self).__name__}: both `predictions` and `references` are required")
        if len(predictions) != len(references):
            raise ValueError(
                f"{type(self).__name__}: got {len(predictions)} predictions but {len(references)} references; "
                "expected one reference per prediction"
            )
        for name in self._optional_inputs:
            if optional.get(name) is None:
                optional[name] = [None] * len(predictions)
            elif len(optional[name]) != len(predictions):
                raise ValueError(
                    f"{type(self).__name__}: got {len(optional[name])} {name} for {len(predictions)} predictions"
                )
        prepared_predictions, prepared_references = [], []
        prepared_optional = {name: [] for name in self._optional_inputs}
        for index in range(len(predictions)):
            sample_optional = {name: optional[name][index] for name in self._optional_inputs}
            prediction, reference, sample_optional = self._prepare_sample(
                index, predictions[index], references[index], **sample_optional
            )
            prepared_predictions.append(prediction)
            prepared_references.append(reference)
            for name in self._optional_inputs:
                prepared_optional[name].append(sample_optional[name])
        return prepared_predictions, prepared_references, prepared_optional

    def add_batch(self, *, predictions=None, references=None, **kwargs):
        """Add a batch of predictions and references (lists with one entry per sample)."""
        optional = {name: kwargs.pop(name, None) for name in self._optional_inputs}
        if kwargs:
            raise ValueError(f"{type(self).__name__}: unexpected inputs {sorted(kwargs)}")
        predictions, references, optional = self._prepare_batch(predictions, references, optional)
        return super().add_batch(predictions=predictions, references=references, **optional)

    def add(self, *, prediction=None, reference=None, **kwargs):
        """Add one prediction and its reference."""
        batch_kwargs = {name: [value] for name, value in kwargs.items()}
        return self.add_batch(predictions=[prediction], references=[reference], **batch_kwargs)

    def compute(self, *, predictions=None, references=None, **kwargs):
        """Compute the metric over everything added so far plus the optional final batch given here."""
        optional = {name: kwargs.pop(name, None) for name in self._optional_inputs}
        if predictions is not None or references is not None:
            self.add_batch(predictions=predictions, references=references, **optional)
        elif any(value is not None for value in optional.values()):
            raise ValueError(f"{type(self).__name__}: {sorted(self._optional_inputs)} given without predictions")
        if self.writer is None:
            raise ValueError(f"{type(self).__name__}: nothing to compute, no predictions were added")
        return super().compute(**kwargs)


def _prepare_valid_mask(mask, shape, field_prefix: str, index: int):
    if mask is None:
        return None
    mask = _to_numpy(mask, "valid_masks", index)
    if mask.shape != shape:
        raise ValueError(
            f"{field_prefix}: valid_masks[{index}] has shape {mask.shape}, expected {shape} "
            "(the reference's height and width)"
        )
    if mask.dtype != bool:
        raise ValueError(f"{field_prefix}: valid_masks[{index}] has dtype {mask.dtype}, expected bool")
    return mask


# ------------------------------------------------------------------------------------------------
# Depth
# ------------------------------------------------------------------------------------------------


class DepthMetric(_FourMMetric):
    r"""Monocular depth metrics over valid pixels.

    Inputs per sample: ``predictions`` and ``references`` depth maps (H, W) (or (1, H, W)) in metres,
    optional ``valid_masks`` (H, W) bool. A pixel is valid where the reference is finite and > 0 and
    the mask (when given) is True. With ``median_scaling=True`` each prediction is first multiplied
    by ``median(ref) / median(pred)`` over its valid pixels (scale-ambiguous predictors).

    With p the prediction and g the reference over the N valid pixels of all samples:

    - ``abs_rel`` = mean(|p - g| / g)
    - ``rmse`` = sqrt(mean((p - g)^2))
    - ``delta1/2/3`` = fraction of pixels with max(p / g, g / p) < 1.25, 1.25^2, 1.25^3
      (a non-positive prediction counts as a failure).

    Returns those five numbers and ``num_pixels`` = N. Raises ``ValueError`` when N is 0 (no valid
    pixel at all) or when a prediction contains NaN/inf.
    """

    _optional_inputs = ("valid_masks",)

    def __init__(self, median_scaling: bool = False, **kwargs):
        self.median_scaling = bool(median_scaling)
        super().__init__(**kwargs)

    def _info(self):
        return evaluate.MetricInfo(
            description="AbsRel, RMSE and delta thresholds of predicted depth over valid pixels.",
            citation="Eigen et al., Depth Map Prediction from a Single Image, NeurIPS 2014.",
            inputs_description="predictions, references: (H, W) depth in metres; valid_masks: optional (H, W) bool",
            features=datasets.Features(
                {"predictions": _FLOAT_MAP, "references": _FLOAT_MAP, "valid_masks": _BOOL_MAP}
            ),
        )

    @staticmethod
    def _depth_map(value, field: str, index: int) -> np.ndarray:
        array = _to_numpy(value, field, index).astype(np.float32)
        if array.ndim == 3 and array.shape[0] == 1:
            array = array[0]
        if array.ndim != 2:
            raise ValueError(f"DepthMetric: {field}[{index}] has shape {array.shape}, expected (H, W) or (1, H, W)")
        return array

    def _prepare_sample(self, index, prediction, reference, valid_masks=None):
        prediction = self._depth_map(prediction, "predictions", index)
        reference = self._depth_map(reference, "references", index)
        if prediction.shape != reference.shape:
            raise ValueError(
                f"DepthMetric: predictions[{index}] has shape {prediction.shape} but references[{index}] "
                f"has shape {reference.shape}; expected equal shapes"
            )
        if not np.isfinite(prediction).all():
            raise ValueError(f"DepthMetric: predictions[{index}] contains NaN or inf")
        mask = _prepare_valid_mask(valid_masks, reference.shape, "DepthMetric", index)
        return prediction, reference, {"valid_masks": mask}

    def _compute(self, predictions, references, valid_masks):
        errors_abs_rel, errors_squared, ratios = [], [], []
        for prediction, reference, mask in zip(predictions, references, valid_masks):
            prediction = np.asarray(prediction, dtype=np.float64)
            reference = np.asarray(reference, dtype=np.float64)
            valid = np.isfinite(reference) & (reference > 0)
            if mask is not None:
                valid &= np.asarray(mask, dtype=bool)
            if not valid.any():
                continue
            p, g = prediction[valid], reference[valid]
            if self.median_scaling:
                median_prediction = np.median(p)
                if median_prediction <= 0:
                    raise ValueError("DepthMetric: median scaling needs a positive median prediction")
                p = p * (np.median(g) / median_prediction)
            errors_abs_rel.append(np.abs(p - g) / g)
            errors_squared.append((p - g) ** 2)
            safe_p = np.where(p > 0, p, 1.0)
            ratios.append(np.where(p > 0, np.maximum(p / g, g / safe_p), np.inf))
        if not errors_abs_rel:
            raise ValueError("DepthMetric: no valid pixels (reference > 0, finite and inside valid_masks)")
        abs_rel = np.concatenate(errors_abs_rel)
        squared = np.concatenate(errors_squared)
        ratio = np.concatenate(ratios)
        return {
            "abs_rel": float(abs_rel.mean()),
            "rmse": float(np.sqrt(squared.mean())),
            "delta1": float((ratio < 1.25).mean()),
            "delta2": float((ratio < 1.25**2).mean()),
            "delta3": float((ratio < 1.25**3).mean()),
            "num_pixels": int(abs_rel.size),
        }


# ------------------------------------------------------------------------------------------------
# Surface normals
# ------------------------------------------------------------------------------------------------


class SurfaceNormalMetric(_FourMMetric):
    r"""Angular error between predicted and reference surface normals, in degrees.

    Inputs per sample: ``predictions`` and ``references`` (H, W, 3) normal vectors (any length; both
    are normalised to unit length before comparison), optional ``valid_masks`` (H, W) bool. A pixel
    is valid where the reference vector has length > 1e-6 and is finite and the mask (when given) is
    True. A prediction of (near) zero length has no direction and gets an error of 90 degrees.

    With e = degrees(arccos(clip(<p/|p|, g/|g|>, -1, 1))) over the N valid pixels of all samples:
    ``mean_angle``, ``median_angle`` (degrees) and ``pct_within_11_25`` / ``pct_within_22_5`` /
    ``pct_within_30`` = 100 * fraction of pixels with e < 11.25 / 22.5 / 30 degrees, and
    ``num_pixels`` = N. Raises ``ValueError`` when N is 0.
    """

    _optional_inputs = ("valid_masks",)

    def _info(self):
        return evaluate.MetricInfo(
            description="Mean/median angular error of surface normals and % of pixels under thresholds.",
            citation="Eigen & Fergus, Predicting Depth, Surface Normals and Semantic Labels, ICCV 2015.",
            inputs_description="predictions, references: (H, W, 3) normals; valid_masks: optional (H, W) bool",
            features=datasets.Features(
                {"predictions": _FLOAT_VECTOR_MAP, "references": _FLOAT_VECTOR_MAP, "valid_masks": _BOOL_MAP}
            ),
        )

    def _prepare_sample(self, index, prediction, reference, valid_masks=None):
        prediction = _to_numpy(prediction, "predictions", index).astype(np.float32)
        reference = _to_numpy(reference, "references", index).astype(np.float32)
        for field, array in (("predictions", prediction), ("references", reference)):
            if array.ndim != 3 or array.shape[-1] != 3:
                raise ValueError(
                    f"SurfaceNormalMetric: {field}[{index}] has shape {array.shape}, expected (H, W, 3)"
                )
        if prediction.shape != reference.shape:
            raise ValueError(
                f"SurfaceNormalMetric: predictions[{index}] has shape {prediction.shape} but "
                f"references[{index}] has shape {reference.shape}; expected equal shapes"
            )
        if not np.isfinite(prediction).all():
            raise ValueError(f"SurfaceNormalMetric: predictions[{index}] contains NaN or inf")
        mask = _prepare_valid_mask(valid_masks, reference.shape[:2], "SurfaceNormalMetric", index)
        return prediction, reference, {"valid_masks": mask}

    def _compute(self, predictions, references, valid_masks):
        angles = []
        for prediction, reference, mask in zip(predictions, references, valid_masks):
            prediction = np.asarray(prediction, dtype=np.float64)
            reference = np.asarray(reference, dtype=np.float64)
            reference_length = np.linalg.norm(reference, axis=-1)
            valid = np.isfinite(reference_length) & (reference_length > 1e-6)
            if mask is not None:
                valid &= np.asarray(mask, dtype=bool)
            if not valid.any():
                continue
            p, g = prediction[valid], reference[valid] / reference_length[valid][:, None]
            prediction_length = np.linalg.norm(p, axis=-1)
            has_direction = prediction_length > 1e-6
            cosine = np.zeros(len(p))  # zero-length prediction: cos 0 -> 90 degrees
            cosine[has_direction] = (p[has_direction] * g[has_direction]).sum(-1) / prediction_length[has_direction]
            angles.append(np.degrees(np.arccos(np.clip(cosine, -1.0, 1.0))))
        if not angles:
            raise ValueError("SurfaceNormalMetric: no valid pixels (reference of non-zero length inside valid_masks)")
        angle = np.concatenate(angles)
        return {
            "mean_angle": float(angle.mean()),
            "median_angle": float(np.median(angle)),
            "pct_within_11_25": float(100.0 * (angle < 11.25).mean()),
            "pct_within_22_5": float(100.0 * (angle < 22.5).mean()),
            "pct_within_30": float(100.0 * (angle < 30.0).mean()),
            "num_pixels": int(angle.size),
        }


# ------------------------------------------------------------------------------------------------
# Semantic segmentation
# ------------------------------------------------------------------------------------------------


class SegmentationMetric(_FourMMetric):
    r"""Pixel accuracy and mean IoU of semantic segmentation maps.

    Args:
        num_classes: class ids are ``0 .. num_classes - 1``.
        ignore_index: reference id that marks unlabeled pixels (excluded), e.g. 255. ``None``: none.

    Inputs per sample: ``predictions`` and ``references`` (H, W) integer class ids, optional
    ``valid_masks`` (H, W) bool. Valid pixels: reference != ignore_index and inside the mask.

    From the confusion matrix C (C[t, p] = valid pixels of true class t predicted as p) over all
    samples: ``pixel_accuracy`` = trace(C) / sum(C); IoU_c = C[c, c] / (row_c + col_c - C[c, c]);
    ``mean_iou`` = mean of IoU_c over the classes present in the reference or the prediction
    (classes absent from both are excluded); ``per_class_iou`` lists IoU_c (NaN when excluded).
    Ids outside ``[0, num_classes)`` (other than ``ignore_index`` in references) raise
    ``ValueError``, as does having no valid pixel.
    """

    _optional_inputs = ("valid_masks",)

    def __init__(self, num_classes: int, ignore_index: int | None = None, **kwargs):
        if int(num_classes) < 1:
            raise ValueError(f"SegmentationMetric: num_classes must be >= 1, got {num_classes}")
        self.num_classes = int(num_classes)
        self.ignore_index = None if ignore_index is None else int(ignore_index)
        super().__init__(**kwargs)

    def _info(self):
        return evaluate.MetricInfo(
            description="Pixel accuracy and mean intersection-over-union of semantic segmentation.",
            citation="Long, Shelhamer & Darrell, Fully Convolutional Networks for Semantic Segmentation, CVPR 2015.",
            inputs_description="predictions, references: (H, W) int class ids; valid_masks: optional (H, W) bool",
            features=datasets.Features({"predictions": _INT_MAP, "references": _INT_MAP, "valid_masks": _BOOL_MAP}),
        )

    def _prepare_sample(self, index, prediction, reference, valid_masks=None):
        prediction = _to_numpy(prediction, "predictions", index)
        reference = _to_numpy(reference, "references", index)
        for field, array in (("predictions", prediction), ("references", reference)):
            if array.ndim != 2:
                raise ValueError(f"SegmentationMetric: {field}[{index}] has shape {array.shape}, expected (H, W)")
            if not np.issubdtype(array.dtype, np.integer):
                raise ValueError(
                    f"SegmentationMetric: {field}[{index}] has dtype {array.dtype}, expected integer class ids"
                )
        if prediction.shape != reference.shape:
            raise ValueError(
                f"SegmentationMetric: predictions[{index}] has shape {prediction.shape} but references[{index}] "
                f"has shape {reference.shape}; expected equal shapes"
            )
        labelled = reference != self.ignore_index if self.ignore_index is not None else np.ones_like(reference, bool)
        bad_reference = labelled & ((reference < 0) | (reference >= self.num_classes))
        if bad_reference.any():
            raise ValueError(
                f"SegmentationMetric: references[{index}] has id {int(reference[bad_reference][0])}, expected ids in "
                f"[0, {self.num_classes}) or ignore_index={self.ignore_index}"
            )
        if ((prediction < 0) | (prediction >= self.num_classes)).any():
            raise ValueError(
                f"SegmentationMetric: predictions[{index}] has ids outside [0, {self.num_classes})"
            )
        mask = _prepare_valid_mask(valid_masks, reference.shape, "SegmentationMetric", index)
        return prediction.astype(np.int64), reference.astype(np.int64), {"valid_masks": mask}

    def _compute(self, predictions, references, valid_masks):
        confusion = np.zeros((self.num_classes, self.num_classes), dtype=np.int64)
        for prediction, reference, mask in zip(predictions, references, valid_masks):
            prediction = np.asarray(prediction, dtype=np.int64)
            reference = np.asarray(reference, dtype=np.int64)
            valid = np.ones(reference.shape, dtype=bool)
            if self.ignore_index is not None:
                valid &= reference != self.ignore_index
            if mask is not None:
                valid &= np.asarray(mask, dtype=bool)
            pair_index = reference[valid] * self.num_classes + prediction[valid]
            confusion += np.bincount(pair_index, minlength=self.num_classes**2).reshape(confusion.shape)
        total = confusion.sum()
        if total == 0:
            raise ValueError("SegmentationMetric: no valid pixels (all ignored or outside valid_masks)")
        true_positive = np.diag(confusion).astype(np.float64)
        union = confusion.sum(0) + confusion.sum(1) - true_positive
        present = union > 0
        iou = np.full(self.num_classes, np.nan)
        iou[present] = true_positive[present] / union[present]
        return {
            "pixel_accuracy": float(true_positive.sum() / total),
            "mean_iou": float(iou[present].mean()),
            "per_class_iou": [float(value) for value in iou],
            "num_pixels": int(total),
        }


# ------------------------------------------------------------------------------------------------
# Detection
# ------------------------------------------------------------------------------------------------


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


# ------------------------------------------------------------------------------------------------
# Captions
# ------------------------------------------------------------------------------------------------


def tokenize_caption(text: str) -> list[str]:
    """Lowercase and split on whitespace (punctuation stays attached to its word)."""
    return text.lower().split()


def _ngram_counts(tokens: list[str], order: int) -> Counter:
    return Counter(tuple(tokens[start : start + order]) for start in range(len(tokens) - order + 1))


def _prepare_caption_pair(name: str, index: int, prediction, reference):
    if not isinstance(prediction, str):
        raise ValueError(f"{name}: predictions[{index}] must be a string, got {type(prediction).__name__}")
    references = [reference] if isinstance(reference, str) else reference
    if not isinstance(references, (list, tuple)) or not references or not all(isinstance(r, str) for r in references):
        raise ValueError(
            f"{name}: references[{index}] must be a string or a non-empty list of strings, got {reference!r}"
        )
    return prediction, list(references), {}


class CaptionBLEU(_FourMMetric):
    r"""Corpus BLEU (Papineni et al. 2002), BLEU-4 by default.

    Inputs: ``predictions`` strings, ``references`` a string or a list of strings per prediction.
    Tokenisation: lowercase, split on whitespace (:func:`tokenize_caption`).

    For n = 1..max_order: p_n = sum over sentences of clipped n-gram matches (each n-gram counted
    at most its maximum count in any reference of that sentence) / total n-grams in the predictions.
    With ``smooth=True`` add one to numerator and denominator of p_n for n >= 2 (Lin & Och 2004).
    Brevity penalty BP = 1 if c > r else exp(1 - r / c), c = total prediction length, r = sum of the
    reference lengths closest to each prediction's length (the shorter on ties).
    BLEU = BP * exp(mean_n log p_n); 0 when some p_n is 0 or c is 0.

    Returns ``bleu``, ``precisions`` (p_1..p_N), ``brevity_penalty``, ``length_ratio`` (c / r),
    ``prediction_length`` (c) and ``reference_length`` (r).
    """

    def __init__(self, max_order: int = 4, smooth: bool = False, **kwargs):
        if int(max_order) < 1:
            raise ValueError(f"CaptionBLEU: max_order must be >= 1, got {max_order}")
        self.max_order = int(max_order)
        self.smooth = bool(smooth)
        super().__init__(**kwargs)

    def _info(self):
        return evaluate.MetricInfo(
            description="Corpus-level BLEU with brevity penalty and optional add-one smoothing.",
            citation="Papineni et al., BLEU: a Method for Automatic Evaluation of Machine Translation, ACL 2002.",
            inputs_description="predictions: list of str; references: list of str or list of list of str",
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.List(datasets.Value("string"))}
            ),
        )

    def _prepare_sample(self, index, prediction, reference):
        return _prepare_caption_pair("CaptionBLEU", index, prediction, reference)

    def _compute(self, predictions, references):
        matches = np.zeros(self.max_order)
        totals = np.zeros(self.max_order)
        prediction_length = reference_length = 0
        for prediction, sentence_references in zip(predictions, references):
            prediction_tokens = tokenize_caption(prediction)
            reference_tokens = [tokenize_caption(reference) for reference in sentence_references]
            prediction_length += len(prediction_tokens)
            reference_length += min((abs(len(r) - len(prediction_tokens)), len(r)) for r in reference_tokens)[1]
            for order in range(1, self.max_order + 1):
                predicted = _ngram_counts(prediction_tokens, order)
                max_reference = Counter()
                for tokens in reference_tokens:
                    max_reference |= _ngram_counts(tokens, order)
                matches[order - 1] += sum(min(count, max_reference[gram]) for gram, count in predicted.items())
                totals[order - 1] += max(len(prediction_tokens) - order + 1, 0)
        if self.smooth:
            matches[1:] += 1
            totals[1:] += 1
        precisions = np.divide(matches, totals, out=np.zeros_like(matches), where=totals > 0)
        if prediction_length == 0:
            brevity_penalty = 0.0
        elif prediction_length > reference_length:
            brevity_penalty = 1.0
        else:
            brevity_penalty = math.exp(1.0 - reference_length / prediction_length)
        if (precisions > 0).all() and prediction_length > 0:
            bleu = brevity_penalty * math.exp(np.log(precisions).mean())
        else:
            bleu = 0.0
        return {
            "bleu": float(bleu),
            "precisions": [float(p) for p in precisions],
            "brevity_penalty": float(brevity_penalty),
            "length_ratio": float(prediction_length / reference_length) if reference_length else float("nan"),
            "prediction_length": int(prediction_length),
            "reference_length": int(reference_length),
        }


class CaptionObjectF1(_FourMMetric):
    r"""Precision / recall / F1 of "colour shape" object mentions in captions of rendered scenes.

    Args:
        colours: colour words, e.g. ``["red", "green", "blue"]``.
        shapes: shape words (singular), e.g. ``["sphere", "cube", "cylinder", "cone"]``.
        max_gap: at most this many other words may stand between a colour and its shape
            ("red metal cube" is a red cube with ``max_gap >= 1``).

    Both vocabularies may also be given to ``compute`` (overriding the constructor's).

    Mention extraction (:meth:`extract_mentions`): lowercase, split on whitespace, strip
    punctuation at word edges; a shape word may be plural (trailing "s" or "es"). Each colour word
    is paired with the first shape word within ``max_gap + 1`` words after it, unless another
    colour or shape word comes first. A caption's mentions are a set (repeats count once).

    Micro-averaged over the corpus with P / R the mention sets of prediction / reference:
    precision = sum|P & R| / sum|P|, recall = sum|P & R| / sum|R|, f1 = 2 p r / (p + r); a zero
    denominator gives 0 (as scikit-learn's ``zero_division=0``); the counts are returned too.
    """

    def __init__(self, colours=None, shapes=None, max_gap: int = 2, **kwargs):
        self.colours = None if colours is None else [c.lower() for c in colours]
        self.shapes = None if shapes is None else [s.lower() for s in shapes]
        self.max_gap = int(max_gap)
        super().__init__(**kwargs)

    def _info(self):
        return evaluate.MetricInfo(
            description="Precision/recall/F1 of colour-shape object mentions in generated captions.",
            citation="",
            inputs_description="predictions: list of str; references: list of str (or list of list of str, merged)",
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.List(datasets.Value("string"))}
            ),
        )

    def _prepare_sample(self, index, prediction, reference):
        return _prepare_caption_pair("CaptionObjectF1", index, prediction, reference)

    def extract_mentions(self, text: str, colours=None, shapes=None) -> set[tuple[str, str]]:
        """The set of (colour, shape) pairs mentioned in ``text``."""
        colours = set(colours if colours is not None else self.colours)
        shapes = set(shapes if shapes is not None else self.shapes)
        words = [word.strip(".,;:!?\"'()[]") for word in tokenize_caption(text)]

        def as_shape(word):
            for candidate in (word, word[:-1] if word.endswith("s") else None, word[:-2] if word.endswith("es") else None):
                if candidate and candidate in shapes:
                    return candidate
            return None

        mentions = set()
        for position, word in enumerate(words):
            if word not in colours:
                continue
            for following in words[position + 1 : position + 2 + self.max_gap]:
                shape = as_shape(following)
                if shape is not None:
                    mentions.add((word, shape))
                    break
                if following in colours:
                    break
        return mentions

    def _compute(self, predictions, references, colours=None, shapes=None):
        colours = [c.lower() for c in colours] if colours is not None else self.colours
        shapes = [s.lower() for s in shapes] if shapes is not None else self.shapes
        if not colours or not shapes:
            raise ValueError("CaptionObjectF1: `colours` and `shapes` vocabularies are required (constructor or compute)")
        matched = predicted = referenced = 0
        for prediction, sentence_references in zip(predictions, references):
            predicted_mentions = self.extract_mentions(prediction, colours, shapes)
            reference_mentions = set()
            for reference in sentence_references:
                reference_mentions |= self.extract_mentions(reference, colours, shapes)
            matched += len(predicted_mentions & reference_mentions)
            predicted += len(predicted_mentions)
            referenced += len(reference_mentions)
        precision = matched / predicted if predicted else 0.0
        recall = matched / referenced if referenced else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
        return {
            "precision": precision,
            "recall": recall,
            "f1": f1,
            "num_matched": matched,
            "num_predicted": predicted,
            "num_referenced": referenced,
        }


__all__ = [
    "CaptionBLEU",
    "CaptionObjectF1",
    "DepthMetric",
    "DetectionMAP",
    "SegmentationMetric",
    "SurfaceNormalMetric",
    "average_precision",
    "box_iou",
    "tokenize_caption",
]
