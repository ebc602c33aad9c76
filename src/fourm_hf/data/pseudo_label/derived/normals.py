"""``normal`` derived from the ``depth`` column (no model: transformers has no surface-normal pipeline)."""

from __future__ import annotations

from ..base import Labeller
from ..geometry import DEFAULT_FIELD_OF_VIEW_DEGREES, normals_from_depth


class NormalsFromDepthLabeller(Labeller):
    """``normal`` derived from the ``depth`` column written by an earlier labeller."""

    columns = ("normal",)
    requires = ("depth",)

    def __init__(self, field_of_view_degrees: float = DEFAULT_FIELD_OF_VIEW_DEGREES):
        if not 0.0 < field_of_view_degrees < 180.0:
            raise ValueError(f"normal: field_of_view_degrees must be in (0, 180), got {field_of_view_degrees}")
        self.field_of_view_degrees = float(field_of_view_degrees)

    def features(self, size):
        from datasets import Array3D

        return {"normal": Array3D((size, size, 3), "float32")}

    def label(self, images, labels):
        if "depth" not in labels:
            raise ValueError("normal: normals are derived from depth; add a depth labeller before the normals labeller")
        return {"normal": [normals_from_depth(depth, self.field_of_view_degrees) for depth in labels["depth"]]}

    def metadata(self):
        return {"source": "finite differences of back-projected depth", "field_of_view_degrees": self.field_of_view_degrees}
