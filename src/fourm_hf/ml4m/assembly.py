"""``fourm-hf assemble-ml4m``: one runnable folder from the released 4M files.

The released 4M models come as separate Hub repos: the trunk (``EPFL-VILAB/4M-21_XL``, ...), one repo
per modality tokenizer (``EPFL-VILAB/4M_tokenizers_rgb_16k_224-448``, ...) and the reference's
WordPiece file for text. This puts them together into ONE folder that ``AutoModel``,
``AutoProcessor`` and ``pipeline("any-to-any", model=folder)`` load::

    fourm-hf assemble-ml4m --model 4M-21_XL \\
        --tokenizers 4M_tokenizers_rgb_16k_224-448 4M_tokenizers_semseg_4k_224-448 tok_depth=depth-tokenizer \\
        --text-tokenizer text_tokenizer_4m_wordpiece_30k.json --out 4M-21_XL-runnable

* ``--model``: a ``fourm-hf convert-ml4m`` output folder, or a reference checkpoint (released
  folder or ``.safetensors`` file, ``--config`` for a config that is not beside it), converted on
  the fly.
* ``--tokenizers``: released tokenizer folders (loaded with ``FourMTokenizerModel``, which picks
  the family). Released tokenizer configs name no modality, so each folder is matched to one of
  the model's modalities by its released repo name (``4M_tokenizers_<modality>_<size>_<res>``, the
  name ``huggingface-cli download ... --local-dir`` or the Hub cache gives it; see
  ``RELEASED_TOKENIZER_MODALITIES``), or explicitly as ``MODALITY=DIR``.
* ``--text-tokenizer``: the reference ``tokenizers`` JSON file, or a saved ``FourMTextTokenizer``
  folder.
* ``--feature-model MODALITY=DIR``: the transformers vision model that computes a feature tokenizer's
  input (``tok_clip=clip-vit-base-patch16``, ``tok_dinov2=dinov2-base``). Without one, a feature
  tokenizer is output-only: its tokens are generated and decoded to features, but not computed from an
  input image (ImageBind has no transformers model).

Each pairing is checked before anything is written: the modality must be one of the model's image
token modalities at the model's resolution, the tokenizer must give as many ids per sample as the
model has positions for that modality (its own grid: 4M-21's 16x16 ``tok_dinov2`` /
``tok_imagebind``, the 16 tokens of the global embeddings ``tok_dinov2_global`` /
``tok_imagebind_global``, which take a bottleneck-MLP tokenizer) and its codebook the model's
vocabulary size, the text tokenizer the vocabulary of every text modality, and every image output
of the model needs a tokenizer (``--allow-missing-tokenizers`` leaves such outputs undecodable
instead). A mismatch is a ``ValueError`` listing what was found and what was expected. The
processor and the pipeline serve one resolution (the model's ``image_size``): super-resolution
outputs (``tok_rgb@448``) cannot be served and are refused; such outputs are reported as undecodable.

The output folder is built under a temporary name beside it and renamed into place; a failure
leaves no folder behind.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path

from ..hub import write_model_card
from ..modeling.modeling_fourm import FourMModel
from ..output_paths import check_output_dir, staging_dir
from ..pipelines.modality_names import ModalityNames
from ..processing.image_processing_fourm import FourMImageProcessor
from ..processing.processing_fourm import FourMProcessor
from ..text.tokenization_fourm import FourMTextTokenizer
from ..tokenizers.released import FourMTokenizerModel
from ..tokenizers.released_layout import read_json_object
from ..tokenizers.released_modalities import ReleasedModalityTokenizer
from .conversion import load_reference_model, resolve_reference_files
from .tokenizer_fit import (
    AMBIGUOUS_RELEASED_TOKENIZERS,
    RELEASED_TOKENIZER_MODALITIES,
    check_modality_servable,
    check_outputs_covered,
    check_text_tokenizer,
    check_tokenizer_fits,
)

_RELEASED_NAME = re.compile(r"4M_tokenizers_(?P<modality>.+?)_\d+k_")
_EXPLICIT = re.compile(r"^(?P<modality>[A-Za-z_][\w@]*)=(?P<folder>.+)$")


# ---- matching tokenizer folders to modalities ----------------------------------------------------------
def parse_tokenizer_argument(argument: str) -> tuple[str | None, Path]:
    """``"MODALITY=DIR"`` -> (modality, DIR); ``"DIR"`` -> (None, DIR)."""
    match = _EXPLICIT.match(argument)
    if match and not Path(argument).exists():
        return match["modality"], Path(match["folder"])
    return None, Path(argument)


def modality_from_released_name(folder: str | os.PathLike) -> str | None:
    """The modality a released tokenizer folder is for, from its repo name in the path (the folder
    itself, or a Hub cache path ``.../models--EPFL-VILAB--4M_tokenizers_rgb_16k_224-448/snapshots/<rev>``);
    None when the path names no released tokenizer. Raises for the ambiguous edge tokenizer."""
    for part in reversed(Path(os.path.abspath(folder)).parts):
        match = _RELEASED_NAME.search(part + "_")
        if match is None:
            continue
        name = match["modality"]
        if name in AMBIGUOUS_RELEASED_TOKENIZERS:
            choices = " or ".join(f"{m}={folder}" for m in AMBIGUOUS_RELEASED_TOKENIZERS[name])
            raise ValueError(f"{folder}: the released {name!r} tokenizer serves several modalities; name one: {choices}.")
        return RELEASED_TOKENIZER_MODALITIES.get(name)
    return None


def resolve_tokenizer_modalities(arguments: Sequence[str]) -> dict[str, Path]:
    """``--tokenizers`` arguments -> ``{modality: folder}``; every folder must exist and name its modality."""
    resolved: dict[str, Path] = {}
    for argument in arguments:
        modality, folder = parse_tokenizer_argument(str(argument))
        if not folder.is_dir():
            raise ValueError(f"--tokenizers {argument}: {folder} is not a folder; expected a released tokenizer folder "
                             "(config.json + model.safetensors) or MODALITY=DIR.")
        if modality is None:
            modality = modality_from_released_name(folder)
        if modality is None:
            raise ValueError(
                f"--tokenizers {argument}: cannot tell which modality {folder.name!r} tokenizes (released tokenizer "
                "configs name none; the folder is not named like a released repo 4M_tokenizers_<modality>_<size>_<res>, "
                f"with <modality> one of {sorted(RELEASED_TOKENIZER_MODALITIES)}); pass it as MODALITY=DIR, "
                f"e.g. tok_rgb={folder}."
            )
        if modality in resolved:
            raise ValueError(f"--tokenizers: two tokenizers for {modality!r}: {resolved[modality]} and {folder}.")
        resolved[modality] = folder
    return resolved


# ---- loading --------------------------------------------------------------------------------------------
def load_trunk(model: str | os.PathLike, config: str | os.PathLike | None = None):
    """A converted folder (``model_type`` "fourm") or a reference checkpoint, converted in memory."""
    path = Path(model)
    config_file = path / "config.json"
    if path.is_dir() and config_file.is_file() and read_json_object(str(config_file)).get("model_type") == "fourm":
        if config is not None:
            raise ValueError(f"--config: {path} is a converted folder, which has its own config; leave --config out.")
        return FourMModel.from_pretrained(str(path)).eval()
    weights, reference_config = resolve_reference_files(str(path), None if config is None else str(config))
    return load_reference_model(weights, reference_config).eval()


def load_text_tokenizer(source: str | os.PathLike):
    """The reference ``tokenizers`` JSON file, or a saved ``FourMTextTokenizer`` folder."""
    path = Path(source)
    if path.is_file():
        return FourMTextTokenizer(tokenizer_file=str(path))
    if path.is_dir():
        return FourMTextTokenizer.from_pretrained(str(path))
    raise ValueError(f"--text-tokenizer {source}: no such file or folder; expected the reference tokenizers JSON "
                     "(text_tokenizer_4m_wordpiece_30k.json) or a saved FourMTextTokenizer folder.")


def build_processor(config, tokenizer_folders: Mapping[str, Path], text_tokenizer, num_diffusion_steps: int = 25,
                    feature_models: Mapping[str, Path] | None = None):
    """A ``FourMProcessor`` at the model's resolution holding the released tokenizers (checked)."""
    feature_models = dict(feature_models or {})
    unused = sorted(set(feature_models) - set(tokenizer_folders))
    if unused:
        raise ValueError(f"--feature-model for {unused}, which get no tokenizer (tokenizers: {sorted(tokenizer_folders)}).")
    check_text_tokenizer(config, text_tokenizer)
    tokenizers = {}
    for name in tokenizer_folders:  # every pairing by name first, before loading any tokenizer
        check_modality_servable(config, name)
    for name, folder in tokenizer_folders.items():
        try:
            # a feature tokenizer without --feature-model is decode-only, on the model's grid for that modality
            tokenizer = ReleasedModalityTokenizer(
                FourMTokenizerModel.from_pretrained(folder), name, image_size=config.image_size,
                feature_extractor=feature_models.get(name), num_diffusion_steps=num_diffusion_steps,
                grid_size=None if name in feature_models else config.modality_grid_size(name))
        except ValueError as error:
            raise ValueError(f"tokenizer for {name!r} ({folder}): {error}") from None
        check_tokenizer_fits(config, name, tokenizer)
        tokenizers[name] = tokenizer
    options = {"image_size": config.image_size}
    semseg = [t for t in tokenizers.values() if t.config.input_kind == "semseg"]
    if semseg:
        options["num_semseg_classes"] = semseg[0].config.num_classes
    max_text_length = config.modality("caption").max_length if "caption" in config.modality_specs else 256
    return FourMProcessor(FourMImageProcessor(**options), text_tokenizer, vqvaes=tokenizers,
                          max_text_length=max_text_length)


# ---- the whole folder -----------------------------------------------------------------------------------
def assemble_ml4m(model, tokenizers: Sequence[str], text_tokenizer, out, config=None, num_diffusion_steps: int = 25,
                  allow_missing_tokenizers: bool = False, feature_models: Sequence[str] = ()) -> dict:
    """Check and write ``out`` (module docstring). Returns ``{"tokenizers": {modality: folder},
    "undecodable": {output: why it cannot be decoded}, "targets": [pipeline targets], "output_only": [feature
    modalities decoded but not computed from the image, for want of a --feature-model]}``."""
    out = check_output_dir(out, "assemble-ml4m: --out")
    if out.exists():
        raise ValueError(f"--out {out} already exists; choose a new folder.")
    folders = resolve_tokenizer_modalities(tokenizers)
    features = {}
    for argument in feature_models:
        modality, folder = parse_tokenizer_argument(str(argument))
        if modality is None:
            raise ValueError(f"--feature-model {argument}: expected MODALITY=DIR (e.g. tok_clip=clip-vit-base-patch16).")
        features[modality] = folder
    text = load_text_tokenizer(text_tokenizer)
    trunk = load_trunk(model, config)
    processor = build_processor(trunk.config, folders, text, num_diffusion_steps, features)
    undecodable = check_outputs_covered(trunk.config, sorted(processor.vqvaes), allow_missing_tokenizers)

    out.parent.mkdir(parents=True, exist_ok=True)
    staging = staging_dir(out, hidden=True)  # removes what a killed earlier run left
    try:
        trunk.save_pretrained(staging)
        processor.save_pretrained(staging)
        write_model_card(staging, title=out.name, training_data=(
            "Released 4M weights (EPFL-VILAB), converted with `fourm-hf convert-ml4m` and put together with the "
            "released tokenizers by `fourm-hf assemble-ml4m`; see the original model card for the training data."))
        os.replace(staging, out)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    targets = list(ModalityNames(trunk.config, processor.vqvaes).targets)  # what the pipeline can generate
    output_only = sorted(name for name, tokenizer in processor.vqvaes.items() if not tokenizer.config.can_encode)
    return {"tokenizers": {name: str(folder) for name, folder in folders.items()}, "undecodable": undecodable,
            "targets": targets, "output_only": output_only}
