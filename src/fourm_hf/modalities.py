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
    register_modality(ModalitySpec(name="tok_albedo", kind="image_tokens", vocab_size=1024, num_channels=3,
                                   tokenizer="vqvae", target="albedo", public_name="albedo",
                                   processor_argument="maps"))

This module is the one table of modality names: every other list of modality names in the package (the
pipeline's friendly names and processor arguments, the processor's routing of its arguments, the default
order of the pipeline's targets) is derived from these specs. ``public_name`` is what a user writes
(``"depth"`` for ``tok_depth``; the pixels ``rgb`` and the tokens ``tok_rgb`` share ``"rgb"``) and
``processor_argument`` the ``FourMProcessor`` keyword that takes the raw input. Registration is global to
the process: :func:`temporary_modalities` (a context manager) registers specs for a block and restores the table
after it, and :func:`unregister_modality` removes one.

A model's config stores the resolved specs of its modalities, so a saved checkpoint loads in a
process where a custom modality was never registered.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass

MODALITY_KINDS = ("image_tokens", "pixels", "sequence", "sequence_embedding")
CONTINUOUS_KINDS = ("pixels", "sequence_embedding")
# The keywords of FourMProcessor.__call__ a modality's raw input can go to. The last three take a dict
# {modality name: value} (several modalities share them); the others take the value itself.
PROCESSOR_ARGUMENTS = ("images", "depth", "normal", "semseg", "text", "boxes", "metadata", "color_palette",
                       "human_poses", "sam_instance", "vectors", "edges", "maps")
KEYED_PROCESSOR_ARGUMENTS = ("vectors", "edges", "maps")


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
        public_name: the name a user writes in the pipeline (``"depth"`` for ``tok_depth``); the
            pixels and the tokens of one image share it (``rgb`` / ``tok_rgb`` are both ``"rgb"``).
            ``None`` = ``name``.
        processor_argument: the ``FourMProcessor`` keyword that takes this modality's raw input (one
            of ``PROCESSOR_ARGUMENTS``: ``"images"``, ``"depth"``, ``"text"``, ..., or the keyed
            ``"vectors"`` / ``"edges"`` / ``"maps"``, which take ``{modality name: value}``); ``None``
            when the processor reads no input for it (a feature map computed from the image, or a
            modality that is only an output).
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
    public_name: str | None = None
    processor_argument: str | None = None

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name or "." in self.name:
            raise ValueError(f"Modality name must be a non-empty string without '.', got {self.name!r}.")
        if self.public_name is None:
            object.__setattr__(self, "public_name", self.name)  # frozen: set once, here
        if not isinstance(self.public_name, str) or not self.public_name or "." in self.public_name:
            raise ValueError(f"Modality {self.name!r}: public_name must be a non-empty string without '.', "
                             f"got {self.public_name!r}.")
        if self.processor_argument is not None and self.processor_argument not in PROCESSOR_ARGUMENTS:
            raise ValueError(f"Modality {self.name!r}: processor_argument must be one of {PROCESSOR_ARGUMENTS} or None, "
                             f"got {self.processor_argument!r}.")
        if self.processor_argument is not None and self.kind in CONTINUOUS_KINDS and self.kind != "pixels":
            raise ValueError(f"Modality {self.name!r}: a {self.kind} modality is not read by the processor; "
                             f"processor_argument must be None, got {self.processor_argument!r}.")
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


# Vocabulary sizes of the 4M-7 tokenizers (paper, Table 8 / reference registry). The order of the registry is
# the pipeline's default target order (geometry first, then the RGB image, then text: each finished target
# is an input of the next).
FOURM7_MODALITIES = (
    ModalitySpec("rgb", "pixels", num_channels=3, tokenizer=None, target="rgb", processor_argument="images"),
    ModalitySpec("tok_depth", "image_tokens", vocab_size=8192, num_channels=1, tokenizer="vqvae", target="depth",
                 public_name="depth", processor_argument="depth"),
    ModalitySpec("tok_normal", "image_tokens", vocab_size=8192, num_channels=3, tokenizer="vqvae", target="normal",
                 public_name="normal", processor_argument="normal"),
    ModalitySpec("tok_semseg", "image_tokens", vocab_size=4096, num_channels=133, tokenizer="vqvae", target="semseg",
                 public_name="semseg", processor_argument="semseg"),
    ModalitySpec("tok_rgb", "image_tokens", vocab_size=16384, num_channels=3, tokenizer="vqvae", target="rgb",
                 public_name="rgb", processor_argument="images"),
    ModalitySpec("caption", "sequence", vocab_size=30000, max_length=256, tokenizer="text", target="caption",
                 processor_argument="text"),
    ModalitySpec("det", "sequence", vocab_size=30000, max_length=256, tokenizer="text", target="det",
                 processor_argument="boxes"),
    # computed from the image by a feature network (processor_argument None: no input of its own)
    ModalitySpec("tok_clip", "image_tokens", vocab_size=8192, num_channels=768, tokenizer="vqvae", target="clip",
                 public_name="clip"),
)


def _text(name: str, max_length: int, **extra) -> ModalitySpec:
    return ModalitySpec(name, "sequence", vocab_size=30000, max_length=max_length, tokenizer="text", target=name,
                        processor_argument=name, **extra)


# The modalities 4M-21 adds (reference registry; vocabularies of the released tokenizers). Text-serialised
# ones share the WordPiece vocabulary and differ by length. The DINOv2/ImageBind feature maps are cut
# with patch 14 (16x16 grid at 224 px); their global embeddings are 16 tokens with learned positions.
FOURM21_MODALITIES = (
    _text("human_poses", 275, decoder_max_length=263),
    _text("sam_instance", 290),
    _text("color_palette", 23),
    _text("metadata", 40),
    ModalitySpec("t5_caption", "sequence_embedding", num_channels=4096, max_length=77),
    ModalitySpec("tok_dinov2", "image_tokens", vocab_size=8192, num_channels=768, tokenizer="vqvae", target="dinov2",
                 patch_size=14, public_name="dinov2"),
    ModalitySpec("tok_imagebind", "image_tokens", vocab_size=8192, num_channels=1280, tokenizer="vqvae",
                 target="imagebind", patch_size=14, public_name="imagebind"),
    ModalitySpec("tok_dinov2_global", "image_tokens", vocab_size=8192, num_channels=768, tokenizer="vqvae",
                 target="dinov2_global", image_size=224, patch_size=56, learned_positions=True,
                 public_name="dinov2_global", processor_argument="vectors"),
    ModalitySpec("tok_imagebind_global", "image_tokens", vocab_size=8192, num_channels=1024, tokenizer="vqvae",
                 target="imagebind_global", image_size=224, patch_size=56, learned_positions=True,
                 public_name="imagebind_global", processor_argument="vectors"),
    ModalitySpec("tok_sam_edge", "image_tokens", vocab_size=8192, num_channels=1, tokenizer="vqvae", target="sam_edge",
                 public_name="sam_edge", processor_argument="edges"),
    ModalitySpec("tok_canny_edge", "image_tokens", vocab_size=8192, num_channels=1, tokenizer="vqvae",
                 target="canny_edge", public_name="canny_edge", processor_argument="edges"),
)


def at_resolution(spec: ModalitySpec, image_size: int) -> ModalitySpec:
    """The same image modality at another resolution, named ``<name>@<image_size>`` (``tok_rgb@448``, public
    name ``rgb@448``). The processor crops at one size, so it reads no input for it (``processor_argument`` None)."""
    if not spec.is_image:
        raise ValueError(f"Modality {spec.name!r} is a {spec.kind} modality and has no resolution.")
    return spec.replace(name=f"{spec.name}@{image_size}", public_name=f"{spec.public_name}@{image_size}",
                        image_size=image_size, processor_argument=None)


# The 448 px domains of the 4M-7 super-resolution model, next to the 224 px ones.
SUPER_RESOLUTION_MODALITIES = tuple(
    at_resolution(spec, 448) for spec in FOURM7_MODALITIES if spec.is_image
)

_REGISTRY: dict[str, ModalitySpec] = {
    spec.name: spec for spec in FOURM7_MODALITIES + FOURM21_MODALITIES + SUPER_RESOLUTION_MODALITIES
}


def register_modality(spec: ModalitySpec, *, exist_ok: bool = False) -> ModalitySpec:
    """Add a modality to the registry. Re-registering an identical spec is a no-op.

    Its ``public_name`` must not name another modality of another image (the pixels and the tokens of one
    image, ``rgb`` / ``tok_rgb``, share theirs): a name must mean one thing in the pipeline.
    """
    if not isinstance(spec, ModalitySpec):
        raise TypeError(f"register_modality expects a ModalitySpec, got {type(spec).__name__}.")
    existing = _REGISTRY.get(spec.name)
    if existing is not None and existing != spec and not exist_ok:
        raise ValueError(
            f"Modality {spec.name!r} is already registered as {existing}; pass exist_ok=True to replace it."
        )
    for other in _REGISTRY.values():
        same_public = other.public_name == spec.public_name or other.name == spec.public_name
        if other.name != spec.name and same_public and not _same_image(other, spec):
            raise ValueError(f"Modality {spec.name!r}: public_name {spec.public_name!r} already names the "
                             f"registered modality {other.name!r}; choose another public_name.")
    _REGISTRY[spec.name] = spec
    return spec


def _same_image(first: ModalitySpec, second: ModalitySpec) -> bool:
    """The pixels and the tokens of one image (``rgb`` / ``tok_rgb``) may share a public name."""
    return {first.kind, second.kind} == {"pixels", "image_tokens"} and first.target == second.target


def unregister_modality(name: str) -> ModalitySpec:
    """Remove a registered modality (returns its spec); unknown names are a ValueError."""
    spec = get_modality(name)
    del _REGISTRY[name]
    return spec


@contextlib.contextmanager
def temporary_modalities(*specs: ModalitySpec) -> Iterator[tuple[ModalitySpec, ...]]:
    """Register ``specs`` for the ``with`` block, then restore the registry exactly as it was::

        with temporary_modalities(ModalitySpec("tok_albedo", "image_tokens", vocab_size=256, ...)):
            ...
    """
    saved = dict(_REGISTRY)
    try:
        yield tuple(register_modality(spec) for spec in specs)
    finally:
        _REGISTRY.clear()
        _REGISTRY.update(saved)


def get_modality(name: str) -> ModalitySpec:
    """Look up a registered modality by name."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"Unknown modality {name!r}; registered modalities are {sorted(_REGISTRY)}.") from None


def registered_modalities() -> list[str]:
    """The names of every registered modality, sorted."""
    return sorted(_REGISTRY)


def registry_order() -> list[str]:
    """Every registered modality name in registration order (the pipeline's default target order)."""
    return list(_REGISTRY)


def modalities_for_argument(argument: str) -> list[ModalitySpec]:
    """The registered modalities whose raw input goes to the processor keyword ``argument``, in order."""
    return [spec for spec in _REGISTRY.values() if spec.processor_argument == argument]


def token_modality(public_name: str) -> str:
    """The registered token modality (not the pixels) a public name stands for: ``"depth"`` -> ``"tok_depth"``."""
    for spec in _REGISTRY.values():
        if spec.public_name == public_name and not spec.is_continuous:
            return spec.name
    publics = sorted({spec.public_name for spec in _REGISTRY.values() if not spec.is_continuous})
    raise ValueError(f"Unknown modality {public_name!r}; registered public names are {publics}.")

