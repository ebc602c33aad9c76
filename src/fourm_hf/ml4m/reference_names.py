"""Names of the reference implementation's domains and how they map onto registered modalities.

The reference names a domain with its resolution (``tok_rgb@224``); the registry names a modality
at the model's own resolution without it (``tok_rgb``) and one at another resolution with it
(``tok_rgb@448``, the super-resolution domains), so 224 and 448 px domains stay distinct.
"""

from __future__ import annotations

import re

from ..modalities import ModalitySpec, at_resolution, get_modality, registered_modalities

_DOMAIN_PATTERN = re.compile(r"(?P<base>[^@]+)@(?P<size>\d+)")


def reference_domain_to_modality(domain: str, image_size: int = 224) -> str:
    """``"tok_rgb@224"`` -> ``"tok_rgb"`` at a 224 px model; ``"tok_rgb@448"`` -> ``"tok_rgb@448"``."""
    match = _DOMAIN_PATTERN.fullmatch(domain)
    if match and int(match["size"]) == image_size:
        return match["base"]
    return domain


def modality_spec_for_domain(domain: str, image_size: int) -> ModalitySpec:
    """The registered spec of a reference domain (at ``image_size`` px models), checked for its resolution.

    ``X@R`` at another resolution than the model's is the registered ``X@R``, or else ``X`` moved to
    ``R`` px. An unknown domain is refused with how to register it.
    """
    name = reference_domain_to_modality(domain, image_size)
    match = _DOMAIN_PATTERN.fullmatch(domain)
    try:
        spec = get_modality(name)
    except ValueError:
        spec = _spec_at_other_resolution(match) if match and name == domain else None
    if spec is None:
        raise ValueError(
            f"Reference domain {domain!r} is not a registered modality. Register it before converting, e.g. "
            f"fourm_hf.register_modality(fourm_hf.ModalitySpec(name={name!r}, kind='image_tokens' | 'sequence' | "
            f"'pixels' | 'sequence_embedding', vocab_size=..., ...)); registered: {registered_modalities()}."
        )
    if match and spec.is_image and (spec.image_size or image_size) != int(match["size"]):
        raise ValueError(
            f"Reference domain {domain!r} is at {match['size']} px but the registered modality {name!r} is at "
            f"{spec.image_size or image_size} px."
        )
    return spec


def _spec_at_other_resolution(match: re.Match) -> ModalitySpec | None:
    try:
        base = get_modality(match["base"])
    except ValueError:
        return None
    return at_resolution(base, int(match["size"])) if base.is_image else None
