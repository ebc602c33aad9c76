"""What every metric here shares: optional per-sample columns and per-sample validation on ``add``."""

from __future__ import annotations

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
