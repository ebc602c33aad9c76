"""Ray casting: ray-object intersections, shadows and shading, vectorised over pixels with numpy."""

from __future__ import annotations

import numpy as np

from .layout import COLORS, FLOOR_RADIUS, Camera, Scene, SceneObject

_FLOOR_COLORS = ((0.62, 0.60, 0.56), (0.54, 0.52, 0.49))  # 1 m checker tiles
_SKY_HORIZON = np.array([0.80, 0.87, 0.95])
_SKY_ZENITH = np.array([0.32, 0.52, 0.84])
_AMBIENT = 0.38
_DIFFUSE = 0.72
_SPECULAR = 0.25
_SHININESS = 32.0
_EPS = 1e-4


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
