"""The embedded default corpus: procedurally rendered scenes with exact labels.

A scene is a finite floor under a sky with 1-4 objects (spheres, cubes, cylinders, cones) in
named colours, seen by a random pinhole camera and lit by a random directional light with cast
shadows. Everything is ray cast with numpy, vectorised over pixels, so every label is exact:

- ``rgb``        uint8 (H, W, 3): diffuse + ambient + a little specular shading, hard shadows.
- ``depth``      float32 (H, W): z-depth in metres along the camera's optical axis (not the
                 distance along the ray). Sky pixels hold ``SKY_DEPTH``.
- ``normal``     float32 (H, W, 3): unit surface normals in the camera frame, OpenCV axes:
                 x right, y down, z forward (into the scene). Visible surfaces face the camera,
                 so their z component is negative. Sky pixels hold ``SKY_NORMAL`` = (0, 0, -1).
- ``semseg``     uint8 (H, W): index into ``SCENE_CLASSES`` (sky, floor, then one class per
                 shape). Colour is not part of the class: it is in ``boxes`` and ``caption``.
- ``instances``  uint8 (H, W): 0 for sky and floor, ``i + 1`` for the i-th object.
- ``boxes``      ``[{"label": "red cube", "box": [xmin, ymin, xmax, ymax]}]``, one per object in
                 sampling order, normalised to [0, 1] with pixel-edge convention: pixel (row r,
                 column c) covers [c, c + 1] x [r, r + 1], so the box is
                 ``[c_min / W, r_min / H, (c_max + 1) / W, (r_max + 1) / H]`` over exactly the
                 object's visible pixels. Labels are unique within a scene.
- ``caption``    English naming every object by size, colour and shape and relating each one
                 (after the first) to an already named object: "to the left of", "to the right
                 of", "in front of" or "behind", as seen from the camera.

A scene depends only on its seed (``numpy.random.default_rng(seed)``), not on the resolution:
the layout is accepted at ``LAYOUT_CHECK_SIZE`` pixels, so ``render_scene(s, 64)`` and
``render_scene(s, 224)`` show the same scene.

``make_scene_dataset`` / ``fourm-hf make-scenes`` write many scenes as a ``datasets`` dataset,
rendering in shards that are each written atomically, so a killed run resumes where it stopped.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SCENE_CLASSES = ("sky", "floor", "sphere", "cube", "cylinder", "cone")
"""Semantic classes of ``semseg``: value ``k`` means ``SCENE_CLASSES[k]``."""

SHAPES = ("sphere", "cube", "cylinder", "cone")
"""Object shapes; shape ``SHAPES[j]`` has semantic class ``j + 2``."""

COLORS = {
    "red": (0.78, 0.10, 0.08),
    "green": (0.12, 0.62, 0.16),
    "blue": (0.10, 0.25, 0.85),
    "yellow": (0.92, 0.80, 0.10),
    "purple": (0.50, 0.16, 0.66),
    "orange": (0.95, 0.45, 0.05),
    "cyan": (0.10, 0.72, 0.78),
    "white": (0.92, 0.92, 0.90),
}
"""Object colour names -> base RGB reflectance in [0, 1]."""

SIZES = ("small", "large")
"""Size words used in captions."""

SKY_DEPTH = 100.0
"""Depth (metres) given to sky pixels; farther than any floor point (floor radius 30 m)."""

SKY_NORMAL = (0.0, 0.0, -1.0)
"""Camera-frame normal given to sky pixels (pointing back at the camera)."""

MIN_VISIBLE_FRACTION = 0.008
"""Every object covers at least this fraction of the image (checked at LAYOUT_CHECK_SIZE)."""

LAYOUT_CHECK_SIZE = 64
"""Resolution at which a sampled layout is checked for visibility (keeps scenes size-independent)."""

FIELD_OF_VIEW_DEGREES = 50.0
FLOOR_RADIUS = 30.0
MAX_LAYOUT_ATTEMPTS = 200

_FLOOR_COLORS = ((0.62, 0.60, 0.56), (0.54, 0.52, 0.49))  # 1 m checker tiles
_SKY_HORIZON = np.array([0.80, 0.87, 0.95])
_SKY_ZENITH = np.array([0.32, 0.52, 0.84])
_AMBIENT = 0.38
_DIFFUSE = 0.72
_SPECULAR = 0.25
_SHININESS = 32.0
_EPS = 1e-4

# base dimensions in metres per shape and size word: sphere radius, cube half side,
# cylinder radius, cone base radius
_BASE_SIZE = {"small": 0.34, "large": 0.54}


# ----------------------------------------------------------------------------------------------
# Scene description
# ----------------------------------------------------------------------------------------------


@dataclass
class SceneObject:
    """One object standing on the floor (z = 0), world axes x, y horizontal and z up."""

    shape: str
    color: str
    size: str  # "small" or "large"
    x: float
    y: float
    radius: float  # sphere radius, cube half side, cylinder / cone base radius
    height: float  # total height above the floor
    angle: float  # rotation about the vertical axis (only matters for cubes)

    @property
    def label(self) -> str:
        return f"{self.color} {self.shape}"

    @property
    def footprint_radius(self) -> float:
        """Radius of the smallest vertical cylinder around the object."""
        return self.radius * np.sqrt(2.0) if self.shape == "cube" else self.radius

    def corners(self) -> np.ndarray:
        """(8, 3) corners of a world box enclosing the object."""
        r = self.footprint_radius
        return np.array(
            [[self.x + sx * r, self.y + sy * r, z] for sx in (-1, 1) for sy in (-1, 1) for z in (0.0, self.height)]
        )


@dataclass
class Camera:
    """Pinhole camera; ``rotation`` columns are the camera x (right), y (down), z (forward) axes in world."""

    position: np.ndarray  # (3,)
    rotation: np.ndarray  # (3, 3) camera -> world

    def focal_pixels(self, size: int) -> float:
        return (size / 2.0) / np.tan(np.radians(FIELD_OF_VIEW_DEGREES) / 2.0)

    def world_to_camera(self, points: np.ndarray) -> np.ndarray:
        """(N, 3) world points -> (N, 3) camera-frame points."""
        return (points - self.position) @ self.rotation


@dataclass
class Scene:
    objects: list[SceneObject]
    camera: Camera
    light: np.ndarray  # (3,) unit vector pointing towards the light


def _look_at(position: np.ndarray, target: np.ndarray) -> np.ndarray:
    forward = target - position
    forward = forward / np.linalg.norm(forward)
    right = np.cross(forward, np.array([0.0, 0.0, 1.0]))
    right = right / np.linalg.norm(right)
    down = np.cross(forward, right)
    return np.stack([right, down, forward], axis=1)


def _sample_camera(rng: np.random.Generator) -> Camera:
    azimuth = rng.uniform(0.0, 2.0 * np.pi)
    distance = rng.uniform(4.5, 6.5)
    height = rng.uniform(2.5, 4.0)
    position = np.array([distance * np.cos(azimuth), distance * np.sin(azimuth), height])
    # jittering the look-at point jitters pitch and yaw by a few degrees
    target = np.array([rng.uniform(-0.4, 0.4), rng.uniform(-0.4, 0.4), rng.uniform(0.1, 0.6)])
    return Camera(position=position, rotation=_look_at(position, target))


def _sample_light(rng: np.random.Generator) -> np.ndarray:
    azimuth = rng.uniform(0.0, 2.0 * np.pi)
    elevation = np.radians(rng.uniform(30.0, 65.0))
    return np.array([np.cos(elevation) * np.cos(azimuth), np.cos(elevation) * np.sin(azimuth), np.sin(elevation)])


def _sample_object(rng: np.random.Generator, used_labels: set[str]) -> SceneObject:
    while True:
        shape = SHAPES[rng.integers(len(SHAPES))]
        color = list(COLORS)[rng.integers(len(COLORS))]
        if f"{color} {shape}" not in used_labels:
            break
    size = SIZES[rng.integers(len(SIZES))]
    radius = _BASE_SIZE[size] * rng.uniform(0.9, 1.1)
    if shape == "sphere" or shape == "cube":
        height = 2.0 * radius
    elif shape == "cylinder":
        height = 2.0 * radius * rng.uniform(0.8, 1.6)
    else:  # cone
        height = 2.0 * radius * rng.uniform(1.1, 1.8)
    placement_radius = 1.9 * np.sqrt(rng.uniform())
    placement_angle = rng.uniform(0.0, 2.0 * np.pi)
    return SceneObject(
        shape=shape,
        color=color,
        size=size,
        x=placement_radius * np.cos(placement_angle),
        y=placement_radius * np.sin(placement_angle),
        radius=radius,
        height=height,
        angle=rng.uniform(0.0, np.pi / 2.0),
    )


def _sample_objects(rng: np.random.Generator) -> list[SceneObject] | None:
    """1-4 objects with unique labels whose footprints keep a 10 cm gap; None if placement failed."""
    num_objects = int(rng.integers(1, 5))
    objects: list[SceneObject] = []
    for _ in range(num_objects):
        for _ in range(50):
            candidate = _sample_object(rng, {o.label for o in objects})
            if all(
                np.hypot(candidate.x - o.x, candidate.y - o.y) > candidate.footprint_radius + o.footprint_radius + 0.1
                for o in objects
            ):
                objects.append(candidate)
                break
        else:
            return None
    return objects


def _inside_frame(scene: Scene, margin: float = 0.02) -> bool:
    """Whether every object's enclosing box projects inside the image, ``margin`` (fraction) away from its edges."""
    half_width = np.tan(np.radians(FIELD_OF_VIEW_DEGREES) / 2.0) * (1.0 - 2.0 * margin)
    for obj in scene.objects:
        points = scene.camera.world_to_camera(obj.corners())
        if np.any(points[:, 2] <= 0.1):
            return False
        if np.any(np.abs(points[:, :2] / points[:, 2:3]) > half_width):
            return False
    return True


def sample_scene(seed: int) -> Scene:
    """The scene of ``seed``: camera, light and objects, re-sampled (from the same generator)
    until every object is inside the frame and covers ``MIN_VISIBLE_FRACTION`` of the image."""
    return _sample_scene_and_trace(seed)[0]


def _sample_scene_and_trace(seed: int):
    """The scene of ``seed`` and its camera rays traced at ``LAYOUT_CHECK_SIZE`` (reused when rendering at that size)."""
    rng = np.random.default_rng(seed)
    for _ in range(MAX_LAYOUT_ATTEMPTS):
        camera = _sample_camera(rng)
        light = _sample_light(rng)
        objects = _sample_objects(rng)
        if objects is None:
            continue
        scene = Scene(objects=objects, camera=camera, light=light)
        if not _inside_frame(scene):
            continue
        trace = _trace_labels(scene, LAYOUT_CHECK_SIZE)
        object_index = trace[2] - 2
        counts = np.bincount(object_index[object_index >= 0], minlength=len(objects))
        if np.all(counts >= MIN_VISIBLE_FRACTION * LAYOUT_CHECK_SIZE**2):
            return scene, trace
    raise RuntimeError(f"could not sample a valid scene for seed {seed} in {MAX_LAYOUT_ATTEMPTS} attempts")


# ----------------------------------------------------------------------------------------------
# Ray casting. Rays are (N, 3) origins and (N, 3) directions (not necessarily unit length);
# every intersector returns the hit parameter t (N,) (inf on a miss) and world normals (N, 3).
# ----------------------------------------------------------------------------------------------


def _nearest(candidates: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Smallest candidate t per ray (inf if none) and which candidate it was."""
    stacked = np.stack(candidates)
    which = np.argmin(stacked, axis=0)
    return np.take_along_axis(stacked, which[None], axis=0)[0], which


def _quadratic_roots(a, half_b, c):
    """Both roots of a t^2 + 2 half_b t + c = 0 (nan where there is none; a ~ 0, a ray exactly
    parallel to a cone's side or a cylinder's axis, counts as a miss of that surface)."""
    disc = half_b * half_b - a * c
    with np.errstate(invalid="ignore", divide="ignore"):
        sqrt_disc = np.sqrt(np.where(disc >= 0.0, disc, np.nan))
        safe_a = np.where(np.abs(a) > 1e-12, a, np.nan)
        return (-half_b - sqrt_disc) / safe_a, (-half_b + sqrt_disc) / safe_a


def _valid(t: np.ndarray, condition: np.ndarray) -> np.ndarray:
    return np.where((t > _EPS) & condition, t, np.inf)


def _intersect_sphere(obj: SceneObject, origins: np.ndarray, dirs: np.ndarray):
    center = np.array([obj.x, obj.y, obj.radius])
    oc = origins - center
    a = np.einsum("ij,ij->i", dirs, dirs)
    t1, t2 = _quadratic_roots(a, np.einsum("ij,ij->i", oc, dirs), np.einsum("ij,ij->i", oc, oc) - obj.radius**2)
    t, _ = _nearest([_valid(t1, True), _valid(t2, True)])
    normals = (oc + np.where(np.isfinite(t), t, 0.0)[:, None] * dirs) / obj.radius
    return t, normals


def _intersect_cube(obj: SceneObject, origins: np.ndarray, dirs: np.ndarray):
    cos, sin = np.cos(obj.angle), np.sin(obj.angle)
    to_local = np.array([[cos, -sin, 0.0], [sin, cos, 0.0], [0.0, 0.0, 1.0]])  # columns: local axes in world
    local_origins = (origins - np.array([obj.x, obj.y, obj.radius])) @ to_local
    local_dirs = dirs @ to_local
    safe_dirs = np.where(np.abs(local_dirs) > 1e-12, local_dirs, 1e-12)
    t_low = (-obj.radius - local_origins) / safe_dirs
    t_high = (obj.radius - local_origins) / safe_dirs
    t_near_axes = np.minimum(t_low, t_high)
    t_near = t_near_axes.max(axis=1)
    t_far = np.maximum(t_low, t_high).min(axis=1)
    hit = t_near <= t_far
    t, which = _nearest([_valid(t_near, hit), _valid(t_far, hit)])
    axis = np.argmax(t_near_axes, axis=1)
    local_normals = np.zeros_like(local_dirs)
    rows = np.arange(len(axis))
    local_normals[rows, axis] = -np.sign(safe_dirs[rows, axis]) * np.where(which == 0, 1.0, -1.0)
    return t, local_normals @ to_local.T


def _intersect_cylinder(obj: SceneObject, origins: np.ndarray, dirs: np.ndarray):
    ox, oy, oz = origins[:, 0] - obj.x, origins[:, 1] - obj.y, origins[:, 2]
    dx, dy, dz = dirs[:, 0], dirs[:, 1], dirs[:, 2]
    t1, t2 = _quadratic_roots(dx * dx + dy * dy, ox * dx + oy * dy, ox * ox + oy * oy - obj.radius**2)
    candidates = []
    for t_side in (t1, t2):
        z = oz + t_side * dz
        candidates.append(_valid(t_side, (z >= 0.0) & (z <= obj.height)))
    safe_dz = np.where(np.abs(dz) > 1e-12, dz, 1e-12)
    for z_cap in (obj.height, 0.0):
        t_cap = (z_cap - oz) / safe_dz
        px, py = ox + t_cap * dx, oy + t_cap * dy
        candidates.append(_valid(t_cap, px * px + py * py <= obj.radius**2))
    t, which = _nearest(candidates)
    t_hit = np.where(np.isfinite(t), t, 0.0)
    side_normals = np.stack([(ox + t_hit * dx) / obj.radius, (oy + t_hit * dy) / obj.radius, np.zeros_like(t)], axis=1)
    cap_normals = np.zeros_like(side_normals)
    cap_normals[:, 2] = np.where(which == 2, 1.0, -1.0)
    normals = np.where((which < 2)[:, None], side_normals, cap_normals)
    return t, normals


def _intersect_cone(obj: SceneObject, origins: np.ndarray, dirs: np.ndarray):
    # lateral surface: x^2 + y^2 = k^2 (h - z)^2 with k = r / h, 0 <= z <= h
    k2 = (obj.radius / obj.height) ** 2
    ox, oy, oz = origins[:, 0] - obj.x, origins[:, 1] - obj.y, origins[:, 2]
    dx, dy, dz = dirs[:, 0], dirs[:, 1], dirs[:, 2]
    w = obj.height - oz
    t1, t2 = _quadratic_roots(dx * dx + dy * dy - k2 * dz * dz, ox * dx + oy * dy + k2 * w * dz, ox * ox + oy * oy - k2 * w * w)
    candidates = []
    for t_side in (t1, t2):
        z = oz + t_side * dz
        candidates.append(_valid(t_side, (z >= 0.0) & (z <= obj.height)))
    t_base = -oz / np.where(np.abs(dz) > 1e-12, dz, 1e-12)
    px, py = ox + t_base * dx, oy + t_base * dy
    candidates.append(_valid(t_base, px * px + py * py <= obj.radius**2))
    t, which = _nearest(candidates)
    t_hit = np.where(np.isfinite(t), t, 0.0)
    gradient = np.stack([ox + t_hit * dx, oy + t_hit * dy, k2 * (w - t_hit * dz)], axis=1)
    side_normals = gradient / np.maximum(np.linalg.norm(gradient, axis=1, keepdims=True), 1e-12)
    base_normals = np.zeros_like(side_normals)
    base_normals[:, 2] = -1.0
    normals = np.where((which < 2)[:, None], side_normals, base_normals)
    return t, normals


def _intersect_floor(origins: np.ndarray, dirs: np.ndarray):
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(dirs[:, 2] < 0.0, -origins[:, 2] / dirs[:, 2], np.inf)
    hit_xy = origins[:, :2] + np.where(np.isfinite(t), t, 0.0)[:, None] * dirs[:, :2]
    t = _valid(t, np.hypot(hit_xy[:, 0], hit_xy[:, 1]) <= FLOOR_RADIUS)
    normals = np.zeros_like(dirs)
    normals[:, 2] = 1.0
    return t, normals


_INTERSECTORS = {
    "sphere": _intersect_sphere,
    "cube": _intersect_cube,
    "cylinder": _intersect_cylinder,
    "cone": _intersect_cone,
}


def _intersect_object(obj: SceneObject, origins: np.ndarray, dirs: np.ndarray):
    """Exact intersection with ``obj``, computed only for rays that hit its bounding sphere
    (objects cover a small part of the image, so this saves most of the work)."""
    center = np.array([obj.x, obj.y, obj.height / 2.0])
    bound_radius = np.hypot(obj.footprint_radius, obj.height / 2.0) * 1.01
    oc = origins - center
    half_b = np.einsum("ij,ij->i", oc, dirs)
    c = np.einsum("ij,ij->i", oc, oc) - bound_radius**2
    a = np.einsum("ij,ij->i", dirs, dirs)
    disc = half_b * half_b - a * c
    candidates = np.nonzero((disc >= 0.0) & ((-half_b + np.sqrt(np.maximum(disc, 0.0))) > 0.0))[0]
    t = np.full(len(dirs), np.inf)
    normals = np.zeros((len(dirs), 3))
    if len(candidates):
        t[candidates], normals[candidates] = _INTERSECTORS[obj.shape](obj, origins[candidates], dirs[candidates])
    return t, normals


def _camera_rays(camera: Camera, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Origins (size*size, 3) and world directions (size*size, 3) through pixel centres, scaled so that
    the camera-frame z component is 1: the hit parameter t is then the z-depth."""
    focal = camera.focal_pixels(size)
    coords = (np.arange(size) + 0.5 - size / 2.0) / focal
    u, v = np.meshgrid(coords, coords)  # u along columns (x right), v along rows (y down)
    camera_dirs = np.stack([u.ravel(), v.ravel(), np.ones(size * size)], axis=1)
    return np.broadcast_to(camera.position, camera_dirs.shape), camera_dirs @ camera.rotation.T


def _trace(scene: Scene, origins: np.ndarray, dirs: np.ndarray):
    """Nearest surface per ray: t (N,), world normals (N, 3), surface id (N,) (0 sky, 1 floor, 2 + i object i)."""
    results = [_intersect_floor(origins, dirs)] + [_intersect_object(o, origins, dirs) for o in scene.objects]
    t, surface = _nearest([r[0] for r in results])
    normals = np.stack([r[1] for r in results])[surface, np.arange(len(t))]
    surface = np.where(np.isfinite(t), surface + 1, 0)
    return t, normals, surface


def _trace_labels(scene: Scene, size: int):
    """Camera rays traced at ``size``: (t, world normals, surface id, directions), flattened over pixels."""
    origins, dirs = _camera_rays(scene.camera, size)
    t, normals, surface = _trace(scene, origins, dirs)
    return t, normals, surface.reshape(size, size), dirs


def _in_shadow(scene: Scene, points: np.ndarray) -> np.ndarray:
    """(N,) bool: whether an object blocks the light from each world point."""
    if len(points) == 0 or not scene.objects:
        return np.zeros(len(points), dtype=bool)
    dirs = np.broadcast_to(scene.light, points.shape)
    blocked = np.zeros(len(points), dtype=bool)
    for obj in scene.objects:
        blocked |= np.isfinite(_intersect_object(obj, points, dirs)[0])
    return blocked


def _shade(scene: Scene, t, normals, surface_flat, dirs) -> np.ndarray:
    """(N, 3) float RGB in [0, 1]."""
    num_rays = len(t)
    sky = surface_flat == 0
    points = scene.camera.position + np.where(sky, 0.0, t)[:, None] * dirs

    albedo = np.zeros((num_rays, 3))
    tile = (np.floor(points[:, 0]) + np.floor(points[:, 1])).astype(np.int64) % 2
    floor = surface_flat == 1
    albedo[floor] = np.array(_FLOOR_COLORS)[tile[floor]]
    for index, obj in enumerate(scene.objects):
        albedo[surface_flat == index + 2] = COLORS[obj.color]

    lambert = np.clip(normals @ scene.light, 0.0, None)
    lit = (~sky) & (lambert > 0.0)
    shadow = np.zeros(num_rays, dtype=bool)
    shadow[lit] = _in_shadow(scene, points[lit] + 1e-3 * normals[lit])
    direct = np.where(lit & ~shadow, lambert, 0.0)
    ambient = _AMBIENT * (0.8 + 0.2 * normals[:, 2])  # a little more light from the sky above
    color = albedo * (ambient + _DIFFUSE * direct)[:, None]

    view = -dirs / np.linalg.norm(dirs, axis=1, keepdims=True)
    half = view + scene.light
    half /= np.linalg.norm(half, axis=1, keepdims=True)
    is_object = surface_flat >= 2
    specular = np.where(is_object & (direct > 0.0), np.clip(np.einsum("ij,ij->i", normals, half), 0.0, None) ** _SHININESS, 0.0)
    color += _SPECULAR * specular[:, None]

    elevation = np.clip(dirs[:, 2] / np.linalg.norm(dirs, axis=1), 0.0, 1.0) ** 0.6
    sky_color = _SKY_HORIZON + (_SKY_ZENITH - _SKY_HORIZON) * elevation[:, None]
    color[sky] = sky_color[sky]
    return np.clip(color, 0.0, 1.0)


# ----------------------------------------------------------------------------------------------
# Labels: boxes and caption
# ----------------------------------------------------------------------------------------------


def _boxes(scene: Scene, instances: np.ndarray) -> list[dict]:
    height, width = instances.shape
    boxes = []
    for index, obj in enumerate(scene.objects):
        rows, cols = np.nonzero(instances == index + 1)
        box = [cols.min() / width, rows.min() / height, (cols.max() + 1) / width, (rows.max() + 1) / height]
        boxes.append({"label": obj.label, "box": [float(v) for v in box]})
    return boxes


def _relation(scene: Scene, obj: SceneObject, reference: SceneObject) -> str:
    """Where ``obj`` is relative to ``reference`` as seen from the camera, along the dominant ground axis."""
    right = scene.camera.rotation[:, 0]
    forward = scene.camera.rotation[:, 2].copy()
    forward[2] = 0.0
    forward /= np.linalg.norm(forward)
    offset = np.array([obj.x - reference.x, obj.y - reference.y, 0.0])
    lateral, away = offset @ right, offset @ forward
    if abs(lateral) >= abs(away):
        return "to the right of" if lateral > 0 else "to the left of"
    return "behind" if away > 0 else "in front of"


def describe_scene(scene: Scene) -> str:
    """Caption: one sentence per object in sampling order, each after the first placed relative to
    the nearest object already named, e.g. "a large red cube. a small blue sphere to the left of
    the red cube." Labels are unique in a scene, so "the red cube" is unambiguous."""
    sentences = []
    for index, obj in enumerate(scene.objects):
        sentence = f"a {obj.size} {obj.color} {obj.shape}"
        if index > 0:
            named = scene.objects[:index]
            reference = min(named, key=lambda o: np.hypot(o.x - obj.x, o.y - obj.y))
            sentence += f" {_relation(scene, obj, reference)} the {reference.color} {reference.shape}"
        sentences.append(sentence + ".")
    return " ".join(sentences)


# ----------------------------------------------------------------------------------------------
# Rendering
# ----------------------------------------------------------------------------------------------


def _check_size(size) -> int:
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)):
        raise TypeError(f"scene size must be an int (pixels), got {type(size).__name__}")
    if size < 32 or size % 8 != 0:
        raise ValueError(f"scene size must be a multiple of 8 and at least 32 pixels, got {size}")
    return int(size)


def render_scene(seed: int, size: int = 64) -> dict:
    """Render the scene of ``seed`` at ``size`` x ``size`` pixels.

    Returns a dict: ``rgb`` uint8 (H, W, 3), ``depth`` float32 (H, W), ``normal`` float32 (H, W, 3),
    ``semseg`` uint8 (H, W), ``instances`` uint8 (H, W), ``boxes`` list of ``{"label", "box"}``,
    ``caption`` str, ``seed`` int. Conventions are in the module docstring.
    """
    size = _check_size(size)
    scene, trace = _sample_scene_and_trace(seed)
    if size != LAYOUT_CHECK_SIZE:
        trace = _trace_labels(scene, size)
    t, world_normals, surface, dirs = trace
    surface_flat = surface.ravel()
    sky = surface_flat == 0

    rgb = _shade(scene, t, world_normals, surface_flat, dirs)
    depth = np.where(sky, SKY_DEPTH, t)
    camera_normals = world_normals @ scene.camera.rotation
    camera_normals[sky] = SKY_NORMAL

    shape_class = np.array([0, 1] + [2 + SHAPES.index(o.shape) for o in scene.objects], dtype=np.uint8)
    instances = np.where(surface >= 2, surface - 1, 0).astype(np.uint8)
    return {
        "rgb": np.round(rgb * 255.0).astype(np.uint8).reshape(size, size, 3),
        "depth": depth.astype(np.float32).reshape(size, size),
        "normal": camera_normals.astype(np.float32).reshape(size, size, 3),
        "semseg": shape_class[surface],
        "instances": instances,
        "boxes": _boxes(scene, instances),
        "caption": describe_scene(scene),
        "seed": int(seed),
    }


# ----------------------------------------------------------------------------------------------
# Dataset: resumable, sharded writing
# ----------------------------------------------------------------------------------------------

_PARAMS_FILE = "make_scenes.json"


def scene_seed(seed: int, index: int) -> int:
    """Seed of the ``index``-th scene of a dataset made with ``seed`` (datasets made with
    different seeds do not share scenes)."""
    low, high = np.random.SeedSequence([seed, index]).generate_state(2)
    return int((int(high) << 31) ^ int(low))


def scene_features(size: int):
    """``datasets.Features`` of a scene dataset at ``size`` x ``size`` pixels."""
    from datasets import Array2D, Array3D, Features, Image, List, Value

    size = _check_size(size)
    return Features(
        {
            "rgb": Image(),
            "depth": Array2D((size, size), "float32"),
            "normal": Array3D((size, size, 3), "float32"),
            "semseg": Array2D((size, size), "uint8"),
            "boxes": List({"label": Value("string"), "box": List(Value("float32"), length=4)}),
            "caption": Value("string"),
            "seed": Value("int64"),
        }
    )


def _scene_row(seed: int, size: int) -> dict:
    from PIL import Image

    scene = render_scene(seed, size)
    return {
        "rgb": Image.fromarray(scene["rgb"]),
        "depth": scene["depth"],
        "normal": scene["normal"],
        "semseg": scene["semseg"],
        "boxes": scene["boxes"],
        "caption": scene["caption"],
        "seed": scene["seed"],
    }


def _shard_name(shard: int, num_shards: int) -> str:
    return f"shard-{shard:05d}-of-{num_shards:05d}"


@contextlib.contextmanager
def _quiet_datasets():
    """Hide datasets' own per-save progress bars (ours counts scenes) and restore the setting after."""
    from datasets import utils as datasets_tqdm

    was_disabled = datasets_tqdm.are_progress_bars_disabled()
    datasets_tqdm.disable_progress_bars()
    try:
        yield
    finally:
        if not was_disabled:
            datasets_tqdm.enable_progress_bars()


def _write_shard(shards_dir: str, shard: int, num_shards: int, start: int, stop: int, size: int, seed: int, progress=None) -> int:
    """Render scenes ``start..stop-1`` and save them atomically as one shard; returns the number of scenes."""
    from datasets import Dataset

    rows = []
    for index in range(start, stop):
        rows.append(_scene_row(scene_seed(seed, index), size))
        if progress is not None:
            progress.update(1)
    columns = {name: [row[name] for row in rows] for name in rows[0]}
    final_dir = os.path.join(shards_dir, _shard_name(shard, num_shards))
    temp_dir = f"{final_dir}.tmp-{os.getpid()}"
    shutil.rmtree(temp_dir, ignore_errors=True)
    with _quiet_datasets():
        Dataset.from_dict(columns, features=scene_features(size)).save_to_disk(temp_dir)
    os.replace(temp_dir, final_dir)
    return stop - start


def _check_out_dir(out_dir: Path, params: dict) -> bool:
    """True if ``out_dir`` already holds the finished dataset for ``params``; raises if it holds anything else."""
    if not out_dir.exists():
        return False
    if not out_dir.is_dir():
        raise ValueError(f"make-scenes: --out {out_dir} exists and is not a directory")
    params_file = out_dir / _PARAMS_FILE
    if params_file.is_file():
        existing = json.loads(params_file.read_text())
        if existing == params:
            return True
        raise ValueError(f"make-scenes: --out {out_dir} holds a scene dataset made with {existing}, not {params}; choose another directory")
    if any(out_dir.iterdir()):
        raise ValueError(f"make-scenes: --out {out_dir} exists and holds something other than a scene dataset; choose an empty or new directory")
    return False


def make_scene_dataset(
    num: int, size: int, out_dir, seed: int = 0, shard_size: int = 500, num_proc: int = 1, _stop_after_shards: int | None = None
):
    """Render ``num`` scenes at ``size`` pixels and save them with ``save_to_disk`` at ``out_dir``.

    Scenes are rendered in shards of ``shard_size``, each saved atomically under
    ``<out_dir>.shards/``; a rerun after a kill skips the finished shards and gives the same dataset
    as an uninterrupted run. The shards are then concatenated into ``out_dir`` (also atomically)
    and removed. Scene ``i`` has seed ``scene_seed(seed, i)``, stored in the ``seed`` column.
    If ``out_dir`` already holds the finished dataset for the same arguments it is loaded as is.

    Returns the ``datasets.Dataset`` loaded from ``out_dir`` (features: ``scene_features(size)``).
    ``_stop_after_shards`` (tests only) raises ``KeyboardInterrupt`` after that many new shards.
    """
    from datasets import concatenate_datasets, load_from_disk
    from tqdm.auto import tqdm

    for name, value, minimum in (("num", num, 1), ("shard_size", shard_size, 1), ("num_proc", num_proc, 1)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
            raise ValueError(f"make-scenes: {name} must be an int >= {minimum}, got {value!r}")
    size = _check_size(size)
    out_dir = Path(out_dir)
    params = {"num": int(num), "size": size, "seed": int(seed)}
    if _check_out_dir(out_dir, params):
        return load_from_disk(str(out_dir))

    shards_dir = out_dir.parent / f"{out_dir.name}.shards"
    shards_dir.mkdir(parents=True, exist_ok=True)
    shards_params = shards_dir / _PARAMS_FILE
    run_params = {**params, "shard_size": int(shard_size)}
    if shards_params.is_file() and json.loads(shards_params.read_text()) != run_params:
        raise ValueError(
            f"make-scenes: {shards_dir} holds an unfinished run with {json.loads(shards_params.read_text())}, "
            f"not {run_params}; rerun with those arguments or delete it"
        )
    shards_params.write_text(json.dumps(run_params))

    num_shards = (num + shard_size - 1) // shard_size
    bounds = [(k, k * shard_size, min(num, (k + 1) * shard_size)) for k in range(num_shards)]
    todo = [b for b in bounds if not (shards_dir / _shard_name(b[0], num_shards)).is_dir()]
    already_done = num - sum(stop - start for _, start, stop in todo)
    if _stop_after_shards is not None:
        todo = todo[:_stop_after_shards]
    with tqdm(total=num, initial=already_done, desc="rendering scenes", unit="scene") as progress:
        if num_proc == 1:
            for shard, start, stop in todo:
                _write_shard(str(shards_dir), shard, num_shards, start, stop, size, seed, progress)
        else:
            with ProcessPoolExecutor(max_workers=num_proc) as pool:
                futures = [pool.submit(_write_shard, str(shards_dir), k, num_shards, a, b, size, seed) for k, a, b in todo]
                for future in futures:
                    progress.update(future.result())
    if _stop_after_shards is not None:
        raise KeyboardInterrupt(f"stopped after {len(todo)} shards (test hook)")

    shards = [load_from_disk(str(shards_dir / _shard_name(k, num_shards))) for k in range(num_shards)]
    temp_out = out_dir.parent / f"{out_dir.name}.tmp-{os.getpid()}"
    shutil.rmtree(temp_out, ignore_errors=True)
    with _quiet_datasets():
        concatenate_datasets(shards).save_to_disk(str(temp_out))
    (temp_out / _PARAMS_FILE).write_text(json.dumps(params))
    os.replace(temp_out, out_dir)  # out_dir is absent or an empty directory (checked above)
    shutil.rmtree(shards_dir)
    return load_from_disk(str(out_dir))


# ----------------------------------------------------------------------------------------------
# fourm-hf make-scenes
# ----------------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--num", type=int, required=True, help="number of scenes")
    parser.add_argument("--size", type=int, default=64, help="image side in pixels (multiple of 8, >= 32)")
    parser.add_argument("--out", required=True, help="output directory (datasets.save_to_disk format)")
    parser.add_argument("--seed", type=int, default=0, help="dataset seed (scene i uses scene_seed(seed, i))")
    parser.add_argument("--num-proc", type=int, default=1, help="worker processes")
    parser.add_argument("--shard-size", type=int, default=500, help="scenes per resumable shard")


def main(args: argparse.Namespace) -> int:
    try:
        dataset = make_scene_dataset(
            num=args.num, size=args.size, out_dir=args.out, seed=args.seed, shard_size=args.shard_size, num_proc=args.num_proc
        )
    except (ValueError, TypeError) as error:
        print(f"fourm-hf: error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {len(dataset)} scenes of {args.size}x{args.size} to {args.out}")
    return 0
