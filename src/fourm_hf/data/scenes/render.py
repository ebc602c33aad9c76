"""The scene of a seed (a layout checked for visibility) and its columns: rgb, depth, normals, semantic and
instance maps, boxes and the caption."""

from __future__ import annotations

import numpy as np

from .layout import (
    LAYOUT_CHECK_SIZE,
    MAX_LAYOUT_ATTEMPTS,
    MIN_VISIBLE_FRACTION,
    SHAPES,
    SKY_DEPTH,
    SKY_NORMAL,
    Scene,
    SceneObject,
    _inside_frame,
    _sample_camera,
    _sample_light,
    _sample_objects,
)
from .raytrace import _shade, _trace_labels


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


MAX_SCENE_SIZE = 2048  # a 2048 px scene already takes ~200 MB of maps; the renderer is not made for more


def _check_size(size) -> int:
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)):
        raise TypeError(f"scene size must be an int (pixels), got {type(size).__name__}")
    if size < 32 or size % 8 != 0 or size > MAX_SCENE_SIZE:
        raise ValueError(f"scene size must be a multiple of 8, at least 32 and at most {MAX_SCENE_SIZE} pixels, got {size}")
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
