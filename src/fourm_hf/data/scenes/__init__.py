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

Modules: ``layout`` (the scene and its sampling), ``raytrace`` (intersections, shadows, shading),
``render`` (the scene of a seed and its columns), ``dataset`` (``make_scene_dataset``; the command
``fourm-hf make-scenes`` is ``fourm_hf.commands.make_scenes``).
"""

from .dataset import make_scene_dataset, scene_features, scene_seed
from .layout import (
    COLORS,
    FIELD_OF_VIEW_DEGREES,
    LAYOUT_CHECK_SIZE,
    MIN_VISIBLE_FRACTION,
    SCENE_CLASSES,
    SHAPES,
    SIZES,
    SKY_DEPTH,
    SKY_NORMAL,
    Camera,
    Scene,
    SceneObject,
)
from .render import describe_scene, render_scene, sample_scene

__all__ = [
    "COLORS", "Camera", "FIELD_OF_VIEW_DEGREES", "LAYOUT_CHECK_SIZE", "MIN_VISIBLE_FRACTION", "SCENE_CLASSES", "SHAPES",
    "SIZES", "SKY_DEPTH", "SKY_NORMAL", "Scene", "SceneObject", "describe_scene",
    "make_scene_dataset", "render_scene", "sample_scene", "scene_features", "scene_seed",
]
