"""Whether released tokenizers fit a 4M model: the checks of ``fourm-hf assemble-ml4m`` and of the
processor built for a released model by name (``released_processor.py``).

A released tokenizer folder is matched to a model modality by its repo name
(:data:`RELEASED_TOKENIZER_MODALITIES`); the modality must be an image-token grid the processor serves at
the model's resolution (:func:`servable_modalities`), the tokenizer must give that modality's vocabulary
and ids per sample (:func:`check_tokenizer_fits`), the text tokenizer the vocabulary of every text
modality (:func:`check_text_tokenizer`), and each image output needs a tokenizer
(:func:`check_outputs_covered`). Every mismatch is a ``ValueError`` saying what was found and expected.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..modalities import get_modality
from ..tokenizers.released_modalities import KINDS, VECTOR_KINDS, modality_kind

# The <modality> part of a released tokenizer repo name (EPFL-VILAB/4M_tokenizers_<modality>_<size>_<res>)
# -> the model modality it tokenizes. The edge tokenizer (edge_8k_224-512) serves both tok_sam_edge and
# tok_canny_edge, so it must be named explicitly (tok_sam_edge=DIR / tok_canny_edge=DIR).
RELEASED_TOKENIZER_MODALITIES = {
    "rgb": "tok_rgb",
    "depth": "tok_depth",
    "normal": "tok_normal",
    "semseg": "tok_semseg",
    "CLIP-B16": "tok_clip",
    "DINOv2-B14": "tok_dinov2",
    "ImageBind-H14": "tok_imagebind",
    "DINOv2-B14-global": "tok_dinov2_global",
    "ImageBind-H14-global": "tok_imagebind_global",
    "human-poses": "human_poses",
    "sam-instance": "sam_instance",
}
AMBIGUOUS_RELEASED_TOKENIZERS = {"edge": ("tok_sam_edge", "tok_canny_edge")}


# ---- checks against the model ------------------------------------------------------------------------
def servable_modalities(config) -> list[str]:
    """The model's image-token modalities a processor at the model's resolution can tokenize."""
    return [name for name in config.modality_names if why_not_servable(config, name) is None]


def why_not_servable(config, name: str) -> str | None:
    """Why the processor cannot tokenize the model's ``name`` at the model's resolution (None: it can)."""
    spec = config.modality(name)
    if spec.kind != "image_tokens":
        reader = "the text tokenizer's ids" if spec.kind == "sequence" else "continuous values"
        return f"a {spec.kind} modality in this model (it reads {reader}), not an image-token grid"
    if modality_kind(name) is None:
        return f"a modality the processor has no input map for (it tokenizes the kinds {list(KINDS)})"
    if config.modality_image_size(name) != config.image_size:
        return (f"at {config.modality_image_size(name)} px, but the processor and the any-to-any pipeline serve one "
                f"resolution, the model's {config.image_size} px (super-resolution outputs are not supported)")
    return None


def check_modality_servable(config, name: str) -> None:
    """The model must have ``name`` as an image-token modality the processor can serve (``servable_modalities``)."""
    where = f"tokenizer for {name!r}"
    if name not in config.modality_specs:
        raise ValueError(f"{where}: the model has no modality {name!r}; its image-token modalities are "
                         f"{[n for n in config.modality_names if config.modality(n).kind == 'image_tokens']}.")
    reason = why_not_servable(config, name)
    if reason is not None:
        raise ValueError(f"{where}: {name} is {reason}; assemble-ml4m serves {servable_modalities(config)}.")


def _registry_width(modality: str) -> int | None:
    return get_modality(modality).num_channels


def check_tokenizer_fits(config, name: str, tokenizer) -> None:
    """``tokenizer`` (a ``ReleasedModalityTokenizer``) must have the vocabulary and the ids per sample of the
    model's ``name`` (its own grid, ``config.num_positions(name)``, not the model's main grid)."""
    where = f"tokenizer for {name!r}"
    is_vector, learned = tokenizer.config.input_kind in VECTOR_KINDS, config.modality(name).learned_positions
    if is_vector and not learned:
        grid = config.modality_grid_size(name)
        raise ValueError(f"{where}: a bottleneck-MLP tokenizer gives one vector per sample, but the model's {name} is a "
                         f"{grid}x{grid} grid; it needs a grid tokenizer.")
    if tokenizer.config.input_kind == "vector":  # a global embedding: its width tells the feature model
        width, wanted = int(tokenizer.tokenizer.config.n_channels), config.modality(name).num_channels
        owners = [released for released, modality in RELEASED_TOKENIZER_MODALITIES.items()
                  if modality != name and modality.endswith("_global") and _registry_width(modality) == width]
        if width != wanted and owners:
            raise ValueError(f"{where}: the tokenizer reads {width}-wide global embeddings, those of {' or '.join(owners)}; "
                             f"the model's {name} takes {wanted}-wide ones: it is the tokenizer of another feature model.")
    found, expected = tokenizer.config.vocab_size, config.modality(name).vocab_size
    if found != expected:
        raise ValueError(f"{where}: the tokenizer has {found} codes but the model's {name} vocabulary is {expected}; "
                         "this tokenizer does not belong to this model.")
    found, expected = tokenizer.config.num_tokens, config.num_positions(name)
    if found != expected:  # per modality: 4M-21's tok_dinov2 has its own 16x16 grid, the globals 16 tokens
        grid = config.modality_grid_size(name)
        given = (f"{found} ids per sample" if is_vector else
                 f"a {tokenizer.config.grid_size}x{tokenizer.config.grid_size} grid ({found} ids per sample)")
        wanted = (f"{expected} tokens" if learned else
                  f"a {grid}x{grid} grid ({expected} ids per sample)")
        raise ValueError(f"{where}: the tokenizer gives {given} at {config.image_size} px, the model's {name} has {wanted}.")


def check_text_tokenizer(config, text_tokenizer) -> None:
    """Every text (sequence) modality of the model must have the text tokenizer's vocabulary size."""
    sizes = {name: config.modality(name).vocab_size for name in config.modality_names
             if config.modality(name).kind == "sequence"}
    wrong = {name: size for name, size in sizes.items() if size != len(text_tokenizer)}
    if wrong:
        raise ValueError(f"--text-tokenizer: it has {len(text_tokenizer)} ids but the model's text modalities have "
                         f"vocabularies {wrong}; it does not belong to this model.")


def check_outputs_covered(config, tokenized: Sequence[str], allow_missing: bool) -> dict[str, str]:
    """The model's image outputs that stay undecodable, ``{modality: why}``.

    An output the processor could serve but got no tokenizer for is an error unless ``allow_missing``;
    outputs it cannot serve at all (``why_not_servable``) are reported, never an error.
    """
    image_outputs = [n for n in config.output_modalities if config.modality(n).kind == "image_tokens"]
    unservable = {n: why_not_servable(config, n) for n in image_outputs if why_not_servable(config, n) is not None}
    missing = [n for n in image_outputs if n not in tokenized and n not in unservable]
    if missing and not allow_missing:
        raise ValueError(
            f"the model outputs {missing} have no tokenizer to decode them (given: {sorted(tokenized) or 'none'}; "
            f"image outputs the processor can serve: {[n for n in image_outputs if n not in unservable]}); pass one "
            "per output, or --allow-missing-tokenizers to leave them undecodable."
        )
    decodable = [n for n in config.output_modalities if n in ("caption", "det") or n in tokenized]
    if not decodable:
        reasons = "; ".join(f"{n}: {why}" for n, why in unservable.items())
        raise ValueError(f"no output of the model could be decoded: its outputs are {config.output_modalities}, "
                         f"tokenizers were given for {sorted(tokenized) or 'none'} and the processor can serve "
                         f"{servable_modalities(config)}" + (f" ({reasons})." if reasons else "."))
    return {**{n: "no tokenizer given" for n in missing}, **unservable}
