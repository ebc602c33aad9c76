"""``depth`` from a ``depth-estimation`` pipeline (DPT, Depth Anything, ZoeDepth...)."""

from __future__ import annotations

import numpy as np

from ..base import Labeller, _pipeline, check_model_task
from ..geometry import MAX_RELATIVE_DEPTH, depth_from_inverse_depth

METRIC_DEPTH_MODEL_TYPES = ("zoedepth", "depth_pro")
"""Model types whose depth output is in metres (Depth Anything says so in ``depth_estimation_type``)."""


class DepthLabeller(Labeller):
    """``depth`` from a ``depth-estimation`` pipeline (stored quantity: see the module docstring).

    ``depth_kind``: ``"auto"`` (metric if the model says so, else relative inverse), ``"metric"`` or
    ``"relative-inverse"``.
    """

    columns = ("depth",)
    task = "depth-estimation"

    def __init__(self, model_id: str, device: str = "cpu", batch_size: int = 8, depth_kind: str = "auto"):
        if depth_kind not in ("auto", "metric", "relative-inverse"):
            raise ValueError(f"depth: depth_kind must be 'auto', 'metric' or 'relative-inverse', got {depth_kind!r}")
        config = check_model_task(model_id, "depth", self.task, ("MODEL_FOR_DEPTH_ESTIMATION_MAPPING_NAMES",))
        if depth_kind == "auto":
            metric = getattr(config, "depth_estimation_type", None) == "metric" or config.model_type in METRIC_DEPTH_MODEL_TYPES
            depth_kind = "metric" if metric else "relative-inverse"
        self.model_id, self.depth_kind, self.batch_size = model_id, depth_kind, batch_size
        self.pipeline = _pipeline(self.task, model_id, device)

    def features(self, size):
        from datasets import Array2D

        return {"depth": Array2D((size, size), "float32")}

    def label(self, images, labels):
        with np.errstate(invalid="ignore", divide="ignore"):  # the pipeline's 8-bit preview of a constant map divides by 0
            outputs = self.pipeline(images, batch_size=self.batch_size)
        depths = []
        for image, output in zip(images, outputs):
            predicted = output["predicted_depth"].float().cpu().numpy()
            if predicted.shape != (image.height, image.width):
                raise ValueError(f"depth: model {self.model_id!r} returned shape {predicted.shape}, expected {(image.height, image.width)}")
            if self.depth_kind == "metric":
                depths.append(predicted.astype(np.float32))
            else:
                depths.append(depth_from_inverse_depth(predicted))
        return {"depth": depths}

    def metadata(self):
        scale = "metres as predicted" if self.depth_kind == "metric" else f"median(d) / d, clipped to {MAX_RELATIVE_DEPTH}"
        return {"model": self.model_id, "task": self.task, "depth_kind": self.depth_kind, "depth_scale": scale}
