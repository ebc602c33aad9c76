"""The modality registry: what each 4M modality is and how it becomes tokens.

A modality is one of four kinds:

* ``"image_tokens"``: a dense map (RGB, depth, normals, segmentation, feature map) turned into a
  grid of discrete codes by a VQ-VAE; ``(image_size // patch_size) ** 2`` tokens per sample,
  2D sin-cos positions, decoded bidirectionally (MaskGIT / random order).
* ``"pixels"``: raw RGB pixels that enter the encoder as linear patch embeddings (input only).
* ``"sequence"``: text (captions, boxes serialised as text) tokenised by the WordPiece tokenizer;
  1D sin-cos positions, decoded causally.
* ``"sequence_embedding"``: a continuous sequence of vectors (the T5-XXL caption embeddings of
  4M-21), linearly projected to the model width with a bias; 1D sin-cos positions; input only.

Per-modality geometry is part of the spec, not of the model: an image modality may have its own
``image_size`` / ``patch_size`` (DINOv2 features: patch 14 -> a 16x16 grid at 224 px; the
super-resolution domains at 448 px -> 28x28), and learned instead of sin-cos positions (the 16
tokens of a global embedding). A sequence's decoder positions restart at 0 from
``decoder_max_length`` on, as the reference's position tables do.

The 4M-7 set, the 4M-21 set and the 448 px super-resolution domains (``tok_rgb@448``: a name
with ``@<size>`` is the same modality at another resolution) ship registered. Users add their own without editing the package::

    from fourm_hf import ModalitySpec, register_modality
    register_modality(ModalitySpec(name="tok_edges", kind="image_tokens", vocab_size=1024,
                                   num_channels=1, tokenizer="vqvae"))

A model's config stores the resolved specs of its modalities, so a saved checkpoint loads in a
process where a custom modality was never registered.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

MODALITY_KINDS = ("image_tokens", "pixels", "sequence", "sequence_embedding")
CONTINUOUS_KINDS = ("pixels", "sequence_embedding")


@dataclass(frozen=True)
class ModalitySpec:
    """Static description of one modality.

    Args:
        name: unique name, used as module key and in token dicts (no ``.`` allowed).
        kind: one of ``"image_tokens"``, ``"pixels"``, ``"sequence"``, ``"sequence_embedding"``.
        vocab_size: number of token ids (``None`` for the continuous kinds).
        num_channels: channels of the dense map the VQ-VAE (or the patch embedding) reads; for a
            segmentation map this is the number of classes; for a sequence embedding the width of
            each vector (4096 for T5-XXL).
        max_length: maximum tokens per sample for sequences (size of the 1D position table).
        tokenizer: which tokenizer encodes it: ``"vqvae"``, ``"text"`` or ``None`` (pixels).
        target: the dense map this modality tokenises (``"depth"`` for ``tok_depth``), used by the
            processor to route raw inputs.
        image_size / patch_size: geometry of an image modality; ``None`` = the model's. The
            modality has ``(image_size // patch_size) ** 2`` tokens on a square grid.
        learned_positions: the position embedding is a learned table instead of fixed sin-cos.
        decoder_max_length: sequences only; decoder positions >= this restart at 0 (the
            reference's position-table length, 263 for human poses of up to 275 tokens).
            ``None`` = ``max_length``.
    """

    name: str
    kind: str
    vocab_size: int | None = None
    num_channels: int | None = None
    max_length: int | None = None
    tokenizer: str | None = None
    target: str | None = None
    image_size: int | None = None
    patch_size: int | None = None
    learned_positions: bool = False
    decoder_max_length: int | None = None

    def __post_init__(self):
        if not self.name or "." in self.name:
            raise ValueError(f"Modality name must be a non-empty string without '.', got {self.name!r}.")
        if self.kind not in MODALITY_KINDS:
            raise ValueError(f"Modality {self.name!r}: kind must be one of {MODALITY_KINDS}, got {self.kind!r}.")
        if self.kind not in CONTINUOUS_KINDS and (self.vocab_size is None or self.vocab_size < 2):
            raise ValueError(f"Modality {self.name!r}: a {self.kind} modality needs vocab_size >= 2, got {self.vocab_size}.")
        if self.has_1d_positions and (self.max_length is None or self.max_length < 1):
            raise ValueError(f"Modality {self.name!r}: a {self.kind} modality needs max_length >= 1, got {self.max_length}.")
        if self.kind in CONTINUOUS_KINDS and (self.num_channels is None or self.num_channels < 1):
            raise ValueError(f"Modality {self.name!r}: a {self.kind} modality needs num_channels >= 1, got {self.num_channels}.")
        for field in ("image_size", "patch_size"):
            value = getattr(self, field)
            if value is not None and (not self.is_image or value < 1):
                raise ValueError(f"Modality {self.name!r}: {field} is for image modalities and must be >= 1, got {value}.")
        if self.decoder_max_length is not None and (self.kind != "sequence" or not 1 <= self.decoder_max_length <= self.max_length):
            raise ValueError(
                f"Modality {self.name!r}: decoder_max_length is for sequences and must lie in [1, max_length], "
                f"got {self.decoder_max_length}."
            )

    @property
    def is_image(self) -> bool:
        """True for modalities laid out on the 2D patch grid (image tokens and pixels)."""
        return self.kind in ("image_tokens", "pixels")

    @property
    def is_sequence(self) -> bool:
        """True for text sequences (discrete, decoded causally)."""
        return self.kind == "sequence"

    @property
    def is_continuous(self) -> bool:
        """True for input-only modalities read as vectors (pixels, sequence embeddings)."""
        return self.kind in CONTINUOUS_KINDS

    @property
    def has_1d_positions(self) -> bool:
        """True for modalities positioned along a 1D sequence (text and sequence embeddings)."""
        return self.kind in ("sequence", "sequence_embedding")

    @property
    def decoder_position_limit(self) -> int | None:
        """Sequences: decoder positions at or beyond this restart at 0."""
        return self.decoder_max_length or self.max_length

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


def _text(name: str, max_length: int, **extra) -> ModalitySpec:
    return ModalitySpec(name, "sequence", vocab_size=30000, max_length=max_length, tokenizer="text", target=name, **extra)


# The modalities 4M-21 adds (reference registry; vocabularies of the released tokenizers). Text-serialised
# ones share the WordPiece vocabulary and differ by length. The DINOv2/ImageBind feature maps are cut
# with patch 14 (16x16 grid at 224 px); their global embeddings are 16 tokens with learned positions.
FOURM21_MODALITIES = (
    ModalitySpec("t5_caption", "sequence_embedding", num_channels=4096, max_length=77),
    _text("metadata", 40),
    _text("human_poses", 275, decoder_max_length=263),
    _text("color_palette", 23),
    _text("sam_instance", 290),
    ModalitySpec("tok_sam_edge", "image_tokens", vocab_size=8192, num_channels=1, tokenizer="vqvae", target="sam_edge"),
    ModalitySpec("tok_canny_edge", "image_tokens", vocab_size=8192, num_channels=1, tokenizer="vqvae", target="canny_edge"),
    ModalitySpec("tok_dinov2", "image_tokens", vocab_size=8192, num_channels=768, tokenizer="vqvae", target="dinov2",
                 patch_size=14),
    ModalitySpec("tok_imagebind", "image_tokens", vocab_size=8192, num_channels=1280, tokenizer="vqvae",
                 target="imagebind", patch_size=14),
    ModalitySpec("tok_dinov2_global", "image_tokens", vocab_size=8192, num_channels=768, tokenizer="vqvae",
                 target="dinov2_global", image_size=224, patch_size=56, learned_positions=True),
    ModalitySpec("tok_imagebind_global", "image_tokens", vocab_size=8192, num_channels=1024, tokenizer="vqvae",
                 target="imagebind_global", image_size=224, patch_size=56, learned_positions=True),
)


def at_resolution(spec: ModalitySpec, image_size: int) -> ModalitySpec:
    """The same image modality at another resolution, named ``<name>@<image_size>`` (``tok_rgb@448``)."""
    if not spec.is_image:
        raise ValueError(f"Modality {spec.name!r} is a {spec.kind} modality and has no resolution.")
    return spec.replace(name=f"{spec.name}@{image_size}", image_size=image_size)


# The 448 px domains of the 4M-7 super-resolution model, next to the 224 px ones.
SUPER_RESOLUTION_MODALITIES = tuple(
    at_resolution(spec, 448) for spec in FOURM7_MODALITIES if spec.is_image
)

_REGISTRY: dict[str, ModalitySpec] = {
    spec.name: spec for spec in FOURM7_MODALITIES + FOURM21_MODALITIES + SUPER_RESOLUTION_MODALITIES
}


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
