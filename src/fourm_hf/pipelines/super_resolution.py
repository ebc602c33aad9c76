"""Super-resolution after a base model: 224 px tokens in, the SR model's 448 px tokens out.

The released super-resolution model (``EPFL-VILAB/4M-7-SR_L_CC12M``, converted with ``fourm-hf
convert-ml4m``) reads every modality at the base resolution (``tok_rgb``, ``tok_depth``, ... at 224 px,
14x14) and generates the same modalities at 448 px (``tok_rgb@448``, ..., 28x28). 4M chains it after a
base model: the base model's generated tokens are the SR model's inputs::

    base = pipeline("any-to-any", model="4M-21_XL-runnable")
    out = base(image, target_modalities=["rgb", "depth"], seed=0, return_tokens=True)
    sr = FourMModel.from_pretrained("4M-7-SR_L_CC12M-converted")
    rgb448 = ReleasedModalityTokenizer(FourMTokenizerModel.from_pretrained("4M_tokenizers_rgb_16k_224-448"),
                                       "tok_rgb@448", image_size=448)
    high = super_resolve(sr, out["tokens"], tokenizers={"tok_rgb@448": rgb448}, seed=0)
    high["tok_rgb@448"]["array"]   # uint8 (448, 448, 3); high["tokens"]["tok_rgb@448"]: 784 ids

The released tokenizers are trained at 224 and 448 px (``_224-448``), so the same folder decodes the
448 px tokens when wrapped at ``image_size=448``. Decoding is MaskGIT over the 28x28 grid of each
target, one target after the other (each finished target conditions the next).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import numpy as np
import torch

from ..modeling.generation import build_generation_schedule, generate
from ..processing.token_decoding import decode_image_tokens


def super_resolution_targets(config, given) -> list[str]:
    """The SR model's high-resolution outputs whose base-resolution input is in ``given``, in model order
    (``tok_rgb`` given -> ``tok_rgb@448``)."""
    return [name for name in config.output_modalities
            if "@" in name and name.split("@")[0] in given and config.modality_image_size(name) != config.image_size]


def super_resolve(model, tokens: Mapping, targets=None, tokenizers: Mapping | None = None, pixel_values=None,
                  num_steps: int = 8, temperature: float = 1.0, generator: torch.Generator | None = None,
                  seed: int | None = None) -> dict:
    """Generate ``targets`` (default :func:`super_resolution_targets`) with the SR ``model`` from base tokens.

    Args:
        model: a ``FourMModel`` with high-resolution outputs (the SR layout).
        tokens: ``{modality: ids}`` at the base resolution, one sample (N,) or a batch (B, N), e.g. a base
            pipeline's ``out["tokens"]`` (``return_tokens=True``); names the SR model does not read
            (captions, 4M-21-only modalities) are left out.
        targets: the SR model's output names (``"tok_rgb@448"``, ...).
        tokenizers: ``{target: ReleasedModalityTokenizer at the target's resolution}`` to decode with.
        pixel_values: optional (B, 3, 224, 224) ImageNet-normalised image for the SR model's ``rgb`` input.
        num_steps / temperature: MaskGIT steps and sampling temperature per target.
        generator / seed: the randomness (never the global RNG).
    Returns ``{"tokens": {target: (B, G*G) int64}, target: {"array": ..., "image": [PIL] or None}}`` for
    the decoded targets (arrays batched, as ``FourMProcessor.decode`` gives them).
    """
    config = model.config
    conditions = {}
    for name, ids in tokens.items():
        if name not in config.input_modalities or config.modality(name).is_sequence:
            continue
        ids = torch.as_tensor(np.asarray(ids.cpu() if isinstance(ids, torch.Tensor) else ids)).long()
        ids = ids[None] if ids.dim() == 1 else ids
        if ids.dim() != 2 or ids.shape[1] != config.num_positions(name):
            raise ValueError(f"tokens[{name!r}]: the SR model reads {config.num_positions(name)} ids per sample "
                             f"({config.modality_grid_size(name)}x{config.modality_grid_size(name)}), got shape {tuple(ids.shape)}.")
        conditions[name] = ids
    if not conditions:
        raise ValueError(f"tokens: none of {sorted(tokens)} is a base-resolution input of the SR model "
                         f"{[n for n in config.input_modalities if not config.modality(n).is_sequence]}.")
    sizes = {name: ids.shape[0] for name, ids in conditions.items()}
    if len(set(sizes.values())) > 1:
        raise ValueError(f"tokens: different batch sizes {sizes}.")
    targets = list(super_resolution_targets(config, conditions) if targets is None else targets)
    if not targets:
        raise ValueError(f"targets: the SR model has no high-resolution output for the given {sorted(conditions)}; "
                         f"its outputs are {config.output_modalities}.")
    tokenizers = dict(tokenizers or {})
    for name, tokenizer in tokenizers.items():
        if name not in targets:
            raise ValueError(f"tokenizers[{name!r}]: not a target of this call {targets}.")
        if tokenizer.config.grid_size**2 != config.num_positions(name) or tokenizer.config.vocab_size != config.modality(name).vocab_size:
            raise ValueError(f"tokenizers[{name!r}]: gives a {tokenizer.config.grid_size}x{tokenizer.config.grid_size} grid "
                             f"of {tokenizer.config.vocab_size} codes, the model's {name} has {config.modality_grid_size(name)}x"
                             f"{config.modality_grid_size(name)} of {config.modality(name).vocab_size} (wrap it at "
                             f"image_size={config.modality_image_size(name)}).")
    cond_domains = list(conditions) + (["rgb"] if pixel_values is not None else [])
    schedule = build_generation_schedule(config, cond_domains, targets, autoregression_schemes="maskgit",
                                         decoding_steps=int(num_steps), temps=float(temperature))
    if generator is None:
        start = int(seed) if seed is not None else int.from_bytes(os.urandom(8), "little") >> 1
        generator = torch.Generator().manual_seed(start)
    with torch.inference_mode():
        generated = generate(model, conditions, schedule, generator=generator, pixel_values=pixel_values)
    result = {"tokens": {name: generated[name].cpu() for name in targets}}
    for name, tokenizer in tokenizers.items():
        result[name] = decode_image_tokens(tokenizer, name, result["tokens"][name], generator=generator)
    return result


__all__ = ["super_resolution_targets", "super_resolve"]
