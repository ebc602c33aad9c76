"""Depth: the standard monocular-depth error and accuracy measures over valid pixels."""

from __future__ import annotations

import datasets
import evaluate
import numpy as np

from .base import _BOOL_MAP, _FLOAT_MAP, _FourMMetric, _prepare_valid_mask, _to_numpy


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
