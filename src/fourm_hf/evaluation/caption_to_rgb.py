"""Caption -> RGB, checked by captioning the generated image again with the same pipeline.

For each prompt (a held-out scene's caption) the pipeline generates an RGB image from the text, then
captions that image (RGB -> caption). A generation *succeeds* when every (colour, shape) object of
the prompt is mentioned in the re-caption (mentions extracted by ``CaptionObjectF1.extract_mentions``).
Reported: the fraction of successful generations and the recall of prompt objects over all prompts.
The re-captioner is the model itself, so its own captioning errors count against the generation.
"""

from __future__ import annotations

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from ..data.scenes import COLORS, SHAPES


def rgb_of(output) -> np.ndarray:
    """uint8 (S, S, 3) from a pipeline output (a dict, or a one-element list of dicts) with an ``rgb`` entry
    that is a PIL image, an array, or ``{"array": ..., "image": ...}``."""
    if isinstance(output, list):
        if len(output) != 1:
            raise ValueError(f"caption -> rgb: expected one output per prompt, got {len(output)}")
        output = output[0]
    if not isinstance(output, dict) or "rgb" not in output:
        raise ValueError(f"caption -> rgb: the pipeline output has no 'rgb' entry (got {type(output).__name__})")
    value = output["rgb"]
    if isinstance(value, dict):
        value = value["array"] if "array" in value else value["image"]
    array = np.asarray(value.convert("RGB") if isinstance(value, Image.Image) else value)
    if array.ndim != 3 or array.shape[-1] != 3:
        raise ValueError(f"caption -> rgb: expected an (S, S, 3) image, got shape {array.shape}")
    return array.astype(np.uint8)


def caption_to_rgb_check(pipe, prompts: list[str], seed: int = 0, batch_size: int = 16, num_examples: int = 5) -> dict:
    """Generate an image per prompt (seed ``seed + i`` for prompt ``i``), re-caption all of them, compare.

    Returns ``{"num_prompts", "all_objects_found" (fraction of prompts), "object_recall" (found / wanted
    over all prompts), "examples": [{"prompt", "recaption", "found", "wanted"}] (the first few)}``.
    """
    from ..training.metrics import CaptionObjectF1

    if not prompts:
        raise ValueError("caption_to_rgb_check: no prompts")
    extractor = CaptionObjectF1(colours=list(COLORS), shapes=list(SHAPES), keep_in_memory=True)
    images = []
    for index, prompt in enumerate(tqdm(prompts, desc="caption -> rgb", unit="prompt")):
        output = pipe(text=prompt, target_modalities=["rgb"], seed=seed + index)
        images.append(Image.fromarray(rgb_of(output)))
    outputs = pipe(images, target_modalities=["caption"], seed=seed, batch_size=batch_size)
    recaptions = [output["caption"] for output in outputs]

    successes = found_total = wanted_total = 0
    examples = []
    for prompt, recaption in zip(prompts, recaptions, strict=True):
        wanted = extractor.extract_mentions(prompt)
        found = wanted & extractor.extract_mentions(recaption)
        successes += found == wanted
        found_total += len(found)
        wanted_total += len(wanted)
        if len(examples) < num_examples:
            examples.append({"prompt": prompt, "recaption": recaption, "found": len(found), "wanted": len(wanted)})
    return {
        "num_prompts": len(prompts),
        "all_objects_found": successes / len(prompts),
        "object_recall": found_total / wanted_total if wanted_total else 0.0,
        "examples": examples,
    }
