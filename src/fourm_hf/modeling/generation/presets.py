"""Decoding presets: per-modality recipes a checkpoint can name in ``config.generation_preset``.

``"ml4m_demo"`` holds the reference demo's defaults for the released models (``Demo4MSampler`` in
``apple/ml-4m``), in this package's modality names and with the reference's conventions:

* RGB -> X (the inputs hold ``rgb`` or ``tok_rgb``): dense feature/geometry maps by ROAR in one step
  at temperature 0.01 with guidance 2; captions and boxes autoregressive at 0.3; human poses,
  colour palette and metadata at 0.1; SAM instances at 0.01.
* X -> RGB (otherwise): ROAR with ``onex:0.5:0.5`` temperatures: CLIP 50 steps from 5.0, guidance
  3; depth/normals/segmentation/edges 8 steps from 3.0; RGB 25 steps from 3.0; DINOv2/ImageBind 8
  steps at 0.01; guidance 2.
* super-resolution (``@448`` targets): MaskGIT, 8 steps of the reference cosine, temperature 1,
  guidance 2.

Every recipe uses top-p 0.8, top-k 0, guidance that grows with each finished image target, and
``conventions="ml4m"``. A modality the preset does not list gets the package's defaults.

This module holds the recipes and the package's own defaults (``DEFAULT_DECODING``) as data; turning a
recipe into a schedule is :func:`~.planning.build_preset_schedule`.
"""

from __future__ import annotations

from collections.abc import Sequence

# The package's own decoding defaults, per kind of target: what a checkpoint that names no preset gets (the
# pipeline's defaults, and the planner's image steps). Image targets: MaskGIT, cosine token schedule,
# temperature annealed linearly from 2.0 towards 0 (bold early guesses, confident late ones). Sequence
# targets: autoregressive, low temperature with nucleus sampling (nearly greedy, no loops). Tune here.
DEFAULT_DECODING = {
    "image": {"scheme": "maskgit", "num_steps": 8, "token_schedule": "cosine", "temperature": 2.0,
              "temperature_schedule": "linear", "top_k": 0, "top_p": 0.0, "greedy": False},
    "sequence": {"scheme": "autoregressive", "temperature": 0.3, "temperature_schedule": "constant",
                 "top_k": 0, "top_p": 0.8, "greedy": False},
}


def _roar(steps: int, temperature: float, cfg: float, temperature_schedule: str = "constant") -> dict:
    return {"scheme": "roar", "num_steps": steps, "token_schedule": "ml4m_linear", "temperature": temperature,
            "temperature_schedule": temperature_schedule, "cfg_scale": cfg}


def _text(max_tokens: int, temperature: float) -> dict:
    return {"scheme": "autoregressive", "max_tokens": max_tokens, "temperature": temperature,
            "temperature_schedule": "constant", "cfg_scale": 1.0}


_SEQUENCES = {"caption": _text(256, 0.3), "det": _text(256, 0.3), "human_poses": _text(275, 0.1),
              "sam_instance": _text(256, 0.01), "color_palette": _text(23, 0.1), "metadata": _text(40, 0.1)}
_DENSE = ("tok_clip", "tok_depth", "tok_normal", "tok_semseg", "tok_canny_edge", "tok_sam_edge")

PRESETS = {
    "ml4m_demo": {
        "conventions": "ml4m",
        "top_k": 0,
        "top_p": 0.8,
        "cfg_grow_conditioning": True,
        "order": ["tok_clip", "tok_dinov2", "tok_imagebind", "tok_depth", "tok_normal", "tok_semseg",
                  "tok_canny_edge", "tok_sam_edge", "tok_rgb", "caption", "det", "human_poses", "sam_instance",
                  "color_palette", "metadata"],
        "rgb_to_x": {**{name: _roar(1, 0.01, 2.0) for name in _DENSE + ("tok_dinov2", "tok_imagebind")}, **_SEQUENCES},
        "x_to_rgb": {
            "tok_clip": _roar(50, 5.0, 3.0, "onex:0.5:0.5"),
            **{name: _roar(8, 0.01, 2.0) for name in ("tok_dinov2", "tok_imagebind")},
            **{name: _roar(8, 3.0, 2.0, "onex:0.5:0.5") for name in _DENSE[1:]},
            "tok_rgb": _roar(25, 3.0, 2.0, "onex:0.5:0.5"),
            **_SEQUENCES,
        },
        "super_resolution": {
            f"{name}@448": {"scheme": "maskgit", "num_steps": 8, "token_schedule": "ml4m_cosine", "temperature": 1.0,
                            "temperature_schedule": "constant", "cfg_scale": 2.0}
            for name in ("tok_clip", "tok_depth", "tok_normal", "tok_semseg", "tok_rgb")
        },
    },
}


def get_preset(name: str) -> dict:
    """A preset by name (``PRESETS``), with a clear error for unknown names."""
    if name not in PRESETS:
        raise ValueError(f"unknown generation preset {name!r}; known presets: {sorted(PRESETS)}.")
    return PRESETS[name]


def preset_recipe(preset: dict, cond_domains: Sequence[str], target: str) -> dict | None:
    """The recipe for ``target``: super-resolution for ``@448`` names, RGB->X when RGB is an input,
    else X->RGB; None when the preset does not list the modality."""
    if "@" in target:
        return preset["super_resolution"].get(target)
    rgb_given = any(name in ("rgb", "tok_rgb") for name in cond_domains)
    return preset["rgb_to_x" if rgb_given else "x_to_rgb"].get(target)
