"""What a scene is (objects, camera, light) and the random draws of its parts (``render.sample_scene`` checks a draw)."""

from __future__ import annotations

from dataclasses import dataclass

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


# base dimensions in metres per shape and size word: sphere radius, cube half side,
# cylinder radius, cone base radius
_BASE_SIZE = {"small": 0.34, "large": 0.54}


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
