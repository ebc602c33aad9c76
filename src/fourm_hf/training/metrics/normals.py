"""Surface normals: angular error statistics over valid pixels."""

from __future__ import annotations

import datasets
import evaluate
import numpy as np

from .base import (
    _BOOL_MAP,
    _FLOAT_VECTOR_MAP,
    _FourMMetric,
    _prepare_valid_mask,
    _to_numpy,
)


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
