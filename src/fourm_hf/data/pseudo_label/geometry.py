"""Depth maps as stored (relative depth from relative inverse depth) and normals derived from depth."""

from __future__ import annotations

import numpy as np

MAX_RELATIVE_DEPTH = 100.0
"""Largest stored relative depth (in units of the image's median depth); pixels with d <= 0 get it."""

DEFAULT_FIELD_OF_VIEW_DEGREES = 60.0
"""Horizontal field of view assumed to back-project depth when deriving normals."""

SKY_NORMAL = (0.0, 0.0, -1.0)
"""Normal given to pixels where the depth gradient is degenerate (as for the scenes' sky)."""


def depth_from_inverse_depth(inverse_depth: np.ndarray) -> np.ndarray:
    """Relative inverse depth d (H, W) -> relative depth ``median(d) / d`` (H, W) float32 in
    (0, MAX_RELATIVE_DEPTH]; the median is over the pixels with d > 0, pixels with d <= 0 get the maximum."""
    d = np.asarray(inverse_depth, dtype=np.float64)
    if d.ndim != 2 or not np.all(np.isfinite(d)):
        raise ValueError(f"depth: expected a finite (H, W) inverse depth map, got shape {d.shape}")
    positive = d > 0
    if not positive.any():
        return np.full(d.shape, MAX_RELATIVE_DEPTH, dtype=np.float32)
    relative = np.median(d[positive]) / np.where(positive, d, 1.0)
    relative = np.where(positive, np.minimum(relative, MAX_RELATIVE_DEPTH), MAX_RELATIVE_DEPTH)
    return relative.astype(np.float32)


def normals_from_depth(depth: np.ndarray, field_of_view_degrees: float = DEFAULT_FIELD_OF_VIEW_DEGREES) -> np.ndarray:
    """Unit camera-frame normals (H, W, 3) float32 of a z-depth map (H, W) seen by a pinhole camera
    with horizontal field of view ``field_of_view_degrees`` and the principal point at the centre.

    Pixel (row r, column c) is back-projected through its centre to
    ``z * ((c + 0.5 - W/2) / f, (r + 0.5 - H/2) / f, 1)`` with ``f = (W/2) / tan(fov/2)``; the normal is
    ``d/drow x d/dcolumn`` of those points (central differences inside, one-sided at the border), turned to
    face the camera. Pixels whose normal is degenerate (zero or non-finite) get ``SKY_NORMAL``.
    """
    depth = np.asarray(depth, dtype=np.float64)
    if depth.ndim != 2 or min(depth.shape) < 2:
        raise ValueError(f"normal: expected a (H, W) depth map with H, W >= 2, got shape {depth.shape}")
    if not 0.0 < field_of_view_degrees < 180.0:
        raise ValueError(f"normal: field_of_view_degrees must be in (0, 180), got {field_of_view_degrees}")
    height, width = depth.shape
    focal = (width / 2.0) / np.tan(np.radians(field_of_view_degrees) / 2.0)
    u = (np.arange(width) + 0.5 - width / 2.0) / focal
    v = (np.arange(height) + 0.5 - height / 2.0) / focal
    rays = np.stack(np.broadcast_arrays(u[None, :], v[:, None], np.ones((1, 1))), axis=-1)  # (H, W, 3)
    points = depth[..., None] * rays
    along_rows, along_columns = np.gradient(points, axis=(0, 1))
    normals = np.cross(along_rows, along_columns)  # faces the camera (z < 0) for a fronto-parallel plane
    facing_away = np.sum(normals * points, axis=-1) > 0
    normals[facing_away] *= -1.0
    length = np.linalg.norm(normals, axis=-1, keepdims=True)
    valid = (length[..., 0] > 1e-12) & np.all(np.isfinite(normals), axis=-1)
    normals = np.where(valid[..., None], normals / np.where(length > 0, length, 1.0), np.asarray(SKY_NORMAL))
    return normals.astype(np.float32)
