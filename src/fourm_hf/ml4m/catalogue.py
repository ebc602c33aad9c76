"""The released 4M models and what each needs to run: tokenizers, feature models, text tokenizer, T5 encoder.

A released trunk repo (``EPFL-VILAB/4M-21_XL``) holds only ``config.json`` and ``model.safetensors``. To run
it, ``FourMProcessor.from_pretrained("EPFL-VILAB/4M-21_XL")`` looks the repo up here and builds its processor
from the tokenizer repos listed per modality (downloaded one by one, when a call first needs them).

The repo ids are the ones the reference publishes (``apple/ml-4m`` README: model and tokenizer tables). The
entries below that the reference's README does not state are marked ``# unverified`` and listed in
``docs/loading-by-name.md``.

Tests and users add entries with :func:`register_released_model` (a fixture trunk uploaded to a test Hub, a
fine-tuned copy of a released model under another name) and remove them with
:func:`unregister_released_model`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType

# ---- the released tokenizers (EPFL-VILAB/4M_tokenizers_<modality>_<codebook>_<resolutions>) --------------
TOKENIZER_RGB = "EPFL-VILAB/4M_tokenizers_rgb_16k_224-448"
TOKENIZER_DEPTH = "EPFL-VILAB/4M_tokenizers_depth_8k_224-448"
TOKENIZER_NORMAL = "EPFL-VILAB/4M_tokenizers_normal_8k_224-448"
TOKENIZER_SEMSEG = "EPFL-VILAB/4M_tokenizers_semseg_4k_224-448"
TOKENIZER_CLIP = "EPFL-VILAB/4M_tokenizers_CLIP-B16_8k_224-448"
TOKENIZER_EDGE = "EPFL-VILAB/4M_tokenizers_edge_8k_224-512"  # serves tok_sam_edge and tok_canny_edge
TOKENIZER_DINOV2 = "EPFL-VILAB/4M_tokenizers_DINOv2-B14_8k_224-448"
TOKENIZER_DINOV2_GLOBAL = "EPFL-VILAB/4M_tokenizers_DINOv2-B14-global_8k_16_224"
TOKENIZER_IMAGEBIND = "EPFL-VILAB/4M_tokenizers_ImageBind-H14_8k_224-448"
TOKENIZER_IMAGEBIND_GLOBAL = "EPFL-VILAB/4M_tokenizers_ImageBind-H14-global_8k_16_224"
TOKENIZER_SAM_INSTANCE = "EPFL-VILAB/4M_tokenizers_sam-instance_1k_64"
TOKENIZER_HUMAN_POSES = "EPFL-VILAB/4M_tokenizers_human-poses_1k_8"

# The vision models whose features the feature tokenizers read (transformers repos). ImageBind has none in
# transformers: its tokenizers are decode-only.
FEATURE_MODEL_CLIP = "openai/clip-vit-base-patch16"  # CLIP-B/16
FEATURE_MODEL_DINOV2 = "facebook/dinov2-base"  # DINOv2-B/14

# The reference's WordPiece vocabulary is not on the Hub: it is a file of the reference's code repository.
TEXT_TOKENIZER_FILE = "text_tokenizer_4m_wordpiece_30k.json"
TEXT_TOKENIZER_URL = ("https://raw.githubusercontent.com/apple/ml-4m/main/fourm/utils/tokenizer/trained/"
                      + TEXT_TOKENIZER_FILE)
# SHA-256 of the vocabulary (``vocabulary_fingerprint``: token -> id, sorted JSON) of that file, so that a
# different vocabulary of the same size is refused, never used silently.
TEXT_TOKENIZER_FINGERPRINT = "e18bbce10014018bae5d41cc55981d1027cc7cb2b53f6929fd0be74bfb949271"
T5_ENCODER_4M21 = "google/t5-v1_1-xxl"  # unverified: the T5-XXL encoder of 4M-21's t5_caption
SEMSEG_CLASSES = 133  # unverified: COCO panoptic classes of the semseg tokenizer (checked when it loads)

TOKENIZERS_4M7 = MappingProxyType({"tok_rgb": TOKENIZER_RGB, "tok_depth": TOKENIZER_DEPTH, "tok_normal": TOKENIZER_NORMAL,
                                   "tok_semseg": TOKENIZER_SEMSEG, "tok_clip": TOKENIZER_CLIP})
TOKENIZERS_4M21 = MappingProxyType({
    **TOKENIZERS_4M7, "tok_sam_edge": TOKENIZER_EDGE, "tok_canny_edge": TOKENIZER_EDGE, "tok_dinov2": TOKENIZER_DINOV2,
    "tok_dinov2_global": TOKENIZER_DINOV2_GLOBAL, "tok_imagebind": TOKENIZER_IMAGEBIND,
    "tok_imagebind_global": TOKENIZER_IMAGEBIND_GLOBAL, "sam_instance": TOKENIZER_SAM_INSTANCE,
    "human_poses": TOKENIZER_HUMAN_POSES})
FEATURE_MODELS_4M7 = MappingProxyType({"tok_clip": FEATURE_MODEL_CLIP})
FEATURE_MODELS_4M21 = MappingProxyType({"tok_clip": FEATURE_MODEL_CLIP, "tok_dinov2": FEATURE_MODEL_DINOV2})


@dataclass(frozen=True)
class ReleasedModel:
    """One released trunk and what runs it.

    Args:
        repo_id: the trunk's Hub repo (``config.json`` + ``model.safetensors`` in the reference's layout).
        family: ``"4M-7"``, ``"4M-7-T2I"``, ``"4M-7-SR"`` or ``"4M-21"`` (what the docs call it).
        tokenizers: ``{modality: tokenizer repo}``; ``sam_instance`` / ``human_poses`` name the tokenizers that
            turn those sequences' token ids into masks and rotations.
        feature_models: ``{feature modality: transformers vision model repo}`` computing a feature tokenizer's
            input from the image (used with ``feature_models=True``; otherwise feature maps are outputs only).
        text_tokenizer: the file name of the WordPiece vocabulary (see ``released_processor.resolve_text_tokenizer``),
            or a local path to it (test entries).
        text_fingerprint: ``vocabulary_fingerprint`` the text tokenizer must have; None checks only its size.
        t5_encoder: the T5 encoder (a ``T5EncoderModel`` repo or folder) computing ``t5_caption``; None if the
            model has no ``t5_caption`` input.
        semseg_classes: the class count of the semseg tokenizer (the image processor needs it before the
            tokenizer is downloaded; checked when it is).
    """

    repo_id: str
    family: str
    tokenizers: MappingProxyType = field(default_factory=lambda: MappingProxyType({}))
    feature_models: MappingProxyType = field(default_factory=lambda: MappingProxyType({}))
    text_tokenizer: str = TEXT_TOKENIZER_FILE
    text_fingerprint: str | None = TEXT_TOKENIZER_FINGERPRINT
    t5_encoder: str | None = None
    semseg_classes: int | None = SEMSEG_CLASSES

    def __post_init__(self):
        if not isinstance(self.repo_id, str) or self.repo_id.count("/") != 1:
            raise ValueError(f"ReleasedModel: repo_id must be 'namespace/name', got {self.repo_id!r}.")
        for name in ("tokenizers", "feature_models"):
            object.__setattr__(self, name, MappingProxyType(dict(getattr(self, name))))
        unused = sorted(set(self.feature_models) - set(self.tokenizers))
        if unused:
            raise ValueError(f"ReleasedModel({self.repo_id!r}): feature models for {unused}, which have no tokenizer.")


def _released_4m7(name: str, family: str = "4M-7") -> ReleasedModel:
    return ReleasedModel(f"EPFL-VILAB/{name}", family, TOKENIZERS_4M7, FEATURE_MODELS_4M7)


def _released_4m21(name: str) -> ReleasedModel:
    return ReleasedModel(f"EPFL-VILAB/{name}", "4M-21", TOKENIZERS_4M21, FEATURE_MODELS_4M21, t5_encoder=T5_ENCODER_4M21)


_BUILT_IN = [
    *(_released_4m7(f"4M-7_{size}_{data}") for size in ("B", "L", "XL") for data in ("CC12M", "COYO700M")),
    *(_released_4m7(f"4M-7-T2I_{size}_CC12M", "4M-7-T2I") for size in ("B", "L", "XL")),
    _released_4m7("4M-7-SR_L_CC12M", "4M-7-SR"),
    *(_released_4m21(f"4M-21_{size}") for size in ("B", "L", "XL")),
]
_CATALOGUE: dict[str, ReleasedModel] = {entry.repo_id: entry for entry in _BUILT_IN}


def register_released_model(entry: ReleasedModel, exist_ok: bool = False) -> ReleasedModel:
    """Add ``entry`` to the catalogue (``exist_ok=True`` replaces an entry of the same repo id)."""
    if not isinstance(entry, ReleasedModel):
        raise TypeError(f"register_released_model: expected a ReleasedModel, got {type(entry).__name__}.")
    if entry.repo_id in _CATALOGUE and not exist_ok:
        raise ValueError(f"register_released_model: {entry.repo_id!r} is already in the catalogue; pass exist_ok=True "
                         "to replace it.")
    _CATALOGUE[entry.repo_id] = entry
    return entry


def unregister_released_model(repo_id: str) -> None:
    """Remove a registered entry (built-in entries too)."""
    if repo_id not in _CATALOGUE:
        raise ValueError(f"unregister_released_model: {repo_id!r} is not in the catalogue.")
    del _CATALOGUE[repo_id]


def released_model(repo_id: str) -> ReleasedModel | None:
    """The catalogue entry of a repo id, or None."""
    return _CATALOGUE.get(repo_id) if isinstance(repo_id, str) else None


def released_models() -> dict[str, ReleasedModel]:
    """Every catalogue entry by repo id (a copy)."""
    return dict(_CATALOGUE)


__all__ = ["ReleasedModel", "register_released_model", "released_model", "released_models", "unregister_released_model",
           "TEXT_TOKENIZER_FILE", "TEXT_TOKENIZER_URL"]
