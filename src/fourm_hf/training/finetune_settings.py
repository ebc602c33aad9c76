"""Fine-tuning settings of the training YAML: a released trunk, new modalities, a frozen warm-up, lengths in tokens.

``model`` section (with ``pretrained``)::

    pretrained: DIR          # a saved FourMModel (a converted 4M-7 / 4M-21 / SR model), or a released
                             # folder in the reference's layout (config.json with domains_in, model.safetensors),
                             # converted on the fly
    add_modalities: [tok_rgb@448, {name: tok_edges, kind: image_tokens, vocab_size: 1024, ...}]
                             # new modalities (registered names or ModalitySpec fields): new embeddings and heads
    frozen_model_steps: 100  # or frozen_model_tokens: 0.01 (billions, as the reference): only the new
                             # modalities' embeddings and heads train for these first optimizer steps
    loss_type: mod           # the reference's name: mod (mean per modality, the default) or token

``training`` section, besides TrainingArguments: ``total_tokens`` / ``warmup_tokens`` (the reference's
names, in billions of tokens, or a string with a K / M / B suffix: ``"3.2M"``) set ``max_steps`` /
``warmup_steps``. One optimizer step consumes ``(input_budget + target_budget) * per_device_train_batch_size
* gradient_accumulation_steps * world_size`` tokens; a length in tokens becomes the smallest number of
steps that covers it, as the reference rounds (``ceil``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path

from ..configuration_fourm import FourMConfig
from ..ml4m.conversion import load_reference_model, resolve_reference_files
from ..modalities import ModalitySpec
from ..modeling.modeling_fourm import FourMModel
from .finetune import FrozenWarmupCallback, add_modalities, modality_parameter_names

PRETRAINED_KEYS = ("pretrained", "add_modalities", "frozen_model_steps", "frozen_model_tokens", "loss_type")
TOKEN_LENGTH_KEYS = ("total_tokens", "warmup_tokens")
LOSS_TYPES = {"mod": "modality", "token": "token"}
_SUFFIXES = {"K": 1e3, "M": 1e6, "B": 1e9, "G": 1e9}


def is_reference_folder(folder: str | Path) -> bool:
    """True for a released folder in the reference's layout (its config.json names domains, no fourm model_type)."""
    config_path = Path(folder) / "config.json"
    if not config_path.is_file():
        return False
    try:
        config = json.loads(config_path.read_text())
    except json.JSONDecodeError:
        return False
    config = config.get("fm_config", config)
    return config.get("model_type") != "fourm" and "domains_in" in config


def check_pretrained_settings(model_settings: Mapping) -> None:
    """With ``model.pretrained`` only the fine-tuning keys may be given (the architecture is the checkpoint's)."""
    others = sorted(set(model_settings) - set(PRETRAINED_KEYS))
    if others:
        raise ValueError(
            f"model.pretrained takes the architecture and modalities from the checkpoint; remove model.{others[0]} "
            f"(set budgets in the masking section; model accepts {list(PRETRAINED_KEYS)} beside pretrained)."
        )
    folder = Path(str(model_settings["pretrained"]))
    if not (folder / "config.json").is_file():
        raise ValueError(
            f"model.pretrained: {str(folder)!r} is not a folder with a config.json (a saved FourMModel or a released "
            "4M folder with config.json and model.safetensors)."
        )
    if "frozen_model_steps" in model_settings and "frozen_model_tokens" in model_settings:
        raise ValueError("model: give frozen_model_steps or frozen_model_tokens, not both.")
    if ("frozen_model_steps" in model_settings or "frozen_model_tokens" in model_settings) and not model_settings.get("add_modalities"):
        raise ValueError("model.frozen_model_steps / frozen_model_tokens warm up new modalities: set model.add_modalities too.")
    loss_type = model_settings.get("loss_type")
    if loss_type is not None and loss_type not in LOSS_TYPES:
        raise ValueError(f"model.loss_type must be one of {sorted(LOSS_TYPES)}, got {loss_type!r}.")


def load_pretrained(model_settings: Mapping, budgets: Mapping[str, int]):
    """The ``model.pretrained`` FourMModel (converted when released), with new modalities, budgets and loss type."""
    check_pretrained_settings(model_settings)
    folder = str(model_settings["pretrained"])
    if is_reference_folder(folder):
        model = load_reference_model(*resolve_reference_files(folder))
    else:
        model = FourMModel.from_pretrained(folder)
    for key, value in budgets.items():
        setattr(model.config, key, int(value))
    if model_settings.get("loss_type") is not None:
        model.config.loss_averaging = LOSS_TYPES[model_settings["loss_type"]]
    if model_settings.get("add_modalities"):
        add_modalities(model, new_modalities(model_settings["add_modalities"]))
    return model


def new_modalities(entries) -> list[str | ModalitySpec]:
    """``model.add_modalities``: registered names or mappings of :class:`ModalitySpec` fields."""
    if not isinstance(entries, list) or not entries:
        raise ValueError(f"model.add_modalities must be a non-empty list of modality names or specs, got {entries!r}.")
    resolved = []
    for index, entry in enumerate(entries):
        if isinstance(entry, str):
            resolved.append(entry)
        elif isinstance(entry, Mapping):
            resolved.append(ModalitySpec.from_dict(dict(entry)))
        else:
            raise ValueError(f"model.add_modalities[{index}] must be a modality name or a mapping of ModalitySpec fields.")
    return resolved


def parse_token_count(value, key: str) -> int:
    """A token count: a number of billions (the reference's unit) or a string like ``"3.2M"`` / ``"1B"`` / ``"5000"``."""
    if isinstance(value, str):
        text = value.strip().upper()
        scale = _SUFFIXES.get(text[-1:], None)
        try:
            count = float(text[:-1]) * scale if scale else float(text)
        except ValueError:
            raise ValueError(f"{key} must be a number of billions of tokens or a string like '3.2M', got {value!r}.") from None
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        count = float(value) * 1e9
    else:
        raise ValueError(f"{key} must be a number of billions of tokens or a string like '3.2M', got {value!r}.")
    if not math.isfinite(count) or count <= 0:
        raise ValueError(f"{key} must be a positive number of tokens, got {value!r}.")
    return int(round(count))


def tokens_per_step(config: FourMConfig, args) -> int:
    """Encoder + decoder tokens one optimizer step consumes over all processes."""
    return (config.input_budget + config.target_budget) * args.per_device_train_batch_size * \
        args.gradient_accumulation_steps * args.world_size


def steps_for(tokens: int, per_step: int) -> int:
    return max(1, math.ceil(tokens / per_step))


def apply_token_lengths(args, token_settings: Mapping, config: FourMConfig, given_keys) -> None:
    """Set ``max_steps`` / ``warmup_steps`` of ``args`` from ``total_tokens`` / ``warmup_tokens``."""
    per_step = tokens_per_step(config, args)
    for key, target in (("total_tokens", "max_steps"), ("warmup_tokens", "warmup_steps")):
        if token_settings.get(key) is None:
            continue
        if target in given_keys:
            raise ValueError(f"training: give {key} or {target}, not both.")
        setattr(args, target, steps_for(parse_token_count(token_settings[key], f"training.{key}"), per_step))


def frozen_warmup_callback(model, model_settings: Mapping, args):
    """The :class:`~fourm_hf.training.finetune.FrozenWarmupCallback` of the settings, or None."""
    steps = model_settings.get("frozen_model_steps")
    if model_settings.get("frozen_model_tokens") is not None:
        tokens = parse_token_count(model_settings["frozen_model_tokens"], "model.frozen_model_tokens")
        steps = steps_for(tokens, tokens_per_step(model.config, args))
    if steps is None:
        return None
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ValueError(f"model.frozen_model_steps must be an int >= 0, got {steps!r}.")
    added = [entry if isinstance(entry, str) else entry["name"] for entry in model_settings["add_modalities"]]
    return FrozenWarmupCallback(modality_parameter_names(model, added), steps)


__all__ = [
    "LOSS_TYPES",
    "PRETRAINED_KEYS",
    "TOKEN_LENGTH_KEYS",
    "apply_token_lengths",
    "check_pretrained_settings",
    "frozen_warmup_callback",
    "is_reference_folder",
    "load_pretrained",
    "new_modalities",
    "parse_token_count",
    "tokens_per_step",
]
