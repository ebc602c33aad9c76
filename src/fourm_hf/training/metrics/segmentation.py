"""Semantic segmentation: confusion-matrix mIoU and pixel accuracy."""

from __future__ import annotations

import datasets
import evaluate
import numpy as np

from .base import _BOOL_MAP, _INT_MAP, _FourMMetric, _prepare_valid_mask, _to_numpy


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
