"""Which model layouts the training batch makers handle, and a clear error for the others.

:class:`~fourm_hf.data.masking.collator.FourMMaskingCollator` and
:func:`~fourm_hf.testing_utils.random_packed_batch` lay every image modality out on ONE patch grid
(``config.grid_size`` squared cells at ``config.image_size``), give positions on that grid, read
token ids for every modality but raw pixels, and take the pixels of ONE input from
``pixel_values`` (``(3, image_size, image_size)``). That is the 4M-7 layout.

The 4M-21 and 4M-7-SR layouts have more: modalities on their own grids (DINOv2 / ImageBind
features at patch 14: 16x16; the 448 px super-resolution domains: 28x28; the 4x4 global
embeddings), learned position tables (the global embeddings), a continuous ``sequence_embedding``
input (T5-XXL caption vectors) and a second pixel input (``rgb@448``). A batch made under the
one-grid assumption would silently put those modalities' tokens at wrong positions and counts, so
:func:`check_trainable_layout` refuses such configs, naming each modality and why. Converted
4M-21 / SR models still load, run and generate; only training batches of those layouts are not
implemented.
"""

from __future__ import annotations


def unsupported_layout(config) -> dict[str, str]:
    """``{modality: why}`` for each modality of ``config`` the one-grid batch makers cannot lay out."""
    problems = {}
    pixel_inputs = []
    for name in config.modality_names:
        spec = config.modality(name)
        if spec.kind == "sequence_embedding":
            problems[name] = "a sequence_embedding input (continuous vectors, e.g. T5 caption embeddings)"
            continue
        if not spec.is_image:
            continue
        if spec.kind == "pixels":
            pixel_inputs.append(name)
        grid, size = config.modality_grid_size(name), config.modality_image_size(name)
        reasons = []
        if grid != config.grid_size or size != config.image_size:
            reasons.append(f"its own {grid}x{grid} grid at {size} px")
        if spec.learned_positions:
            reasons.append("learned positions")
        if reasons:
            problems[name] = " and ".join(reasons)
    for name in pixel_inputs[1:]:
        problems.setdefault(name, f"a second pixels input (after {pixel_inputs[0]!r}; one 'pixel_values' field is read)")
    return problems


def check_trainable_layout(config, what: str) -> None:
    """Raise a ValueError naming what ``what`` cannot lay out in ``config`` (module docstring)."""
    problems = unsupported_layout(config)
    if not problems:
        return
    listed = "; ".join(f"{name}: {why}" for name, why in problems.items())
    raise ValueError(
        f"{what}: training this model layout is not supported ({listed}). Supported: every image modality on the "
        f"model's one {config.grid_size}x{config.grid_size} patch grid at {config.image_size} px with sin-cos "
        "positions, token and text modalities, and at most one pixels input (the 4M-7 layout, e.g. the fourm-hf "
        "presets or a converted 4M-7 model). 4M-21 / 4M-7-SR layouts (per-modality grids, learned positions, "
        "sequence_embedding inputs, a second resolution) load, run and generate, but cannot be trained here; "
        "train a config restricted to the supported modalities (input_modalities / output_modalities) instead."
    )


__all__ = ["check_trainable_layout", "unsupported_layout"]
