"""The modality registry: what each 4M modality is and how it becomes tokens.

A modality is one of three kinds:

* ``"image_tokens"``: a dense map (RGB, depth, normals, segmentation, feature map) turned into a
  grid of discrete codes by a VQ-VAE; ``(image_size // patch_size) ** 2`` tokens per sample,
  2D sin-cos positions, decoded bidirectionally (MaskGIT / random order).
* ``"pixels"``: raw RGB pixels that enter the encoder as linear patch embeddings (input only).
* ``"sequence"``: text (captions, boxes serialised as text) tokenised by the WordPiece tokenizer;
  1D sin-cos positions, decoded causally.

The 4M-7 set ships registered. Users add their own without editing the package::

    from fourm_hf import ModalitySpec, register_modality
    register_modality(ModalitySpec(name="tok_edges", kind="image_tokens", vocab_size=1024,
                                   num_channels=1, tokenizer="vqvae"))

A model's config stores the resolved specs of its modalities, so a saved checkpoint loads in a
process where a custom modality was never registered.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

MODALITY_KINDS = ("image_tokens", "pixels", "sequence")


@dataclass(frozen=True)
class ModalitySpec:
    """Static description of one modality.

    Args:
        name: unique name, used as module key and in token dicts (no ``.`` allowed).
        kind: one of ``"image_tokens"``, ``"pixels"``, ``"sequence"``.
        vocab_size: number of token ids (``None`` for pixels).
        num_channels: channels of the dense map the VQ-VAE (or the patch embedding) reads; for a
            segmentation map this is the number of classes.
        max_length: maximum tokens per sample for sequences (size of the 1D position table).
        tokenizer: which tokenizer encodes it: ``"vqvae"``, ``"text"`` or ``None`` (pixels).
        target: the dense map this modality tokenises (``"depth"`` for ``tok_depth``), used by the
            processor to route raw inputs.
    """

    name: str
    kind: str
    vocab_size: int | None = None
    num_channels: int | None = None
    max_length: int | None = None
    tokenizer: str | None = None
    target: str | None = None

    def __post_init__(self):
        if not self.name or "." in self.name:
            raise ValueError(f"Modality name must be a non-empty string without '.', got {self.name!r}.")
        if self.kind not in MODALITY_KINDS:
            raise ValueError(f"Modality {self.name!r}: kind must be one of {MODALITY_KINDS}, got {self.kind!r}.")
        if self.kind != "pixels" and (self.vocab_size is None or self.vocab_size < 2):
            raise ValueError(f"Modality {self.name!r}: a {self.kind} modality needs vocab_size >= 2, got {self.vocab_size}.")
        if self.kind == "sequence" and (self.max_length is None or self.max_length < 1):
            raise ValueError(f"Modality {self.name!r}: a sequence modality needs max_length >= 1, got {self.max_length}.")
        if self.kind == "pixels" and (self.num_channels is None or self.num_channels < 1):
            raise ValueError(f"Modality {self.name!r}: a pixels modality needs num_channels >= 1, got {self.num_channels}.")

    @property
    def is_image(self) -> bool:
        """True for modalities laid out on the 2D patch grid (image tokens and pixels)."""
        return self.kind in ("image_tokens", "pixels")

    @property
    def is_sequence(self) -> bool:
        return self.kind == "sequence"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "ModalitySpec":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"Unknown ModalitySpec fields {sorted(unknown)}; expected a subset of {sorted(known)}.")
        return cls(**data)

    def replace(self, **changes) -> "ModalitySpec":
        return dataclasses.replace(self, **changes)


# Vocabulary sizes of the 4M-7 tokenizers (paper, Table 8 / reference registry).
FOURM7_MODALITIES = (
    ModalitySpec("rgb", "pixels", num_channels=3, tokenizer=None, target="rgb"),
    ModalitySpec("tok_rgb", "image_tokens", vocab_size=16384, num_channels=3, tokenizer="vqvae", target="rgb"),
    ModalitySpec("tok_depth", "image_tokens", vocab_size=8192, num_channels=1, tokenizer="vqvae", target="depth"),
    ModalitySpec("tok_normal", "image_tokens", vocab_size=8192, num_channels=3, tokenizer="vqvae", target="normal"),
    ModalitySpec("tok_semseg", "image_tokens", vocab_size=4096, num_channels=133, tokenizer="vqvae", target="semseg"),
    ModalitySpec("tok_clip", "image_tokens", vocab_size=8192, num_channels=768, tokenizer="vqvae", target="clip"),
    ModalitySpec("caption", "sequence", vocab_size=30000, max_length=256, tokenizer="text", target="caption"),
    ModalitySpec("det", "sequence", vocab_size=30000, max_length=256, tokenizer="text", target="det"),
)

_REGISTRY: dict[str, ModalitySpec] = {spec.name: spec for spec in FOURM7_MODALITIES}


def register_modality(spec: ModalitySpec, *, exist_ok: bool = False) -> ModalitySpec:
    """Add a modality to the registry. Re-registering an identical spec is a no-op."""
    if not isinstance(spec, ModalitySpec):
        raise TypeError(f"register_modality expects a ModalitySpec, got {type(spec).__name__}.")
    existing = _REGISTRY.get(spec.name)
    if existing is not None and existing != spec and not exist_ok:
        raise ValueError(
            f"Modality {spec.name!r} is already registered as {existing}; pass exist_ok=True to replace it."
        )
    _REGISTRY[spec.name] = spec
    return spec


def get_modality(name: str) -> ModalitySpec:
    """Look up a registered modality by name."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"Unknown modality {name!r}; registered modalities are {sorted(_REGISTRY)}.") from None


def registered_modalities() -> list[str]:
    return sorted(_REGISTRY)
