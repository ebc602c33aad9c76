"""The raw inputs of a ``FourMProcessor`` call: which keyword reaches which dense map, batches, options.

Which processor keyword carries which dense map is not written out here: it is derived from the modality
registry (``ModalitySpec.processor_argument`` and ``target``), so a modality registered by a user is routed
the same way as the built-in ones. A modality with a dense map of its own (``processor_argument="maps"``)
is given as ``maps={modality name: map}``; its map is read as its VQ-VAE's ``input_kind`` says (an RGB,
depth, normal or segmentation map) and cropped with the very crop of the sample's other maps.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from ..modalities import modalities_for_argument

# The image processor's keywords (FourMImageProcessor.__call__) and the output key a VQ-VAE reads for each:
# RGB goes to the VQ-VAEs as ``tokenizer_rgb`` in [-1, 1] (``pixel_values`` is the model's own pixel input).
IMAGE_PROCESSOR_OUTPUTS = {"images": "tokenizer_rgb", "depth": "depth", "normal": "normal", "semseg": "semseg"}
# A FourMVQVAE's ``input_kind`` -> the image processor keyword that reads a map of that kind.
KIND_ARGUMENTS = {"rgb": "images", "depth": "depth", "normal": "normal", "semseg": "semseg"}
# Crop options that choose a crop: a map given in ``maps=`` takes the crop already chosen for its sample.
_CROP_CHOICE_OPTIONS = ("crop", "crop_box", "flip", "flip_probability", "generator")


def map_arguments() -> dict[str, str]:
    """Image processor keyword -> the dense map (VQ-VAE ``target``) it carries, from the registry:
    ``{"images": "rgb", "depth": "depth", "normal": "normal", "semseg": "semseg"}`` for the built-in specs."""
    mapping = {}
    for argument in IMAGE_PROCESSOR_OUTPUTS:
        for spec in modalities_for_argument(argument):
            if spec.kind == "image_tokens":
                mapping.setdefault(argument, spec.target)
    return mapping


def map_keys() -> dict[str, str]:
    """Dense map (VQ-VAE ``target``) -> the image processor output a VQ-VAE of that target encodes."""
    return {target: IMAGE_PROCESSOR_OUTPUTS[argument] for argument, target in map_arguments().items()}


def crop_own_maps(image_processor, vqvaes: Mapping, maps: Mapping, shared, images_kwargs: dict) -> dict[str, np.ndarray]:
    """``maps={modality: map(s)}`` -> ``{modality: the image processor's output for its VQ-VAE}``.

    ``shared`` is the image processor's output for the sample's other maps (its ``crop_box`` and ``flipped``
    are re-applied) or None (then the first map chooses the crop, with ``images_kwargs``, and the others
    follow it). Each modality must have a loaded VQ-VAE that reads an RGB, depth, normal or segmentation map.
    """
    if not isinstance(maps, Mapping):
        raise ValueError(f"maps: expected a dict {{modality: map}}, got {type(maps).__name__}")
    outputs = {}
    for name, value in maps.items():
        vqvae = vqvaes.get(name)
        kind = getattr(getattr(vqvae, "config", None), "input_kind", None)
        if kind not in KIND_ARGUMENTS or not getattr(vqvae.config, "can_encode", True):
            readable = sorted(n for n, v in vqvaes.items() if v.config.input_kind in KIND_ARGUMENTS)
            raise ValueError(f"maps[{name!r}]: no VQ-VAE that reads a dense map is loaded for it; this processor "
                             f"reads maps= for {readable or 'no modality'}")
        options = dict(images_kwargs)
        if shared is not None:
            options = {key: item for key, item in options.items() if key not in _CROP_CHOICE_OPTIONS}
            options.update(crop_box=np.asarray(shared["crop_box"]), flip=[bool(f) for f in shared["flipped"]])
        argument = KIND_ARGUMENTS[kind]
        try:
            processed = image_processor(**{argument: value}, **options, return_tensors=None)
        except ValueError as error:  # the shared crop box does not fit this map: it is smaller than the others
            if shared is None or not str(error).startswith("crop_box"):
                raise
            raise ValueError(f"maps[{name!r}]: smaller than the sample's other maps ({_sizes(shared)} (H, W)); aligned "
                             f"maps of one sample must have the same size ({error})") from error
        if shared is not None and not np.array_equal(np.asarray(processed["original_size"]),
                                                     np.asarray(shared["original_size"])):
            raise ValueError(f"maps[{name!r}]: sizes {_sizes(processed)} (H, W) differ from the sample's other maps "
                             f"{_sizes(shared)}; aligned maps of one sample must have the same size")
        shared = processed if shared is None else shared
        outputs[name] = processed[IMAGE_PROCESSOR_OUTPUTS[argument]]
    return outputs


def _sizes(processed) -> list:
    return np.asarray(processed["original_size"]).tolist()


def take_generator(kwargs: dict):
    """Pop ``generator`` (flat or in ``images_kwargs``) before ``_merge_kwargs`` deep-copies the keywords:
    a copied numpy generator would leave the caller's one unadvanced, so every call would crop alike."""
    nested = kwargs.get("images_kwargs") or {}
    if "generator" in nested:
        if "generator" in kwargs:
            raise ValueError("Keyword argument generator was passed two times: in images_kwargs and as a **kwarg.")
        kwargs["images_kwargs"] = {key: value for key, value in nested.items() if key != "generator"}
        return nested["generator"]
    return kwargs.pop("generator", None)


def tensor_type(text_value, images_value) -> str:
    """The merged ``return_tensors`` of text_kwargs and images_kwargs -> "pt" or "np" (None: numpy, as the
    image processor does). The processor returns one dict, so the two must agree."""
    text_value, images_value = (getattr(value, "value", value) for value in (text_value, images_value))
    if text_value != images_value:
        raise ValueError(f"return_tensors is {text_value!r} in text_kwargs but {images_value!r} in images_kwargs; the "
                         "processor returns one dict of one type: pass it once, flat or in common_kwargs")
    if text_value not in ("pt", "np", None):
        raise ValueError(f"return_tensors must be 'pt', 'np' or None (numpy), got {text_value!r}")
    return text_value or "np"


def is_batch(maps: dict, boxes, text) -> bool:
    """Lists mean a batch. Boxes are always a list: a batch when its entries are lists themselves."""
    kinds = {}
    for name, value in maps.items():
        kinds[name] = isinstance(value, (list, tuple))
    if text is not None:
        kinds["text"] = isinstance(text, (list, tuple))
    if boxes is not None:
        if not isinstance(boxes, (list, tuple)):
            raise ValueError(f"boxes: expected a list of box dicts (one sample) or a list of such lists, got {type(boxes).__name__}")
        nested = len(boxes) > 0 and all(isinstance(entry, (list, tuple)) for entry in boxes)
        if kinds:
            if any(kinds.values()) and not nested and len(boxes) > 0:
                raise ValueError("boxes: the other inputs are batches (lists); give one list of box dicts per sample")
        else:
            kinds["boxes"] = nested
    if len(set(kinds.values())) > 1:
        raise ValueError(f"FourMProcessor: some inputs are batches (lists) and some single samples: {kinds}")
    return next(iter(kinds.values()), False)


__all__ = ["IMAGE_PROCESSOR_OUTPUTS", "KIND_ARGUMENTS", "crop_own_maps", "is_batch", "map_arguments", "map_keys",
           "take_generator", "tensor_type"]
