"""Generated token ids -> arrays, PIL images, text and boxes: the pieces of ``FourMProcessor.decode``.

Each function turns one modality of a token dict back into what a person looks at:

- :func:`decode_image_tokens`: (B, G*G) VQ-VAE ids -> the decoded map in natural units (RGB uint8,
  depth in metres, unit normals, class ids, features) and a PIL rendering per sample;
- :func:`decode_pixel_values`: ImageNet-normalised (B, 3, S, S) pixels -> uint8 RGB + PIL;
- :func:`decode_boxes`: (B, L) ``det`` ids -> box lists ``[{"label", "score", "box"}]`` drawn on
  background images;
- :func:`sequence_rows`: the accepted layouts of a sequence modality -> plain id lists.

The processor (``processing_fourm.py``) owns the components and calls these; they are kept apart
so that encoding and decoding each stay one readable file.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from ..text.box_scores import scored_boxes
from .visualization import colorize_depth, colorize_normals, colorize_semseg, draw_boxes


def decode_image_tokens(vqvae, name: str, ids, num_diffusion_steps=None, generator=None) -> dict:
    """(B, N) or (N,) ids (N = G*G, or the ``num_tokens`` of a vector tokenizer) of modality ``name`` -> ``{"array": ..., "image": [PIL] or None}``.

    ``vqvae`` is a ``FourMVQVAE`` or a ``ReleasedModalityTokenizer``; ``num_diffusion_steps`` /
    ``generator`` reach released diffusion (DiVAE) tokenizers only. ``array`` is rgb uint8
    (B, S, S, 3), depth float32 metres (B, S, S), normal float32 unit vectors (B, S, S, 3), semseg
    int64 class ids (B, S, S) or feature float32 (B, S, S, C) (features have ``image`` None).
    """
    grid = vqvae.config.grid_size
    token_shape = getattr(vqvae, "token_shape", (grid, grid))
    count = int(np.prod(token_shape))
    ids = torch.as_tensor(np.asarray(ids.cpu() if isinstance(ids, torch.Tensor) else ids))
    if ids.dim() == 1:
        ids = ids[None]
    if ids.dim() != 2 or ids.shape[1] != count:
        raise ValueError(f"{name}: ids must have shape (B, {count}) or ({count},), got {tuple(ids.shape)}")
    if ids.dtype.is_floating_point or ids.dtype == torch.bool:
        raise ValueError(f"{name}: ids must be integers, got dtype {ids.dtype}")
    vocab = vqvae.config.vocab_size
    if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= vocab):
        raise ValueError(f"{name}: ids must lie in [0, {vocab}), got values in [{int(ids.min())}, {int(ids.max())}]")
    device = next(vqvae.parameters()).device
    released = getattr(vqvae, "is_modality_tokenizer", False)
    options = {"num_diffusion_steps": num_diffusion_steps, "generator": generator} if released else {}
    with torch.inference_mode():
        maps = vqvae.decode(ids.long().reshape(-1, *token_shape).to(device), **options)
    array = vqvae.postprocess(maps)
    kind = vqvae.config.input_kind
    if released:
        rendered = vqvae.render(array)
        images = None if rendered is None else [Image.fromarray(sample) for sample in rendered]
    elif kind == "rgb":
        images = [Image.fromarray(sample) for sample in array]
    elif kind == "depth":
        images = [Image.fromarray(colorize_depth(sample)) for sample in array]
    elif kind == "normal":
        images = [Image.fromarray(colorize_normals(sample)) for sample in array]
    elif kind == "semseg":
        images = [Image.fromarray(colorize_semseg(sample, vqvae.config.num_classes)) for sample in array]
    else:
        images = None
    return {"array": array, "image": images}


def decode_pixel_values(pixel_values, image_mean, image_std) -> dict:
    """Normalised (B, 3, S, S) or (3, S, S) pixels -> ``{"array": uint8 (B, S, S, 3), "image": [PIL]}``."""
    pixels = np.asarray(pixel_values.detach().cpu() if isinstance(pixel_values, torch.Tensor) else pixel_values,
                        dtype=np.float32)
    if pixels.ndim == 3:
        pixels = pixels[None]
    if pixels.ndim != 4 or pixels.shape[1] != 3:
        raise ValueError(f"pixel_values: expected shape (B, 3, S, S), got {pixels.shape}")
    mean = np.asarray(image_mean, dtype=np.float32).reshape(1, 3, 1, 1)
    std = np.asarray(image_std, dtype=np.float32).reshape(1, 3, 1, 1)
    rgb = np.clip(np.round((pixels * std + mean) * 255.0), 0, 255).astype(np.uint8).transpose(0, 2, 3, 1)
    return {"array": rgb, "image": [Image.fromarray(sample) for sample in rgb]}


def decode_boxes(tokenizer, rows: list[list[int]], backgrounds: list[Image.Image], box_scores=None,
                 token_probs=None) -> dict:
    """``det`` id rows -> ``{"boxes": [[{"label", "score", "box"}]], "image": [PIL with the boxes drawn]}``.

    ``box_scores``: None, one number for every box, or one list per row with one score per decoded box.
    ``token_probs``: instead, one list per row of the generated tokens' probabilities: each box is scored
    by the mean probability of its tokens (``text/box_scores.py``), its tokens decoded once.
    """
    if box_scores is not None and token_probs is not None:
        raise ValueError("decode: give box_scores or box_token_probs, not both")
    box_lists = []
    for index, row in enumerate(rows):
        if token_probs is not None:
            boxes, scores = scored_boxes(tokenizer, row, token_probs[index])
        else:
            boxes = tokenizer.decode_boxes(row)
            scores = _given_scores(box_scores, index, len(boxes))
        if scores is not None and len(scores) != len(boxes):
            raise ValueError(f"box_scores[{index}]: {len(scores)} scores for {len(boxes)} decoded boxes")
        box_lists.append([{"label": box["label"], "score": None if scores is None else float(scores[j]),
                           "box": box["box"]} for j, box in enumerate(boxes)])
    return {"boxes": box_lists, "image": [draw_boxes(bg, boxes) for bg, boxes in zip(backgrounds, box_lists)]}


def _given_scores(box_scores, index: int, count: int) -> list | None:
    """Row ``index``'s scores from ``box_scores`` (None, one number for every box, or one list per row)."""
    if box_scores is None:
        return None
    if isinstance(box_scores, (int, float)):
        return [box_scores] * count
    return list(box_scores[index])


def sequence_rows(ids, name: str) -> list[list[int]]:
    """(B, L) tensor / array, a list of id lists, or one (L,) sequence -> list of id lists."""
    if isinstance(ids, torch.Tensor):
        ids = ids.detach().cpu().numpy()
    if isinstance(ids, np.ndarray):
        if ids.ndim == 1:
            ids = ids[None]
        if ids.ndim != 2 or not np.issubdtype(ids.dtype, np.integer):
            raise ValueError(f"{name}: ids must be an integer (B, L) or (L,) array, got {ids.dtype} {ids.shape}")
        return [row.tolist() for row in ids]
    if isinstance(ids, (list, tuple)):
        if ids and all(isinstance(v, (int, np.integer)) for v in ids):
            return [list(ids)]
        return [np.asarray(row.cpu() if isinstance(row, torch.Tensor) else row).tolist() for row in ids]
    raise ValueError(f"{name}: expected ids as a tensor, an array or lists of ints, got {type(ids).__name__}")


def box_backgrounds(batch_size: int, decoded: dict, image, vqvaes: dict, image_size: int) -> list[Image.Image]:
    """What decoded boxes are drawn on: ``image`` (one, or one per sample), else the decoded RGB tokens
    of an ``input_kind == "rgb"`` tokenizer in ``decoded``, else the decoded ``pixel_values`` ("rgb"),
    else a grey ``image_size`` canvas."""
    if image is not None:
        images = list(image) if isinstance(image, (list, tuple)) else [image] * batch_size
        if len(images) != batch_size:
            raise ValueError(f"image: {len(images)} images for {batch_size} box lists")
        return images
    for name, vqvae in vqvaes.items():
        if name in decoded and vqvae.config.input_kind == "rgb" and len(decoded[name]["image"]) == batch_size:
            return decoded[name]["image"]
    if "rgb" in decoded and len(decoded["rgb"]["image"]) == batch_size:
        return decoded["rgb"]["image"]
    return [Image.new("RGB", (image_size, image_size), (128, 128, 128))] * batch_size
