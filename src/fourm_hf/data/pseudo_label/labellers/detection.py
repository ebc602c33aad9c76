"""``boxes`` from an ``object-detection`` pipeline (DETR, RT-DETR, YOLOS...)."""

from __future__ import annotations

import numpy as np

from ..base import Labeller, _pipeline, check_model_task


class DetectionLabeller(Labeller):
    """``boxes`` from an ``object-detection`` pipeline: detections with score >= ``threshold``."""

    columns = ("boxes",)
    task = "object-detection"

    def __init__(self, model_id: str, device: str = "cpu", batch_size: int = 8, threshold: float = 0.5):
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"boxes: threshold must be in [0, 1], got {threshold}")
        check_model_task(model_id, "boxes", self.task, ("MODEL_FOR_OBJECT_DETECTION_MAPPING_NAMES",))
        self.model_id, self.batch_size, self.threshold = model_id, batch_size, float(threshold)
        self.pipeline = _pipeline(self.task, model_id, device)

    def features(self, size):
        from datasets import List, Value

        return {"boxes": List({"label": Value("string"), "box": List(Value("float32"), length=4)})}

    def label(self, images, labels):
        outputs = self.pipeline(images, batch_size=self.batch_size, threshold=self.threshold)
        all_boxes = []
        for image, detections in zip(images, outputs):
            width, height = image.size
            ranked = sorted(detections, key=lambda d: (-d["score"], d["label"], tuple(d["box"].values())))
            boxes = []
            for detection in ranked:
                box = detection["box"]
                normalised = [box["xmin"] / width, box["ymin"] / height, box["xmax"] / width, box["ymax"] / height]
                boxes.append({"label": str(detection["label"]), "box": [float(np.clip(c, 0.0, 1.0)) for c in normalised]})
            all_boxes.append(boxes)
        return {"boxes": all_boxes}

    def metadata(self):
        return {"model": self.model_id, "task": self.task, "threshold": self.threshold}
