"""``semseg`` from an ``image-segmentation`` pipeline with ``subtask="semantic"`` (SegFormer, Mask2Former...)."""

from __future__ import annotations

import numpy as np

from ..base import Labeller, _pipeline, check_model_task

UNLABELLED_CLASS = 255
"""``semseg`` value of a pixel that no predicted segment covers (semantic post-processing covers all)."""


class SegmentationLabeller(Labeller):
    """``semseg`` class ids from an ``image-segmentation`` pipeline run with ``subtask="semantic"``."""

    columns = ("semseg",)
    task = "image-segmentation"

    def __init__(self, model_id: str, device: str = "cpu", batch_size: int = 8):
        config = check_model_task(
            model_id, "semseg", self.task,
            ("MODEL_FOR_SEMANTIC_SEGMENTATION_MAPPING_NAMES", "MODEL_FOR_UNIVERSAL_SEGMENTATION_MAPPING_NAMES"),
        )
        id2label = {int(k): str(v) for k, v in config.id2label.items()}
        if sorted(id2label) != list(range(len(id2label))):
            raise ValueError(f"semseg: model {model_id!r} has class ids {sorted(id2label)}, expected 0..{len(id2label) - 1}")
        if len(id2label) > UNLABELLED_CLASS:
            raise ValueError(f"semseg: model {model_id!r} has {len(id2label)} classes; the uint8 semseg column holds at most {UNLABELLED_CLASS}")
        self.classes = [id2label[k] for k in range(len(id2label))]
        if len(set(self.classes)) != len(self.classes):
            raise ValueError(f"semseg: model {model_id!r} has duplicate class names in id2label; segments could not be mapped back to ids")
        self.class_ids = {name: k for k, name in enumerate(self.classes)}
        self.model_id, self.batch_size = model_id, batch_size
        self.pipeline = _pipeline(self.task, model_id, device)

    def features(self, size):
        from datasets import Array2D

        return {"semseg": Array2D((size, size), "uint8")}

    def label(self, images, labels):
        outputs = self.pipeline(images, batch_size=self.batch_size, subtask="semantic")
        maps = []
        for image, segments in zip(images, outputs):
            semseg = np.full((image.height, image.width), UNLABELLED_CLASS, dtype=np.uint8)
            for segment in segments:
                semseg[np.asarray(segment["mask"]) > 127] = self.class_ids[segment["label"]]
            maps.append(semseg)
        return {"semseg": maps}

    def metadata(self):
        return {"model": self.model_id, "task": self.task, "semseg_classes": self.classes, "unlabelled_class": UNLABELLED_CLASS}
