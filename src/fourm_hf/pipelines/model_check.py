"""Which model and processor the any-to-any pipeline serves, and whether the two fit together.

A 4M model is recognised by its config's ``model_type`` and the methods the sampler calls, a 4M
processor by the attributes the pipeline uses: not by ``isinstance``, because with
``trust_remote_code=True`` transformers executes a folder's own copy of the modules, whose classes are
other objects than this package's. :func:`check_model_and_processor` refuses a pair whose image size,
grids or vocabularies disagree before anything is generated.
"""

from __future__ import annotations

from ..configuration_fourm import FourMConfig
from ..processing.processing_fourm import FourMProcessor

# What the pipeline and the sampler call on a 4M model and its processor.
FOURM_MODEL_METHODS = ("encode", "decode")
FOURM_PROCESSOR_ATTRIBUTES = ("vqvaes", "tokenizer", "image_size", "decode", "decode_image_tokens", "decode_pixel_values")


def is_fourm_model(model) -> bool:
    """Whether ``model`` is a 4M model: its config's ``model_type`` is ``"fourm"`` and it has the methods
    the sampler calls (``FOURM_MODEL_METHODS``).

    Not ``isinstance(model, FourMModel)``: with ``trust_remote_code=True`` transformers executes the
    folder's own copy of the model module, whose class is another object than this package's.
    """
    config = getattr(model, "config", None)
    return (getattr(config, "model_type", None) == FourMConfig.model_type
            and all(callable(getattr(model, name, None)) for name in FOURM_MODEL_METHODS))


def is_fourm_processor(processor) -> bool:
    """Whether ``processor`` is a 4M processor, by behaviour: callable, with the VQ-VAEs, text tokenizer,
    crop size and decoders the pipeline uses (``FOURM_PROCESSOR_ATTRIBUTES``); remote code gives it
    another class object than this package's ``FourMProcessor``."""
    return callable(processor) and all(hasattr(processor, name) for name in FOURM_PROCESSOR_ATTRIBUTES)


def check_model_and_processor(config: FourMConfig, processor: FourMProcessor) -> None:
    """The processor must produce what the model reads: same image size, grid and vocabularies."""
    if processor.image_size != config.image_size:
        raise ValueError(f"processor: crops to {processor.image_size} px but the model reads {config.image_size} px; "
                         "they must match.")
    for name, vqvae in processor.vqvaes.items():
        if name not in config.modality_specs:
            continue
        spec = config.modality(name)
        ids_per_sample = getattr(vqvae.config, "num_tokens", None) or vqvae.config.grid_size**2
        if ids_per_sample != config.num_positions(name):
            grid = config.modality_grid_size(name)
            raise ValueError(f"processor: VQ-VAE {name!r} gives {ids_per_sample} ids per sample "
                             f"({vqvae.config.grid_size}x{vqvae.config.grid_size} grid), the model's {name} has "
                             f"{config.num_positions(name)} ({grid}x{grid} grid).")
        if vqvae.config.vocab_size != spec.vocab_size:
            raise ValueError(f"processor: VQ-VAE {name!r} has {vqvae.config.vocab_size} codes, the model's {name} "
                             f"vocabulary {spec.vocab_size}.")
    for name in config.modality_specs:  # every sequence the text tokenizer writes
        if config.modality(name).tokenizer == "text" and len(processor.tokenizer) > config.modality(name).vocab_size:
            raise ValueError(f"processor: the text tokenizer has {len(processor.tokenizer)} ids, more than the model's "
                             f"{name} vocabulary {config.modality(name).vocab_size}.")


__all__ = ["FOURM_MODEL_METHODS", "FOURM_PROCESSOR_ATTRIBUTES", "check_model_and_processor", "is_fourm_model",
           "is_fourm_processor"]
