"""Generating any modality with a 4M model: decoding schedules and the sampler.

A generation run turns a batch of token dicts ``{modality: (B, N) LongTensor}`` (plus an optional
``known`` mask per modality and ``pixel_values`` for the raw-RGB input) into the same dicts with
the target modalities filled in, one target after the other:

* image-token targets decode in a few steps: **MaskGIT** (every still-unknown position is
  predicted; the most confident predictions are kept, as many as a cosine or linear schedule says)
  or **ROAR** (a random order fixed up front, a fixed number of positions revealed per step). The
  tokens revealed so far (and tokens given for in-/out-painting) are encoder inputs of the next step.
* sequence targets (captions, boxes) decode **autoregressively**: the encoder reads the given
  prefix followed by the sentinel ``[S_1]`` (with no prefix, nothing of the sequence: that is how
  ``FourMMaskingCollator`` trains a sequence that gets no input budget, the common case of a
  fully generated caption); the decoder starts from ``[S_1]`` and stops at
  ``[EOS]``, at the end sentinel ``[S_2]`` (stored as ``[EOS]``) or at the length limit; ``[PAD]``
  is never generated. The encoder runs once; the decoder keeps a self-attention KV cache and the
  cross-attention keys/values of the fixed encoder output, so each step processes one token.
* **guidance**: the logits are ``l_u + sum_i w_i (l_i - l_u)`` where ``l_u`` sees the inputs minus
  every condition modality and ``l_i`` adds back condition set ``i`` (classifier-free guidance is
  one condition set holding all conditioning modalities, with weight = the guidance scale;
  negative weights steer away from a condition). Each pass is encoded at its own length, then ONE
  decoder forward runs all (1 + K) * B rows.
* **chaining**: a finished target is an input of every later target.

``naive=True`` runs the same algorithm without any of the speed-ups (full recomputation of the
decoder prefix and its cross-attention keys/values at every autoregressive step, one forward per
guidance pass); tests and ``benchmarks/bench_generate.py`` compare both. Randomness only comes from
the ``torch.Generator`` passed in (one uniform number per sampled token, so both paths draw the
same numbers).

Text ids follow the 4M layout: 0 ``[PAD]``, 3 ``[EOS]``, ``[S_i]`` = 4 + i.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..configuration_fourm import FourMConfig
from .layers import KVCache
from .modeling_fourm import FourMEncoderOutput

PAD_ID = 0
EOS_ID = 3
START_SENTINEL_ID = 5  # [S_1]: the encoder marks the missing text with it, the decoder starts from it
END_SENTINEL_ID = 6  # [S_2]: closes the span, i.e. the end of the generated text

SCHEMES = ("maskgit", "roar", "autoregressive")
TOKEN_SCHEDULES = ("cosine", "linear")
TEMPERATURE_SCHEDULES = ("constant", "linear", "decay")
GUIDANCE_SCHEDULES = ("constant", "linear")
DEFAULT_IMAGE_STEPS = 8


# ---- schedules ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TargetSchedule:
    """How one target modality is decoded.

    Attributes:
        modality: the target's name.
        scheme: ``"maskgit"``, ``"roar"`` (image tokens) or ``"autoregressive"`` (sequences).
        num_tokens: image: most tokens to generate (the unknown positions, up to this many);
            sequence: most new tokens (the text never exceeds the modality's ``max_length``).
        num_steps: decoding steps (image) or ``num_tokens`` (autoregressive: one token per step).
        token_schedule: ``"cosine"`` or ``"linear"``: how many image tokens each step reveals.
        temperatures: one per step (ignored when ``greedy``).
        greedy: take the most likely token instead of sampling.
        top_k / top_p: keep the k most likely tokens (0 = off) / the smallest set of probability
            >= p (0 or 1 = off) before sampling.
        guidance_conditions: condition sets (tuples of modality names); empty = no guidance.
        guidance_weights: one tuple per step, one weight per condition set.
    """

    modality: str
    scheme: str
    num_tokens: int
    num_steps: int
    token_schedule: str
    temperatures: tuple[float, ...]
    greedy: bool
    top_k: int
    top_p: float
    guidance_conditions: tuple[tuple[str, ...], ...] = ()
    guidance_weights: tuple[tuple[float, ...], ...] = ()


@dataclass(frozen=True)
class GenerationSchedule:
    """The conditioning modalities and the targets, decoded in order (each becomes an input of the next)."""

    cond_domains: tuple[str, ...]
    targets: tuple[TargetSchedule, ...]


def reveal_counts(num_tokens: int, num_steps: int, schedule: str = "cosine") -> list[int]:
    """How many of ``num_tokens`` image tokens each of ``num_steps`` steps reveals (sums to num_tokens).

    The fraction still hidden after step t is ``cos(pi/2 * t/T)`` (cosine, few tokens first, as
    MaskGIT) or ``1 - t/T`` (linear). Every step reveals at least one token while tokens remain.
    """
    if schedule not in TOKEN_SCHEDULES:
        raise ValueError(f"token decoding schedule must be one of {TOKEN_SCHEDULES}, got {schedule!r}.")
    if num_steps < 1:
        raise ValueError(f"decoding steps must be >= 1, got {num_steps}.")
    hidden_fraction = {"cosine": lambda x: math.cos(math.pi / 2 * x), "linear": lambda x: 1.0 - x}[schedule]
    counts, hidden = [], num_tokens
    for step in range(1, num_steps + 1):
        ideal = round(num_tokens * hidden_fraction(step / num_steps))
        at_most = max(hidden - 1, 0)
        at_least = max(min(num_tokens, num_steps) - step, 0)
        now_hidden = max(at_least, min(ideal, at_most))
        counts.append(hidden - now_hidden)
        hidden = now_hidden
    return counts


def temperature_schedule(temperature: float, num_steps: int, schedule: str = "constant") -> tuple[float, ...]:
    """Per-step temperatures: constant; linear from ``temperature`` down to ``temperature / num_steps``;
    decay ``temperature / (1 + 9 * t / (T - 1))`` (fast at first, ending at a tenth)."""
    if schedule == "constant":
        return (float(temperature),) * num_steps
    if schedule == "linear":
        return tuple(temperature * (1 - step / num_steps) for step in range(num_steps))
    if schedule == "decay":
        return tuple(temperature / (1 + 9 * step / max(num_steps - 1, 1)) for step in range(num_steps))
    raise ValueError(f"temperature schedule must be one of {TEMPERATURE_SCHEDULES}, got {schedule!r}.")


def guidance_scale_schedule(scale: float, num_steps: int, schedule: str = "constant") -> tuple[float, ...]:
    """Per-step guidance scales: constant, or linear from ``scale`` to 1 (no guidance) at the last step."""
    if schedule == "constant":
        return (float(scale),) * num_steps
    if schedule == "linear":
        return tuple(scale + (1.0 - scale) * step / max(num_steps - 1, 1) for step in range(num_steps))
    raise ValueError(f"guidance schedule must be one of {GUIDANCE_SCHEDULES}, got {schedule!r}.")


def _per_target(value, field: str, targets: list[str]) -> list:
    """A scalar applies to every target; a list/tuple must give one value per target."""
    if isinstance(value, (list, tuple)):
        if len(value) != len(targets):
            raise ValueError(f"{field} has {len(value)} entries but there are {len(targets)} targets {targets}.")
        return list(value)
    return [value] * len(targets)


def _normalise_guidance(guidance) -> tuple[tuple[tuple[str, ...], ...], tuple[float, ...]]:
    """``{"caption": 2.0}`` or ``[(("caption", "det"), 2.0), ...]`` -> (condition sets, weights)."""
    if guidance is None:
        return (), ()
    items = guidance.items() if isinstance(guidance, dict) else guidance
    conditions, weights = [], []
    for names, weight in items:
        names = (names,) if isinstance(names, str) else tuple(names)
        if not names:
            raise ValueError("guidance: a condition set must name at least one modality.")
        conditions.append(names)
        weights.append(float(weight))
    return tuple(conditions), tuple(weights)


def build_generation_schedule(
    config: FourMConfig,
    cond_domains: Sequence[str],
    target_domains: Sequence[str],
    tokens_per_target=None,
    autoregression_schemes=None,
    decoding_steps=None,
    token_decoding_schedules="cosine",
    temps=1.0,
    temp_schedules="constant",
    cfg_scales=1.0,
    cfg_schedules="constant",
    cfg_grow_conditioning: bool = False,
    top_k=0,
    top_p=0.0,
    greedy=False,
    guidance=None,
) -> GenerationSchedule:
    """Plan the decoding of ``target_domains`` (in order) from ``cond_domains``.

    Every per-target argument is a single value for all targets or a list with one per target.
    Defaults per modality: image tokens -> MaskGIT over all grid positions in 8 cosine steps;
    sequences -> autoregressive up to ``max_length`` tokens.

    Args:
        tokens_per_target: image: tokens to generate (default: all unknown); sequence: max new tokens.
        autoregression_schemes: ``"maskgit"`` / ``"roar"`` (images), ``"autoregressive"`` (sequences).
        decoding_steps: image decoding steps (>= 1); sequences always decode one token per step.
        token_decoding_schedules: ``"cosine"`` or ``"linear"`` (image targets).
        temps / temp_schedules: temperature > 0 and ``"constant"``, ``"linear"`` or ``"decay"``.
        cfg_scales / cfg_schedules: classifier-free guidance scale (1 = off) and ``"constant"`` or
            ``"linear"`` (from the scale to 1). The condition is ``cond_domains``, plus the targets
            decoded before when ``cfg_grow_conditioning``.
        top_k / top_p / greedy: sampling filters, or argmax decoding.
        guidance: multimodal weighted guidance ``{modality: weight}`` or ``[(modalities, weight), ...]``
            over modalities of ``cond_domains``; replaces classifier-free guidance (keep cfg_scales 1).
    """
    cond_domains, target_domains = list(cond_domains), list(target_domains)
    if not target_domains:
        raise ValueError("target_domains is empty: name at least one modality to generate.")
    for name in cond_domains:
        if name not in config.input_modalities:
            config.modality(name)  # unknown names raise here with the model's modality list
            raise ValueError(f"cond_domains: {name!r} is not an input modality of this model {config.input_modalities}.")
    for name in target_domains:
        if name not in config.output_modalities:
            config.modality(name)
            raise ValueError(f"target_domains: {name!r} is not an output modality of this model {config.output_modalities}.")
        if name in cond_domains:
            raise ValueError(f"{name!r} is both a conditioning input and a target; a target must not be an input.")
    for field, names in (("cond_domains", cond_domains), ("target_domains", target_domains)):
        if len(set(names)) != len(names):
            raise ValueError(f"{field} lists a modality twice: {names}.")
    guidance_conditions, guidance_weights = _normalise_guidance(guidance)
    for names in guidance_conditions:
        for name in names:
            if name not in cond_domains:
                raise ValueError(f"guidance weight for {name!r}, which is not a conditioning input {cond_domains}.")
    if guidance_conditions and any(float(s) != 1.0 for s in _per_target(cfg_scales, "cfg_scales", target_domains)):
        raise ValueError("Give either cfg_scales or multimodal guidance weights, not both.")

    columns = {
        "tokens_per_target": _per_target(tokens_per_target, "tokens_per_target", target_domains),
        "autoregression_schemes": _per_target(autoregression_schemes, "autoregression_schemes", target_domains),
        "decoding_steps": _per_target(decoding_steps, "decoding_steps", target_domains),
        "token_decoding_schedules": _per_target(token_decoding_schedules, "token_decoding_schedules", target_domains),
        "temps": _per_target(temps, "temps", target_domains),
        "temp_schedules": _per_target(temp_schedules, "temp_schedules", target_domains),
        "cfg_scales": _per_target(cfg_scales, "cfg_scales", target_domains),
        "cfg_schedules": _per_target(cfg_schedules, "cfg_schedules", target_domains),
        "top_k": _per_target(top_k, "top_k", target_domains),
        "top_p": _per_target(top_p, "top_p", target_domains),
        "greedy": _per_target(greedy, "greedy", target_domains),
    }
    plans = []
    for index, name in enumerate(target_domains):
        value = {field: column[index] for field, column in columns.items()}
        spec = config.modality(name)
        limit = spec.max_length if spec.is_sequence else config.grid_size**2
        num_tokens = limit if value["tokens_per_target"] is None else int(value["tokens_per_target"])
        if not 1 <= num_tokens <= limit:
            raise ValueError(f"tokens_per_target for {name!r} must lie in [1, {limit}], got {num_tokens}.")
        scheme = value["autoregression_schemes"] or ("autoregressive" if spec.is_sequence else "maskgit")
        allowed = ("autoregressive",) if spec.is_sequence else ("maskgit", "roar")
        if scheme not in allowed:
            raise ValueError(f"autoregression scheme for {name!r} ({spec.kind}) must be one of {allowed}, got {scheme!r}.")
        if spec.is_sequence:
            num_steps = num_tokens
        else:
            num_steps = DEFAULT_IMAGE_STEPS if value["decoding_steps"] is None else value["decoding_steps"]
            if not isinstance(num_steps, int) or num_steps < 1:
                raise ValueError(f"decoding_steps for {name!r} must be an integer >= 1, got {num_steps!r}.")
            if value["token_decoding_schedules"] not in TOKEN_SCHEDULES:
                raise ValueError(f"token decoding schedule for {name!r} must be one of {TOKEN_SCHEDULES}, "
                                 f"got {value['token_decoding_schedules']!r}.")
        greedy_here = bool(value["greedy"])
        temperature = float(value["temps"])
        if not greedy_here and not temperature > 0:
            raise ValueError(f"temperature for {name!r} must be > 0 (use greedy=True for argmax), got {temperature}.")
        top_k_here, top_p_here = value["top_k"], float(value["top_p"])
        if not isinstance(top_k_here, int) or top_k_here < 0:
            raise ValueError(f"top_k for {name!r} must be an integer >= 0 (0 = off), got {top_k_here!r}.")
        if not 0.0 <= top_p_here <= 1.0:
            raise ValueError(f"top_p for {name!r} must lie in [0, 1] (0 or 1 = off), got {top_p_here}.")
        scale = float(value["cfg_scales"])
        scales = guidance_scale_schedule(scale, num_steps, value["cfg_schedules"])
        if guidance_conditions:
            conditions, weights = guidance_conditions, (guidance_weights,) * num_steps
        elif scale != 1.0:
            condition = tuple(cond_domains) + (tuple(target_domains[:index]) if cfg_grow_conditioning else ())
            if not condition:
                raise ValueError(f"cfg_scales for {name!r}: classifier-free guidance needs conditioning inputs.")
            conditions, weights = (condition,), tuple((s,) for s in scales)
        else:
            conditions, weights = (), ()
        plans.append(TargetSchedule(
            modality=name, scheme=scheme, num_tokens=num_tokens, num_steps=num_steps,
            token_schedule=value["token_decoding_schedules"],
            temperatures=temperature_schedule(temperature if not greedy_here else 1.0, num_steps, value["temp_schedules"]),
            greedy=greedy_here, top_k=top_k_here, top_p=top_p_here,
            guidance_conditions=conditions, guidance_weights=weights,
        ))
    return GenerationSchedule(cond_domains=tuple(cond_domains), targets=tuple(plans))


# ---- sampling ----------------------------------------------------------------------------------------
def filter_logits(logits: torch.Tensor, top_k: int = 0, top_p: float = 0.0) -> torch.Tensor:
    """(R, V) logits -> the same with everything outside the top-k / nucleus set to -inf."""
    if top_k and top_k < logits.shape[-1]:
        kth_best = logits.topk(top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth_best, float("-inf"))
    if 0.0 < top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        sorted_probs = sorted_logits.softmax(dim=-1)
        mass_before = sorted_probs.cumsum(dim=-1) - sorted_probs
        drop_sorted = mass_before >= top_p  # the most likely token always stays (mass_before = 0)
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def sample_tokens(
    logits: torch.Tensor,
    temperature: float,
    generator: torch.Generator | None,
    greedy: bool = False,
    top_k: int = 0,
    top_p: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(R, V) logits -> sampled ids (R,) and their probability under the sampling distribution (R,).

    Sampling inverts the cumulative distribution at one uniform number per row drawn from
    ``generator``, so how many random numbers are used does not depend on the logits.
    """
    logits = logits.float()
    if greedy:
        probs = logits.softmax(dim=-1)
        confidence, ids = probs.max(dim=-1)
        return ids, confidence
    probs = filter_logits(logits / temperature, top_k, top_p).softmax(dim=-1)
    cumulative = probs.cumsum(dim=-1)
    uniform = torch.rand(probs.shape[0], 1, generator=generator, device=probs.device)
    # right=True: the first id whose cumulative mass exceeds u, so zero-probability ids are never picked
    ids = torch.searchsorted(cumulative, uniform * cumulative[:, -1:], right=True)[:, 0].clamp(max=probs.shape[1] - 1)
    return ids, probs.gather(-1, ids[:, None])[:, 0]


def combine_guidance(pass_logits: list[torch.Tensor], weights: Sequence[float]) -> torch.Tensor:
    """``l_u + sum_i w_i (l_i - l_u)`` with ``pass_logits = [l_u, l_1, ..., l_K]``; no weights -> ``l_1``."""
    if not weights:
        return pass_logits[0]
    if len(pass_logits) != len(weights) + 1:
        raise ValueError(f"guidance needs {len(weights) + 1} passes (unconditional + one per condition), got {len(pass_logits)}.")
    unconditional = pass_logits[0]
    guided = unconditional.clone()
    for weight, conditional in zip(weights, pass_logits[1:]):
        guided = guided + weight * (conditional - unconditional)
    return guided


# ---- the state of one generation run ----------------------------------------------------------------
@dataclass
class GenerationState:
    """The batch being generated: ``tokens[m]`` (B, N_m) ids, ``known[m]`` (B, N_m) bool, pixels.

    Sequences are stored left-aligned and padded with ``[PAD]``; their known mask is a prefix.
    """

    config: FourMConfig
    tokens: dict[str, torch.Tensor]
    known: dict[str, torch.Tensor]
    pixel_values: torch.Tensor | None
    batch_size: int

    def available(self) -> list[str]:
        """Modalities the encoder can read now, in the model's modality order."""
        names = [name for name in self.known if self.known[name].any()]
        if self.pixel_values is not None:
            names += [n for n in self.config.input_modalities if self.config.modality(n).kind == "pixels"]
        return [n for n in self.config.modality_names if n in names and n in self.config.input_modalities]


def prepare_state(
    config: FourMConfig,
    tokens: dict[str, torch.Tensor],
    schedule: GenerationSchedule,
    known: dict[str, torch.Tensor] | None = None,
    pixel_values: torch.Tensor | None = None,
    batch_size: int | None = None,
) -> GenerationState:
    """Check the inputs of :func:`generate` against the model and the schedule; build the state."""
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
    for name in schedule.cond_domains:
        if config.modality(name).kind != "pixels" and name not in tokens:
            raise ValueError(f"conditioning input {name!r} has no tokens (tokens has {sorted(tokens)}).")
    sizes = {name: ids.shape[0] for name, ids in tokens.items()}
    if pixel_values is not None:
        sizes["pixel_values"] = pixel_values.shape[0]
    if batch_size is not None:
        sizes["batch_size"] = batch_size
    if len(set(sizes.values())) > 1:
        raise ValueError(f"Every input must have the same batch size, got {sizes}.")
    if not sizes:
        raise ValueError("Nothing tells the batch size (no tokens, no pixel_values): pass batch_size.")
    batch = next(iter(sizes.values()))
    state_tokens, state_known = {}, {}
    for name, ids in tokens.items():
        spec = config.modality(name)  # unknown modality names raise ValueError here
        if spec.kind == "pixels":
            raise ValueError(f"{name!r} is a pixels modality: pass it as pixel_values, not as tokens.")
        if name not in schedule.cond_domains and name not in targets:
            raise ValueError(f"tokens were given for {name!r}, which is neither a conditioning input "
                             f"{list(schedule.cond_domains)} nor a target {targets}.")
        length = ids.shape[1]
        if spec.is_sequence and length > spec.max_length:
            raise ValueError(f"tokens[{name!r}] has {length} positions, more than max_length {spec.max_length}.")
        if not spec.is_sequence and length != config.grid_size**2:
            raise ValueError(f"tokens[{name!r}] must have {config.grid_size ** 2} positions "
                             f"({config.grid_size}x{config.grid_size} grid), got {length}.")
        given = known.pop(name, None)
        if given is None:
            given = ids != PAD_ID if spec.is_sequence else torch.ones_like(ids, dtype=torch.bool)
        elif given.shape != ids.shape or given.dtype != torch.bool:
            raise ValueError(f"known[{name!r}] must be a bool tensor of shape {tuple(ids.shape)}, got "
                             f"{given.dtype} of shape {tuple(given.shape)}.")
        if spec.is_sequence and (given[:, 1:] & ~given[:, :-1]).any():
            raise ValueError(f"known[{name!r}]: the given tokens of a sequence must be a prefix (left-aligned).")
        values = ids.long()[given]
        if values.numel() and (values.min() < 0 or values.max() >= spec.vocab_size):
            raise ValueError(f"tokens[{name!r}] must lie in [0, {spec.vocab_size}), got values in "
                             f"[{values.min().item()}, {values.max().item()}].")
        if name in schedule.cond_domains and not given.any(dim=1).all():
            raise ValueError(f"conditioning input {name!r} has a sample without any given token.")
        state_tokens[name], state_known[name] = ids.long().clone(), given.clone()
    if known:
        raise ValueError(f"known masks were given for {sorted(known)} without tokens for them.")
    pixel_names = [n for n in schedule.cond_domains if config.modality(n).kind == "pixels"]
    if pixel_names and pixel_values is None:
        raise ValueError(f"conditioning input {pixel_names[0]!r} needs pixel_values (B, 3, H, W).")
    if pixel_values is not None:
        expected = (batch, config.modality(pixel_names[0]).num_channels, config.image_size, config.image_size) if pixel_names else None
        if expected is None:
            raise ValueError("pixel_values were given but no pixels modality is among cond_domains.")
        if not pixel_values.dtype.is_floating_point or tuple(pixel_values.shape) != expected:
            raise ValueError(f"pixel_values for {pixel_names[0]!r} must be a float tensor of shape {expected}, "
                             f"got {pixel_values.dtype} {tuple(pixel_values.shape)}.")
    return GenerationState(config, state_tokens, state_known, pixel_values, batch)


# ---- packing the model's inputs ----------------------------------------------------------------------
def _compact(pieces: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Concatenate per-modality (B, n) pieces and move each row's real tokens to the front."""
    ids, modality_ids, positions, valid = (torch.cat([p[key] for p in pieces], dim=1) for key in ("ids", "modality", "position", "valid"))
    order = torch.sort((~valid).to(torch.int8), dim=1, stable=True).indices
    length = max(int(valid.sum(dim=1).max()), 1)
    order = order[:, :length]
    valid = valid.gather(1, order)
    keep = lambda t: t.gather(1, order) * valid  # noqa: E731  (padding slots hold zeros)
    return {"input_ids": keep(ids), "input_modality_ids": keep(modality_ids), "input_positions": keep(positions),
            "attention_mask": valid.long()}


def pack_encoder_inputs(
    state: GenerationState, visible: Sequence[str], open_sequence: tuple[str, torch.Tensor] | None = None
) -> dict[str, torch.Tensor]:
    """Packed encoder batch (B, L) of the known tokens of the ``visible`` modalities.

    ``open_sequence = (name, prefix_lengths (B,))`` adds ``[S_1]`` after that sequence's given prefix
    (rows whose prefix already fills the sequence get none, and so do rows with no prefix: a sequence
    the collator gives no input budget is absent from the encoder, so that is what the model knows
    for "generate all of it"; a lone ``[S_1]`` only occurs in training when every token of a
    sequence with input budget is dropped, and it makes the model close the span early). A given
    sequence that is hidden from this view (guidance) enters as ``[S_1]`` alone, the way 4M sees a
    fully masked text.
    """
    config, batch = state.config, state.batch_size
    empty = torch.zeros(batch, 0, dtype=torch.long)
    pieces = [{"ids": empty, "modality": empty, "position": empty, "valid": empty.bool()}]
    open_name = open_sequence[0] if open_sequence is not None else None
    for name in state.available():
        if name not in visible and name != open_name and config.modality(name).is_sequence:
            pieces.append({"ids": torch.full((batch, 1), START_SENTINEL_ID), "modality": torch.full((batch, 1), config.modality_id(name)),
                           "position": torch.zeros(batch, 1, dtype=torch.long), "valid": torch.ones(batch, 1, dtype=torch.bool)})
    uses_pixels = False
    for name in visible:
        spec = config.modality(name)
        if spec.kind == "pixels":
            count = config.grid_size**2
            ids, valid = torch.zeros(batch, count, dtype=torch.long), torch.ones(batch, count, dtype=torch.bool)
            uses_pixels = True
        else:
            ids, valid = state.tokens[name], state.known[name]
        positions = torch.arange(ids.shape[1]).expand(batch, -1)
        pieces.append({"ids": ids, "modality": torch.full_like(ids, config.modality_id(name)), "position": positions, "valid": valid})
    if open_sequence is not None and open_sequence[0] in config.input_modalities:
        name, prefix_lengths = open_sequence
        marked = (prefix_lengths > 0) & (prefix_lengths < config.modality(name).max_length)
        pieces.append({"ids": torch.full((batch, 1), START_SENTINEL_ID), "modality": torch.full((batch, 1), config.modality_id(name)),
                       "position": (prefix_lengths * marked)[:, None], "valid": marked[:, None]})
    packed = _compact(pieces)
    if uses_pixels:
        packed["pixel_values"] = state.pixel_values
    return packed


def _stack_encoded(outputs: list[FourMEncoderOutput]) -> FourMEncoderOutput:
    """Encoder outputs of several views (B, L_i, D) -> one of all their rows, padded to the longest
    (padding: zero states and placement, attention mask 0, so the decoder never attends to it)."""
    length = max(output.attention_mask.shape[1] for output in outputs)

    def padded(tensor):
        pad = (0, 0, 0, length - tensor.shape[1]) if tensor.dim() == 3 else (0, length - tensor.shape[1])
        return F.pad(tensor, pad)

    return FourMEncoderOutput(
        last_hidden_state=torch.cat([padded(output.last_hidden_state) for output in outputs]),
        placement=torch.cat([padded(output.placement) for output in outputs]),
        attention_mask=torch.cat([padded(output.attention_mask) for output in outputs]),
    )


def guidance_views(state: GenerationState, plan: TargetSchedule) -> list[list[str]]:
    """Visible modalities of each forward pass: [all] without guidance, else [unconditional, cond_1, ...]."""
    available = state.available()
    if plan.modality in state.config.input_modalities and plan.modality in state.tokens and plan.modality not in available:
        available = [n for n in state.config.modality_names if n in available or n == plan.modality]
    if not plan.guidance_conditions:
        return [available]
    for names in plan.guidance_conditions:
        for name in names:
            if name not in available:
                raise ValueError(f"guidance condition {name!r} of target {plan.modality!r} is not among the given inputs {available}.")
    conditioned = {name for names in plan.guidance_conditions for name in names}
    base = [name for name in available if name not in conditioned]
    return [base] + [[name for name in available if name in base or name in names] for names in plan.guidance_conditions]


def _logits_head(model, target: str, states: torch.Tensor) -> torch.Tensor:
    """(R, T, D) decoder states -> (R, T, V) float32 logits of ``target``."""
    return F.linear(states, model.decoder_embeddings[target].logits_weight).float()


# ---- image targets: MaskGIT and ROAR ------------------------------------------------------------------
def image_target_logits(
    model,
    state: GenerationState,
    target: str,
    query_positions: torch.Tensor,
    query_mask: torch.Tensor,
    views: list[list[str]],
    naive: bool = False,
) -> list[torch.Tensor]:
    """Logits (B, Q, V) of the queried grid positions of ``target``, one tensor per view of the inputs.

    Each view is encoded at its own length (an unconditional view holds far fewer tokens than the
    conditional one, so padding it to the same length would only add work); the decoder then runs
    once over all views' rows, or (``naive``) once per view.
    """
    batch = state.batch_size
    target_id = state.config.modality_id(target)
    encoded_views = [model.encode(**pack_encoder_inputs(state, visible)) for visible in views]

    def run(encoded, rows):
        positions = query_positions.repeat(rows // batch, 1)
        mask = query_mask.long().repeat(rows // batch, 1)
        states, _ = model.decode(encoded, torch.zeros_like(positions), torch.full_like(positions, target_id), positions, mask)
        return _logits_head(model, target, states)

    if naive or len(encoded_views) == 1:
        return [run(encoded, batch) for encoded in encoded_views]
    return list(run(_stack_encoded(encoded_views), batch * len(views)).split(batch))


def _rows_to_front(selected: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, N) bool selection -> per row the selected ``values`` first (B, Q) and their mask (B, Q)."""
    order = torch.sort((~selected).to(torch.int8), dim=1, stable=True).indices
    width = max(int(selected.sum(dim=1).max()), 1)
    order = order[:, :width]
    return values.gather(1, order), selected.gather(1, order)


def decode_image_target(
    model, state: GenerationState, plan: TargetSchedule, generator, naive=False, progress_bar=None, batch_guidance=True
) -> None:
    """MaskGIT or ROAR decoding of one image-token target; fills ``state`` in place.

    Guidance views run as one stacked forward, or one forward each (``naive`` or not ``batch_guidance``).
    """
    config, batch, target = state.config, state.batch_size, plan.modality
    count = config.grid_size**2
    if target not in state.tokens:
        state.tokens[target] = torch.zeros(batch, count, dtype=torch.long)
        state.known[target] = torch.zeros(batch, count, dtype=torch.bool)
    tokens, known = state.tokens[target], state.known[target]
    to_generate = (~known).sum(dim=1).clamp(max=plan.num_tokens)
    counts = torch.tensor([reveal_counts(int(n), plan.num_steps, plan.token_schedule) for n in to_generate])
    if plan.scheme == "roar":
        keys = torch.rand(batch, count, generator=generator).masked_fill(known, 2.0)
        random_order = keys.argsort(dim=1)  # unknown positions first, in random order
        decoded = torch.zeros(batch, dtype=torch.long)
    for step in range(plan.num_steps):
        if progress_bar is not None:
            progress_bar.update(1)
        step_counts = counts[:, step]
        if not step_counts.any():
            continue
        if plan.scheme == "maskgit":
            query_positions, query_mask = _rows_to_front(~known, torch.arange(count).expand(batch, -1))
        else:
            width = int(step_counts.max())
            offsets = (decoded[:, None] + torch.arange(width)).clamp(max=count - 1)
            query_positions = random_order.gather(1, offsets)
            query_mask = torch.arange(width)[None] < step_counts[:, None]
            decoded += step_counts
        views = guidance_views(state, plan)
        pass_logits = image_target_logits(model, state, target, query_positions, query_mask, views, naive or not batch_guidance)
        logits = combine_guidance(pass_logits, plan.guidance_weights[step] if plan.guidance_weights else ())
        width = query_positions.shape[1]
        ids, confidence = sample_tokens(logits.reshape(batch * width, -1), plan.temperatures[step], generator,
                                        plan.greedy, plan.top_k, plan.top_p)
        ids, confidence = ids.view(batch, width), confidence.view(batch, width)
        if plan.scheme == "maskgit":
            confidence = confidence.masked_fill(~query_mask, -1.0)
            rank = confidence.argsort(dim=1, descending=True, stable=True).argsort(dim=1)
            reveal = query_mask & (rank < step_counts[:, None])
        else:
            reveal = query_mask
        rows, slots = reveal.nonzero(as_tuple=True)
        tokens[rows, query_positions[rows, slots]] = ids[rows, slots]
        known[rows, query_positions[rows, slots]] = True


# ---- sequence targets: autoregressive with KV cache -----------------------------------------------
def decode_sequence_target(
    model, state: GenerationState, plan: TargetSchedule, generator, naive=False, progress_bar=None, batch_guidance=True
) -> None:
    """Autoregressive decoding of one sequence target after its given prefix; fills ``state`` in place.

    Cached: one encoder pass (all guidance views stacked, or one per view without
    ``batch_guidance``), the cross-attention keys/values computed once, a self-attention KV cache,
    one decoder token per step. ``naive``: one encoder pass per view, then at every step the whole
    decoded prefix goes through the decoder again, per view.
    """
    config, batch, target = state.config, state.batch_size, plan.modality
    spec = config.modality(target)
    if target not in state.tokens:
        state.tokens[target] = torch.zeros(batch, 0, dtype=torch.long)
        state.known[target] = torch.zeros(batch, 0, dtype=torch.bool)
    prefix_lengths = state.known[target].sum(dim=1)
    room = (spec.max_length - prefix_lengths).clamp(max=plan.num_tokens)
    max_new = int(room.max())
    if max_new <= 0:
        if progress_bar is not None:
            progress_bar.update(plan.num_steps)
        return
    views = guidance_views(state, plan)
    encoder_batches = [pack_encoder_inputs(state, visible, (target, prefix_lengths)) for visible in views]
    target_id = config.modality_id(target)
    if naive:
        encoded_views = [model.encode(**b) for b in encoder_batches]
    else:  # one group of stacked views per forward; each keeps its own caches
        groups = [encoder_batches] if batch_guidance else [[b] for b in encoder_batches]
        cached_groups = []
        for group in groups:
            encoded = _stack_encoded([model.encode(**b) for b in group])
            cached_groups.append((len(group), encoded, model.decoder_context_key_values(encoded), [KVCache() for _ in model.decoder]))
    history = torch.full((batch, 1), START_SENTINEL_ID)
    generated = torch.full((batch, max_new), PAD_ID)
    lengths = torch.zeros(batch, dtype=torch.long)
    finished = room <= 0
    for step in range(max_new):
        if progress_bar is not None:
            progress_bar.update(1)
        if naive:
            positions = torch.arange(step + 1).expand(batch, -1)
            pass_logits = []
            for encoded_view in encoded_views:
                states, _ = model.decode(encoded_view, history, torch.full_like(history, target_id), positions)
                pass_logits.append(_logits_head(model, target, states[:, -1:]))
        else:
            pass_logits = []
            for group_views, encoded, context_key_values, kv_caches in cached_groups:
                new_input = history[:, -1:].repeat(group_views, 1)
                states, _ = model.decode(encoded, new_input, torch.full_like(new_input, target_id), torch.full_like(new_input, step),
                                         context_key_values=context_key_values, kv_caches=kv_caches)
                pass_logits += list(_logits_head(model, target, states).split(batch))
        logits = combine_guidance(pass_logits, plan.guidance_weights[step] if plan.guidance_weights else ())
        logits[..., PAD_ID] = float("-inf")  # [PAD] only pads; generated text never contains it
        ids, _ = sample_tokens(logits[:, 0], plan.temperatures[step], generator, plan.greedy, plan.top_k, plan.top_p)
        active = ~finished
        stops = (ids == EOS_ID) | (ids == END_SENTINEL_ID)
        generated[active, step] = torch.where(stops, EOS_ID, ids)[active]
        lengths += active.long()
        finished |= stops | (lengths >= room)
        if finished.all():
            if progress_bar is not None:
                progress_bar.update(max_new - step - 1)
            break
        history = torch.cat([history, ids[:, None]], dim=1)
    width = int((prefix_lengths + lengths).max())
    result = torch.full((batch, width), PAD_ID)
    for row in range(batch):
        prefix, new = int(prefix_lengths[row]), int(lengths[row])
        result[row, :prefix] = state.tokens[target][row, :prefix]
        result[row, prefix:prefix + new] = generated[row, :new]
    state.tokens[target] = result
    state.known[target] = torch.arange(width)[None] < (prefix_lengths + lengths)[:, None]


# ---- the entry point ----------------------------------------------------------------------------------
@torch.no_grad()
def generate(
    model,
    tokens: dict[str, torch.Tensor],
    schedule: GenerationSchedule,
    generator: torch.Generator | None = None,
    pixel_values: torch.Tensor | None = None,
    known: dict[str, torch.Tensor] | None = None,
    batch_size: int | None = None,
    progress: bool = False,
    naive: bool = False,
    batch_guidance: bool = True,
    return_known: bool = False,
):
    """Generate the schedule's targets, in order, for a batch of token dicts.

    Args:
        model: a :class:`FourMModel`.
        tokens: ``{modality: (B, N) LongTensor}`` for the conditioning inputs, and optionally for
            targets to in-/out-paint (their ``known`` positions are kept, the rest generated). Image
            modalities have N = grid**2; sequences are left-aligned, padded with ``[PAD]`` (0).
        schedule: from :func:`build_generation_schedule`.
        generator: the only source of randomness (when None, one seeded from ``os.urandom``).
        pixel_values: (B, 3, H, W) ImageNet-normalised pixels when a pixels modality is conditioning.
        known: ``{modality: (B, N) bool}``; default all positions of image modalities and the
            non-``[PAD]`` prefix of sequences.
        batch_size: needed only when nothing else gives it (unconditional generation).
        progress: show a tqdm bar over decoding steps.
        naive: the slow reference path (no KV cache, one forward per guidance pass).
        batch_guidance: run the guidance passes as one forward of (1 + K) * B rows (fast on a GPU);
            False runs them one after the other, which avoids padding the shorter unconditional
            inputs and is faster on a single CPU thread (see benchmarks/RESULTS.md). Same tokens.
        return_known: also return the known masks (e.g. when ``tokens_per_target`` left positions open).
    Returns:
        ``{modality: (B, N) LongTensor}`` with every input and every target (sequences end with
        ``[EOS]`` unless they hit the length limit; shorter rows are padded with ``[PAD]``), and the
        ``{modality: (B, N) bool}`` known masks when ``return_known``.
    """
    state = prepare_state(model.config, tokens, schedule, known, pixel_values, batch_size)
    if generator is None:  # fresh entropy, never the global RNG
        generator = torch.Generator().manual_seed(int.from_bytes(os.urandom(8), "little") >> 1)
    total_steps = sum(plan.num_steps for plan in schedule.targets)
    with tqdm(total=total_steps, disable=not progress, desc="generating") as progress_bar:
        for plan in schedule.targets:
            progress_bar.set_postfix_str(plan.modality)
            decode = decode_sequence_target if plan.scheme == "autoregressive" else decode_image_target
            decode(model, state, plan, generator, naive, progress_bar, batch_guidance)
    if return_known:
        return dict(state.tokens), dict(state.known)
    return dict(state.tokens)


__all__ = [
    "GenerationSchedule",
    "GenerationState",
    "TargetSchedule",
    "build_generation_schedule",
    "combine_guidance",
    "filter_logits",
    "generate",
    "guidance_views",
    "image_target_logits",
    "pack_encoder_inputs",
    "prepare_state",
    "reveal_counts",
    "sample_tokens",
]
