"""The state of one generation run: the token dicts being filled in, checked against the model."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from ...configuration_fourm import FourMConfig
from .schedules import GenerationSchedule, is_variant, variant_base
from .special_ids import NUM_SENTINELS, PAD_ID


@dataclass
class GenerationState:
    """The batch being generated: ``tokens[m]`` (B, N_m) ids, ``known[m]`` (B, N_m) bool, pixels.

    Sequences are stored left-aligned and padded with ``[PAD]``; their known mask is a prefix.
    Every tensor lives on ``device`` (the model's); ``order`` is the encoder's modality order;
    ``num_sentinels`` how many ``[S_i]`` ids the text vocabulary has (the ``ml4m`` stop rule);
    ``waiting_sentinels`` the empty sequence targets not decoded yet whose lone ``[S_1]`` is an
    encoder input meanwhile (``sequence_start="sentinel"``); ``variant_tokens`` / ``variant_known``
    the ``"<modality>#<label>"`` variants guidance passes show instead of the modality's own tokens
    (negative prompts), (B, N) each. ``token_probs``: None (not recorded), or filled with
    ``{sequence target: (B, N) float32}``, the probability of each generated token (NaN elsewhere).
    """

    config: FourMConfig
    tokens: dict[str, torch.Tensor]
    known: dict[str, torch.Tensor]
    pixel_values: torch.Tensor | None
    batch_size: int
    device: torch.device = torch.device("cpu")
    order: tuple[str, ...] = ()
    num_sentinels: int = NUM_SENTINELS
    waiting_sentinels: list[str] = dataclasses.field(default_factory=list)
    variant_tokens: dict[str, torch.Tensor] = dataclasses.field(default_factory=dict)
    variant_known: dict[str, torch.Tensor] = dataclasses.field(default_factory=dict)
    token_probs: dict[str, torch.Tensor] | None = None
    continuous: dict[str, torch.Tensor] = dataclasses.field(default_factory=dict)

    def encoder_order(self) -> list[str]:
        """Every modality name in the encoder's order: ``order`` first, then the model's order."""
        return list(self.order) + [n for n in self.config.modality_names if n not in self.order]

    def available(self) -> list[str]:
        """Modalities the encoder can read now, in ``order`` (default: the model's modality order)."""
        names = [name for name in self.known if self.known[name].any()]
        if self.pixel_values is not None:
            names += [n for n in self.config.input_modalities if self.config.modality(n).kind == "pixels"]
        return [n for n in self.encoder_order() if n in names and n in self.config.input_modalities]

    def in_encoder_order(self, names: list[str]) -> list[str]:
        """``names`` (variants at their modality's place) sorted into the encoder's order."""
        order = self.encoder_order()
        return sorted(names, key=lambda name: order.index(variant_base(name)))


def prepare_state(
    config: FourMConfig,
    tokens: dict[str, torch.Tensor],
    schedule: GenerationSchedule,
    known: dict[str, torch.Tensor] | None = None,
    pixel_values: torch.Tensor | None = None,
    batch_size: int | None = None,
    device: torch.device | str | None = None,
    variant_tokens: dict[str, torch.Tensor] | None = None,
    continuous_inputs: dict[str, torch.Tensor] | None = None,
) -> GenerationState:
    """Check the inputs of :func:`generate` against the model and the schedule; build the state
    with every tensor on ``device`` (default: where the tokens are, else the CPU).

    ``variant_tokens``: ``{"<modality>#<label>": (B, N) ids}`` for the variants the schedule's
    guidance conditions name (e.g. a negative prompt ``"caption#negative"``); sequences padded
    with ``[PAD]``, every row with at least one token. ``continuous_inputs``: ``{sequence-embedding modality:
    (B, N, C) float}`` conditions (``t5_caption``); their ``known`` mask (B, N) marks the real rows (default
    all); in the state their tokens are the row indices, which the encoder embedding reads."""
    if not isinstance(tokens, dict):
        raise TypeError(f"tokens must be a dict {{modality: (B, N) LongTensor}}, got {type(tokens).__name__}.")
    known = dict(known or {})
    targets = [plan.modality for plan in schedule.targets]
    for name in list(schedule.cond_domains) + targets:
        config.modality(name)  # schedule built for another model
    for name, ids in tokens.items():
        if not isinstance(ids, torch.Tensor) or ids.dtype.is_floating_point or ids.dim() != 2:
            raise ValueError(f"tokens[{name!r}] must be a (batch, tokens) integer tensor, got "
                             f"{getattr(ids, 'dtype', type(ids).__name__)} of shape {tuple(getattr(ids, 'shape', ()))}.")
    continuous_inputs = dict(continuous_inputs or {})
    for name in schedule.cond_domains:
        if config.modality(name).kind != "pixels" and name not in tokens and name not in continuous_inputs:
            raise ValueError(f"conditioning input {name!r} has no tokens (tokens has {sorted(tokens)}).")
    variant_tokens = dict(variant_tokens or {})
    _check_variant_names(config, schedule, variant_tokens)
    for name, ids in variant_tokens.items():
        if not isinstance(ids, torch.Tensor) or ids.dtype.is_floating_point or ids.dtype == torch.bool or ids.dim() != 2:
            raise ValueError(f"variant_tokens[{name!r}] must be a (batch, tokens) integer tensor, got "
                             f"{getattr(ids, 'dtype', type(ids).__name__)} of shape {tuple(getattr(ids, 'shape', ()))}.")
    sizes = {name: ids.shape[0] for name, ids in tokens.items()}
    sizes.update({f"variant_tokens[{name!r}]": ids.shape[0] for name, ids in variant_tokens.items()})
    if pixel_values is not None:
        sizes["pixel_values"] = pixel_values.shape[0]
    sizes.update({f"continuous_inputs[{name!r}]": values.shape[0] for name, values in continuous_inputs.items()
                  if isinstance(values, torch.Tensor) and values.dim() == 3})
    if batch_size is not None:
        sizes["batch_size"] = batch_size
    if len(set(sizes.values())) > 1:
        raise ValueError(f"Every input must have the same batch size, got {sizes}.")
    if not sizes:
        raise ValueError("Nothing tells the batch size (no tokens, no pixel_values): pass batch_size.")
    batch = next(iter(sizes.values()))
    if device is None:
        device = next(iter(tokens.values())).device if tokens else pixel_values.device if pixel_values is not None else "cpu"
    device = torch.device(device)
    state_tokens, state_known = {}, {}
    for name, ids in tokens.items():
        spec = config.modality(name)  # unknown modality names raise ValueError here
        if spec.kind == "pixels":
            raise ValueError(f"{name!r} is a pixels modality: pass it as pixel_values, not as tokens.")
        if name not in schedule.cond_domains and name not in targets:
            raise ValueError(f"tokens were given for {name!r}, which is neither a conditioning input "
                             f"{list(schedule.cond_domains)} nor a target {targets}.")
        ids = ids.to(device)
        length = ids.shape[1]
        if spec.is_sequence and length > spec.max_length:
            raise ValueError(f"tokens[{name!r}] has {length} positions, more than max_length {spec.max_length}.")
        cells = None if spec.is_sequence else config.num_positions(name)
        if not spec.is_sequence and length != cells:
            side = round(cells**0.5)
            raise ValueError(f"tokens[{name!r}] must have {cells} positions ({side}x{side} grid), got {length}.")
        given = known.pop(name, None)
        if given is None:
            given = ids != PAD_ID if spec.is_sequence else torch.ones_like(ids, dtype=torch.bool)
        elif given.shape != ids.shape or given.dtype != torch.bool:
            raise ValueError(f"known[{name!r}] must be a bool tensor of shape {tuple(ids.shape)}, got "
                             f"{given.dtype} of shape {tuple(given.shape)}.")
        given = given.to(device)
        if spec.is_sequence and (given[:, 1:] & ~given[:, :-1]).any():
            raise ValueError(f"known[{name!r}]: the given tokens of a sequence must be a prefix (left-aligned).")
        values = ids.long()[given]
        if values.numel() and (values.min() < 0 or values.max() >= spec.vocab_size):
            raise ValueError(f"tokens[{name!r}] must lie in [0, {spec.vocab_size}), got values in "
                             f"[{values.min().item()}, {values.max().item()}].")
        if name in schedule.cond_domains and not given.any(dim=1).all():
            raise ValueError(f"conditioning input {name!r} has a sample without any given token.")
        state_tokens[name], state_known[name] = ids.long().clone(), given.clone()
    continuous = {}
    for name, values in continuous_inputs.items():
        state_tokens[name], state_known[name], continuous[name] = _continuous_input(config, schedule, name, values,
                                                                                   known.pop(name, None), batch, device)
    if known:
        raise ValueError(f"known masks were given for {sorted(known)} without tokens for them.")
    pixel_names = [n for n in schedule.cond_domains if config.modality(n).kind == "pixels"]
    if pixel_names and pixel_values is None:
        raise ValueError(f"conditioning input {pixel_names[0]!r} needs pixel_values (B, 3, H, W).")
    if pixel_values is not None:
        size = config.modality_image_size(pixel_names[0]) if pixel_names and hasattr(config, "modality_image_size") else config.image_size
        expected = (batch, config.modality(pixel_names[0]).num_channels, size, size) if pixel_names else None
        if expected is None:
            raise ValueError("pixel_values were given but no pixels modality is among cond_domains.")
        if not pixel_values.dtype.is_floating_point or tuple(pixel_values.shape) != expected:
            raise ValueError(f"pixel_values for {pixel_names[0]!r} must be a float tensor of shape {expected}, "
                             f"got {pixel_values.dtype} {tuple(pixel_values.shape)}.")
        pixel_values = pixel_values.to(device)
    order = tuple(schedule.cond_domains) + tuple(targets) if schedule.encoder_order == "schedule" else ()
    waiting = [plan.modality for plan in schedule.targets if plan.scheme == "autoregressive"
               and plan.sequence_start == "sentinel" and plan.modality in config.input_modalities
               and not (plan.modality in state_known and state_known[plan.modality].any())]
    variants = {name: _variant_ids(config, name, ids.to(device)) for name, ids in variant_tokens.items()}
    return GenerationState(config, state_tokens, state_known, pixel_values, batch, device, order, waiting_sentinels=waiting,
                           variant_tokens={name: ids for name, (ids, _) in variants.items()},
                           variant_known={name: known for name, (_, known) in variants.items()}, continuous=continuous)


def _continuous_input(config, schedule, name: str, values, given, batch: int, device):
    """A sequence-embedding condition (B, N, C) -> (row-index tokens, known mask, values on ``device``)."""
    spec = config.modality(name)
    where = f"continuous_inputs[{name!r}]"
    if spec.kind != "sequence_embedding" or name not in config.input_modalities:
        raise ValueError(f"{where}: {name!r} is not a sequence-embedding input of this model (its inputs are "
                         f"{config.input_modalities}).")
    if name not in schedule.cond_domains:
        raise ValueError(f"{where}: {name!r} is not among the schedule's conditioning inputs {list(schedule.cond_domains)}.")
    expected = f"(B, N <= {spec.max_length}, {spec.num_channels})"
    if (not isinstance(values, torch.Tensor) or not values.dtype.is_floating_point or values.dim() != 3
            or values.shape[2] != spec.num_channels or not 0 < values.shape[1] <= spec.max_length):
        raise ValueError(f"{where} must be a float tensor of shape {expected}, got "
                         f"{getattr(values, 'dtype', type(values).__name__)} {tuple(getattr(values, 'shape', ()))}.")
    rows = torch.arange(values.shape[1], device=device).expand(batch, -1).clone()
    given = torch.ones(rows.shape, dtype=torch.bool, device=device) if given is None else given.to(device)
    if given.shape != rows.shape or given.dtype != torch.bool or not given.any(dim=1).all():
        raise ValueError(f"known[{name!r}] must be a bool tensor of shape {tuple(rows.shape)} with a real row per sample.")
    return rows, given, values.to(device)


def _check_variant_names(config: FourMConfig, schedule: GenerationSchedule, variant_tokens: dict) -> None:
    """The variants given are exactly those the schedule's guidance names, each of a token input."""
    named = {name for plan in schedule.targets for names in plan.guidance_conditions for name in names if is_variant(name)}
    for name in variant_tokens:
        if not is_variant(name):
            raise ValueError(f"variant_tokens: {name!r} is not a variant name; expected '<modality>#<label>', "
                             "e.g. 'caption#negative'.")
        if name not in named:
            raise ValueError(f"variant_tokens[{name!r}]: no guidance condition of the schedule names it "
                             f"(named: {sorted(named) or 'none'}); add it to guidance with its weight.")
    missing = sorted(named - set(variant_tokens))
    if missing:
        raise ValueError(f"guidance names the variants {missing} but variant_tokens has no tokens for them.")


def _variant_ids(config: FourMConfig, name: str, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A variant's (B, N) ids, checked like a conditioning input's, and its known mask."""
    spec = config.modality(variant_base(name))
    if spec.is_sequence:
        if ids.shape[1] > spec.max_length:
            raise ValueError(f"variant_tokens[{name!r}] has {ids.shape[1]} positions, more than max_length {spec.max_length}.")
        known = ids != PAD_ID
        if (known[:, 1:] & ~known[:, :-1]).any():
            raise ValueError(f"variant_tokens[{name!r}]: a sequence must be left-aligned ([PAD] only at the end).")
    else:
        cells = config.num_positions(spec.name)
        if ids.shape[1] != cells:
            raise ValueError(f"variant_tokens[{name!r}] must have {cells} positions, got {ids.shape[1]}.")
        known = torch.ones_like(ids, dtype=torch.bool)
    if not known.any(dim=1).all():
        raise ValueError(f"variant_tokens[{name!r}] has a sample without any token; leave the variant out for it "
                         "(an empty negative prompt means no negative term).")
    values = ids[known]
    if values.min() < 0 or values.max() >= spec.vocab_size:
        raise ValueError(f"variant_tokens[{name!r}] must lie in [0, {spec.vocab_size}), got values in "
                         f"[{values.min().item()}, {values.max().item()}].")
    return ids.long().clone(), known
