"""Checks of the packed batch FourMModel.forward receives; every error names the field and modality.

Only real tokens (attention mask 1) are checked: padding may hold anything.
"""

from __future__ import annotations

import torch

from ..configuration_fourm import FourMConfig
from ..errors import WrongTypeError

IGNORE_INDEX = -100
# Keyword arguments transformers' own code passes to every model's forward (the Trainer's loss
# normaliser); they do not apply to 4M and are accepted and ignored. Anything else is a typo.
ACCEPTED_EXTRA_KWARGS = ("num_items_in_batch",)
# Integer dtypes that hold every id and position of a 4M batch; narrower ones (uint8, int8, int16)
# would wrap or fail deep inside gather/embedding, and bool is a mask, never ids.
INTEGER_DTYPES = (torch.int32, torch.int64)


FORWARD_KWARG_HINTS = {
    "lables": "did you mean labels?", "label": "did you mean labels?",
    "position_ids": "4M takes input_positions / decoder_positions",
    "decoder_position_ids": "4M takes decoder_positions",
    "token_type_ids": "4M takes input_modality_ids", "use_cache": "the forward has no cache; generation caches itself",
}


def check_extra_kwargs(model_name: str, kwargs: dict, hints: dict[str, str] | None = None) -> None:
    """Refuse keyword arguments a forward does not take (``lables=`` would otherwise vanish)."""
    unknown = sorted(name for name in kwargs if name not in ACCEPTED_EXTRA_KWARGS)
    if not unknown:
        return
    hints = hints or {}
    said = "; ".join(f"{name!r}: {hints[name]}" for name in unknown if name in hints)
    raise TypeError(f"{model_name}.forward() got unexpected keyword arguments {unknown}" + (f" ({said})" if said else "")
                    + "; see its docstring for the accepted ones.")


def _check_integer(name: str, tensor: torch.Tensor) -> None:
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(tensor).__name__}.")
    if tensor.dtype not in INTEGER_DTYPES:
        raise WrongTypeError(f"{name} must be an integer tensor of dtype torch.long (or torch.int32), got {tensor.dtype}"
                        + (" (a bool tensor is a mask, not ids)." if tensor.dtype == torch.bool else "."))


def _check_mask(name: str, tensor: torch.Tensor) -> None:
    """An attention mask: bool or integer (1 = real token, 0 = padding)."""
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(tensor).__name__}.")
    if tensor.dtype.is_floating_point or tensor.dtype.is_complex:
        raise WrongTypeError(f"{name} must be a bool or integer tensor (1 = real token, 0 = padding), got {tensor.dtype}.")


def _check_same_shape(reference_name: str, reference: torch.Tensor, others: dict[str, torch.Tensor | None]) -> None:
    if reference.dim() != 2:
        raise ValueError(f"{reference_name} must have shape (batch, tokens), got {tuple(reference.shape)}.")
    for name, tensor in others.items():
        if tensor is None:
            continue
        if name.endswith("attention_mask"):
            _check_mask(name, tensor)
        else:
            _check_integer(name, tensor)
        if tensor.shape != reference.shape:
            raise ValueError(
                f"{name} has shape {tuple(tensor.shape)} but {reference_name} has {tuple(reference.shape)}; "
                "all tensors of one side (encoder or decoder) must have the same (batch, tokens) shape."
            )


def _check_range(field: str, modality: str, values: torch.Tensor, limit: int, or_else: str = "") -> None:
    """Every value of ``field`` for ``modality`` lies in [0, limit) (``or_else`` names an allowed exception)."""
    if values.numel() and (values.min() < 0 or values.max() >= limit):
        raise ValueError(
            f"{field} for modality {modality!r} must lie in [0, {limit}){or_else}, got values in "
            f"[{values.min().item()}, {values.max().item()}]."
        )


def _check_tokens(
    config: FourMConfig,
    side: str,
    allowed_modalities: list[str],
    ids: tuple[str, torch.Tensor],
    modality_ids: tuple[str, torch.Tensor],
    positions: tuple[str, torch.Tensor],
    valid: torch.Tensor,
) -> None:
    """Modality ids in the allowed set, positions inside each modality's table, ids inside its vocab."""
    ids_name, ids_tensor = ids
    modality_name, modality_tensor = modality_ids
    positions_name, positions_tensor = positions
    allowed_ids = torch.tensor([config.modality_id(name) for name in allowed_modalities], device=modality_tensor.device)
    real_modalities = modality_tensor[valid]
    unknown = ~torch.isin(real_modalities, allowed_ids)
    if unknown.any():
        bad = real_modalities[unknown][0].item()
        described = config.modality_names[bad] if 0 <= bad < len(config.modality_names) else "no modality"
        raise ValueError(
            f"{modality_name} contains id {bad} ({described}), which is not a {side} modality of this model; "
            f"expected ids {allowed_ids.tolist()} for {allowed_modalities}."
        )
    for name in allowed_modalities:
        spec = config.modality(name)
        selected = valid & (modality_tensor == config.modality_id(name))
        if not selected.any():
            continue
        _check_range(positions_name, name, positions_tensor[selected], config.num_positions(name))
        if ids_tensor is not None and not spec.is_continuous and (side == "encoder" or spec.is_sequence):
            _check_range(ids_name, name, ids_tensor[selected], spec.vocab_size)


def _check_labels(config: FourMConfig, labels, decoder_modality_ids, valid) -> None:
    for name in config.output_modalities:
        selected = valid & (decoder_modality_ids == config.modality_id(name))
        values = labels[selected]
        _check_range("labels", name, values[values != IGNORE_INDEX], config.modality(name).vocab_size,
                     f" or be {IGNORE_INDEX}")


def _check_continuous(config: FourMConfig, continuous_inputs, input_ids, input_modality_ids, valid) -> None:
    """Each continuous modality with tokens has its dense input, of the expected shape and a float dtype."""
    batch_size = input_ids.shape[0]
    continuous = [name for name in config.input_modalities if config.modality(name).is_continuous]
    unknown = sorted(set(continuous_inputs) - set(continuous))
    if unknown:
        raise ValueError(
            f"continuous_inputs names {unknown}, which are not continuous input modalities of this model "
            f"(those are {continuous})."
        )
    for name in continuous:
        spec = config.modality(name)
        selected = valid & (input_modality_ids == config.modality_id(name))
        value = continuous_inputs.get(name)
        field = "pixel_values" if spec.kind == "pixels" else f"continuous_inputs[{name!r}]"
        if value is None:
            if selected.any():
                raise ValueError(f"Input tokens of the {spec.kind} modality {name!r} are given but {field} is None (missing).")
            continue
        if not isinstance(value, torch.Tensor) or not value.dtype.is_floating_point:
            raise ValueError(f"{field} must be a floating point tensor, got {getattr(value, 'dtype', type(value))}.")
        if spec.kind == "pixels":
            size = config.modality_image_size(name)
            expected = (batch_size, spec.num_channels, size, size)
            if tuple(value.shape) != expected:
                raise ValueError(
                    f"{field} for modality {name!r} must have shape {expected} "
                    f"(batch, channels, image_size, image_size), got {tuple(value.shape)}."
                )
            continue
        if value.dim() != 3 or value.shape[0] != batch_size or value.shape[2] != spec.num_channels:
            raise ValueError(
                f"{field} must have shape (batch={batch_size}, length, {spec.num_channels}), got {tuple(value.shape)}."
            )
        rows = input_ids[selected]
        if rows.numel() and (rows.min() < 0 or rows.max() >= value.shape[1]):
            raise ValueError(
                f"input_ids of modality {name!r} are rows of {field} and must lie in [0, {value.shape[1]}), got "
                f"values in [{rows.min().item()}, {rows.max().item()}]."
            )


def validate_packed_inputs(
    config: FourMConfig,
    input_ids,
    input_modality_ids,
    input_positions,
    attention_mask,
    continuous_inputs,
    decoder_input_ids,
    decoder_modality_ids,
    decoder_positions,
    decoder_attention_mask,
    labels,
) -> None:
    """Raise ValueError/TypeError for any malformed field of a packed batch (see FourMModel.forward).

    ``continuous_inputs``: modality name -> dense input (``pixel_values`` already filed under its modality).
    """
    _check_integer("input_ids", input_ids)
    _check_same_shape(
        "input_ids", input_ids,
        {"input_modality_ids": input_modality_ids, "input_positions": input_positions, "attention_mask": attention_mask},
    )
    encoder_valid = attention_mask.bool()
    _check_tokens(
        config, "encoder", config.input_modalities, ("input_ids", input_ids),
        ("input_modality_ids", input_modality_ids), ("input_positions", input_positions), encoder_valid,
    )
    _check_continuous(config, continuous_inputs, input_ids, input_modality_ids, encoder_valid)
    if decoder_modality_ids is None:
        if labels is not None:
            raise ValueError("labels were given without decoder tokens (decoder_modality_ids is None).")
        return
    _check_integer("decoder_modality_ids", decoder_modality_ids)
    _check_same_shape(
        "decoder_modality_ids", decoder_modality_ids,
        {"decoder_input_ids": decoder_input_ids, "decoder_positions": decoder_positions,
         "decoder_attention_mask": decoder_attention_mask, "labels": labels},
    )
    if decoder_positions is None:
        raise ValueError("decoder_positions is required when decoder_modality_ids is given.")
    if decoder_modality_ids.shape[0] != input_ids.shape[0]:
        raise ValueError(
            f"Encoder and decoder batch sizes differ: input_ids has {input_ids.shape[0]} rows, "
            f"decoder_modality_ids has {decoder_modality_ids.shape[0]}."
        )
    decoder_valid = decoder_attention_mask.bool()
    _check_tokens(
        config, "decoder (output)", config.output_modalities, ("decoder_input_ids", decoder_input_ids),
        ("decoder_modality_ids", decoder_modality_ids), ("decoder_positions", decoder_positions), decoder_valid,
    )
    if labels is not None:
        _check_labels(config, labels, decoder_modality_ids, decoder_valid)
