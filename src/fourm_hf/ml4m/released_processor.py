"""``FourMProcessor.from_pretrained`` of a released 4M repo id: the processor assembled from the catalogue.

``FourMProcessor.from_pretrained("EPFL-VILAB/4M-21_XL")`` builds, from the catalogue entry of the repo
(``catalogue.py``) and the model's converted config (``released_loading.converted_folder``: converted once
and cached; the processor needs the model's vocabularies, which only the weights carry):

* the image processor at the model's resolution;
* the text tokenizer (:func:`resolve_text_tokenizer`, below);
* ``processor.t5_encoder``: the catalogue's T5 encoder for ``caption_encoding="t5"`` (downloaded on use);
* ``processor.sequence_tokenizers``: the pose and SAM-instance tokenizers that turn 4M-21's ``human_poses``
  / ``sam_instance`` outputs into rotations and masks (``processing/sequence_tokens.py``), downloaded on use;
* one :class:`~fourm_hf.tokenizers.lazy_released.LazyReleasedTokenizer` per image-token modality the
  processor can serve: nothing of a tokenizer repo is downloaded until a call encodes or decodes that
  modality. Feature tokenizers (CLIP, DINOv2, ImageBind) are decode-only unless ``feature_models=True``,
  which also computes them from input images with the vision models the catalogue names (downloaded then).

Keywords besides the Hub options (``revision``, ``cache_dir``, ``token``, ``local_files_only``,
``force_download``): ``text_tokenizer=`` (a path, or a ``FourMTextTokenizer``), ``feature_models=``,
``num_diffusion_steps=`` (DDIM steps of the DiVAE decoders, default 25), ``device=``.

The text tokenizer. The reference's WordPiece vocabulary is a file of the reference's code repository
(``apple/ml-4m``, Apache-2.0), not of any Hub repo, and this package does not ship a copy. It is taken from,
in this order: the ``text_tokenizer=`` argument; the ``FOURM_TEXT_TOKENIZER`` environment variable; the
entry's own path (test entries). Each may name the JSON file, a folder holding it, or a saved
``FourMTextTokenizer`` folder. None given is a :class:`TextTokenizerNotFoundError` that says where to get the
file. A tokenizer whose size is not the model's text vocabulary, or whose vocabulary differs from the
released one (:func:`vocabulary_fingerprint` against the catalogue's), is refused: never a silently
different vocabulary.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from ..configuration_fourm import FourMConfig
from ..processing.image_processing_fourm import FourMImageProcessor
from ..processing.processing_fourm import PRETRAINED_SOURCE_LOADERS
from ..processing.t5_captions import LazyT5CaptionEncoder
from ..processing.sequence_tokens import (POSE_IDS, SAM_GRID, SAM_MASK_SIZE, SEQUENCE_TOKENIZER_MODALITIES,
                                          SequenceTokenizers)
from ..text.tokenization_fourm import FourMTextTokenizer
from ..tokenizers.lazy_released import HUB_OPTIONS, LazyReleasedTokenizer
from ..tokenizers.released_modalities import KIND_TARGETS, VECTOR_KINDS, ModalityTokenizerConfig, modality_kind
from .catalogue import TEXT_TOKENIZER_FILE, TEXT_TOKENIZER_URL, ReleasedModel, released_model
from .released_loading import converted_folder
from .tokenizer_fit import check_text_tokenizer, why_not_servable

TEXT_TOKENIZER_ENV = "FOURM_TEXT_TOKENIZER"
PROCESSOR_OPTIONS = ("text_tokenizer", "feature_models", "num_diffusion_steps", "device")
_IGNORED = ("trust_remote_code", "_from_auto", "_from_pipeline", "dtype", "device_map", "use_fast", "code_revision")


class TextTokenizerNotFoundError(ValueError):
    """The released text tokenizer was asked for but not given (see the module docstring)."""


def vocabulary_fingerprint(tokenizer: FourMTextTokenizer) -> str:
    """SHA-256 of the vocabulary (token -> id as sorted JSON): equal exactly when the vocabularies are."""
    return hashlib.sha256(json.dumps(tokenizer.get_vocab(), sort_keys=True).encode("utf-8")).hexdigest()


def resolve_text_tokenizer(entry: ReleasedModel, text_tokenizer=None) -> FourMTextTokenizer:
    """The text tokenizer of a released model: the argument, else ``$FOURM_TEXT_TOKENIZER``, else the entry's path."""
    if isinstance(text_tokenizer, FourMTextTokenizer):
        return text_tokenizer
    for where, source in (("text_tokenizer=", text_tokenizer), (f"${TEXT_TOKENIZER_ENV}", os.environ.get(TEXT_TOKENIZER_ENV)),
                          (f"the catalogue entry of {entry.repo_id}", entry.text_tokenizer)):
        if source is None or source == "":
            continue
        path = Path(os.fspath(source)).expanduser()
        if not path.exists():
            if where.startswith("the catalogue"):
                continue  # a file name, not a path: nothing given yet
            raise TextTokenizerNotFoundError(f"{where} {source}: no such file or folder; expected the reference's "
                                             f"{TEXT_TOKENIZER_FILE} (from {TEXT_TOKENIZER_URL}) or a folder holding it.")
        return _read_text_tokenizer(path, where)
    raise TextTokenizerNotFoundError(
        f"{entry.repo_id} needs the reference's WordPiece vocabulary {TEXT_TOKENIZER_FILE}, which is not on the Hub. "
        f"Download it from {TEXT_TOKENIZER_URL} and pass text_tokenizer=PATH, or set {TEXT_TOKENIZER_ENV}=PATH "
        "(see docs/loading-by-name.md).")


def _read_text_tokenizer(path: Path, where: str) -> FourMTextTokenizer:
    if path.is_dir() and (path / TEXT_TOKENIZER_FILE).is_file():
        path = path / TEXT_TOKENIZER_FILE
    if path.is_file():
        try:
            return FourMTextTokenizer(tokenizer_file=str(path))
        except Exception as error:  # the tokenizers library's own parse errors
            raise ValueError(f"{where} {path}: not a tokenizers JSON file ({type(error).__name__}: {error}).") from None
    if (path / "tokenizer_config.json").is_file():
        return FourMTextTokenizer.from_pretrained(str(path))
    raise TextTokenizerNotFoundError(f"{where} {path}: the folder holds neither {TEXT_TOKENIZER_FILE} nor a saved "
                                     "FourMTextTokenizer (tokenizer_config.json).")


def check_released_text_tokenizer(entry: ReleasedModel, tokenizer: FourMTextTokenizer, config: FourMConfig) -> None:
    """The size of the model's text vocabulary, and the released vocabulary itself when the entry fixes it."""
    try:
        check_text_tokenizer(config, tokenizer)
    except ValueError as error:
        raise ValueError(f"text tokenizer of {entry.repo_id}: {str(error).removeprefix('--text-tokenizer: ')}") from None
    if entry.text_fingerprint is not None and vocabulary_fingerprint(tokenizer) != entry.text_fingerprint:
        raise ValueError(f"text tokenizer of {entry.repo_id}: it has {len(tokenizer)} ids but another vocabulary than "
                         f"the released {TEXT_TOKENIZER_FILE} (fingerprint {vocabulary_fingerprint(tokenizer)[:12]}..., "
                         f"expected {entry.text_fingerprint[:12]}...); the model would read other words than it learned.")


def lazy_tokenizers(entry: ReleasedModel, config: FourMConfig, feature_models: bool = False,
                    hub_options: dict | None = None, num_diffusion_steps: int = 25) -> dict[str, LazyReleasedTokenizer]:
    """One not-yet-downloaded tokenizer per catalogue modality the processor can serve for this model."""
    tokenizers = {}
    for modality, repo_id in entry.tokenizers.items():
        if modality not in config.modality_specs or why_not_servable(config, modality) is not None:
            continue  # not a modality of this model, or not an image-token grid at its resolution (sequences, @448)
        kind = modality_kind(modality)
        is_vector = kind in VECTOR_KINDS
        feature = entry.feature_models.get(modality) if feature_models else None
        expected = ModalityTokenizerConfig(
            modality=modality, input_kind=kind, target=KIND_TARGETS[kind], image_size=config.image_size,
            grid_size=1 if is_vector else config.modality_grid_size(modality),
            vocab_size=config.modality(modality).vocab_size,
            num_classes=entry.semseg_classes if kind == "semseg" else None, num_diffusion_steps=int(num_diffusion_steps),
            num_tokens=config.num_positions(modality) if is_vector else None,
            can_encode=not (kind == "feature" and feature is None))
        tokenizers[modality] = LazyReleasedTokenizer(repo_id, expected, feature, hub_options)
    return tokenizers


def sequence_tokenizers(entry: ReleasedModel, config: FourMConfig, hub_options: dict | None = None) -> SequenceTokenizers:
    """The not-yet-downloaded pose / SAM-instance tokenizers of the model's ``human_poses`` / ``sam_instance``
    outputs (their codebooks are not the model's: the ids travel inside the text, so no vocabulary is checked)."""
    found = SequenceTokenizers()
    for modality in SEQUENCE_TOKENIZER_MODALITIES:
        if modality in entry.tokenizers and modality in config.output_modalities:
            kind = modality_kind(modality)
            expected = ModalityTokenizerConfig(
                modality=modality, input_kind=kind, target=KIND_TARGETS[kind],
                image_size=1 if kind == "pose" else SAM_MASK_SIZE, grid_size=1 if kind == "pose" else SAM_GRID,
                vocab_size=None, num_tokens=POSE_IDS if kind == "pose" else None)
            found[modality] = LazyReleasedTokenizer(entry.tokenizers[modality], expected, None, hub_options)
    return found


def load_released_processor(processor_class, name, kwargs: dict):
    """The ``PRETRAINED_SOURCE_LOADERS`` entry of ``FourMProcessor.from_pretrained`` (None: not a catalogue id)."""
    entry = released_model(os.fspath(name)) if isinstance(name, (str, os.PathLike)) else None
    if entry is None:
        return None
    hub_options = {key: kwargs.pop(key) for key in HUB_OPTIONS if key in kwargs}
    options = {key: kwargs.pop(key) for key in PROCESSOR_OPTIONS if key in kwargs}
    unknown = sorted(key for key in kwargs if key not in _IGNORED)
    if unknown:
        raise ValueError(f"FourMProcessor.from_pretrained({entry.repo_id!r}): unknown options {unknown}; a released "
                         f"model's processor takes {list(PROCESSOR_OPTIONS)} and the Hub options {list(HUB_OPTIONS)}.")
    config = FourMConfig.from_pretrained(str(converted_folder(entry.repo_id, hub_options)))
    text = resolve_text_tokenizer(entry, options.get("text_tokenizer"))
    check_released_text_tokenizer(entry, text, config)
    tokenizer_hub_options = {key: value for key, value in hub_options.items() if key != "revision"}
    vqvaes = lazy_tokenizers(entry, config, bool(options.get("feature_models", False)), tokenizer_hub_options,
                             options.get("num_diffusion_steps", 25))
    image_options = {"image_size": config.image_size}
    if entry.semseg_classes is not None:
        image_options["num_semseg_classes"] = entry.semseg_classes
    max_text_length = config.modality("caption").max_length if "caption" in config.modality_specs else 256
    processor = processor_class(FourMImageProcessor(**image_options), text, vqvaes=vqvaes, max_text_length=max_text_length)
    processor.sequence_tokenizers = sequence_tokenizers(entry, config, tokenizer_hub_options)
    if entry.t5_encoder is not None and "t5_caption" in config.input_modalities:
        processor.t5_encoder = LazyT5CaptionEncoder(entry.t5_encoder, tokenizer_hub_options)
    if options.get("device") is not None:
        processor.to(options["device"])
    return processor


if load_released_processor not in PRETRAINED_SOURCE_LOADERS:
    PRETRAINED_SOURCE_LOADERS.append(load_released_processor)


__all__ = ["TEXT_TOKENIZER_ENV", "TextTokenizerNotFoundError", "check_released_text_tokenizer", "lazy_tokenizers",
           "load_released_processor", "resolve_text_tokenizer", "vocabulary_fingerprint"]
