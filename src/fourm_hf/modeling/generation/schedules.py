"""Decoding schedules: how each target modality is decoded, step by step.

A :class:`GenerationSchedule` lists the conditioning modalities and one :class:`TargetSchedule` per
target (scheme, tokens revealed per step, temperatures, sampling filters, guidance weights, and the
conventions that differ between this package and the reference ``ml-4m`` sampler). The per-step
schedules live here; :func:`~.planning.build_generation_schedule` plans a whole run.

Token schedules (how many image tokens each step reveals):

* ``"cosine"`` (default): the MaskGIT paper's mask schedule, the fraction still hidden after step
  t of T being ``cos(pi/2 * t/T)``: few tokens first, most at the end (196 tokens, 8 steps:
  [4, 11, 18, 24, 30, 34, 37, 38]).
* ``"linear"``: the hidden fraction falls as ``1 - t/T``.
* ``"ml4m_cosine"``: the reference's ``cosine``: the hidden fraction after step t is
  ``(1 + cos(pi t/T)) / 2``, each step revealing the rounded difference and the last one the rest:
  symmetric, few tokens at both ends ([7, 21, 32, 38, 38, 32, 21, 7]); about a fifth fewer decoder
  queries than ``"cosine"``.
* ``"ml4m_linear"``: the reference's ``linear`` (also what it always uses for ROAR): integer
  ``linspace(0, N, T + 1)`` steps, largest first.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

SCHEMES = ("maskgit", "roar", "autoregressive")
TOKEN_SCHEDULES = ("cosine", "linear", "ml4m_cosine", "ml4m_linear")
TEMPERATURE_SCHEDULES = ("constant", "linear", "decay", "onex:<min_temperature>:<power>")
GUIDANCE_SCHEDULES = ("constant", "linear")

# Conventions where this package and the reference sampler differ (docs/generation.md says why
# the defaults are what they are). A TargetSchedule carries one value of each.
CONVENTION_CHOICES = {
    # MaskGIT: which predictions a step keeps. "confidence": the most probable ones (at greedy
    # decoding the argmax probability); "ml4m": torch.topk over the sampled tokens' probabilities,
    # which at temperature 0 are all 1, so the kept positions are topk's tie order.
    "reveal_rule": ("confidence", "ml4m"),
    # ROAR: "fixed": one random order drawn up front; "ml4m": every step draws fresh random keys
    # (one vector shared by the batch) and decodes the unknown positions they rank first.
    "roar_order": ("fixed", "ml4m"),
    # A sequence generated from nothing: "absent": not in the encoder (how FourMMaskingCollator
    # trains a sequence without input budget); "sentinel": a lone [S_1] at position 0 is an encoder
    # input (the reference's empty caption). With a given prefix both put [S_1] after it; the
    # decoder's positions start at 0 either way.
    "sequence_start": ("absent", "sentinel"),
    # Sequence stop rule. "fourm_hf": stop at [EOS] or [S_2] (stored as [EOS]), never emit [PAD];
    # "ml4m": keep every token up to the first sentinel other than [S_1] (a repeated [S_1] is
    # dropped, [EOS] and [PAD] are ordinary tokens), store no end token.
    "sequence_stop": ("fourm_hf", "ml4m"),
    # top-k/top-p: "after_temperature" filters the tempered distribution; "before_temperature"
    # filters the raw logits, then applies the temperature (the reference).
    "filter_order": ("after_temperature", "before_temperature"),
}
CONVENTIONS = {
    "fourm_hf": {"reveal_rule": "confidence", "roar_order": "fixed", "sequence_start": "absent",
                 "sequence_stop": "fourm_hf", "filter_order": "after_temperature"},
    "ml4m": {"reveal_rule": "ml4m", "roar_order": "ml4m", "sequence_start": "sentinel",
             "sequence_stop": "ml4m", "filter_order": "before_temperature"},
}
ENCODER_ORDERS = ("model", "schedule")
# A guidance condition may name a *variant* of an input, ``"<modality>#<label>"`` (e.g.
# ``"caption#negative"``): the same modality with other tokens (``generate(variant_tokens=...)``),
# shown in that guidance pass instead of the modality's own tokens. A negative weight on it makes a
# negative prompt (the reference's multimodal weighted guidance over several condition dicts).
VARIANT_SEPARATOR = "#"


def is_variant(name: str) -> bool:
    """Whether a guidance condition name is a variant ``"<modality>#<label>"``."""
    return VARIANT_SEPARATOR in name


def variant_base(name: str) -> str:
    """The modality a condition name shows: ``"caption#negative"`` -> ``"caption"``; others unchanged."""
    return name.split(VARIANT_SEPARATOR, 1)[0]


@dataclass(frozen=True)
class TargetSchedule:
    """How one target modality is decoded.

    Attributes:
        modality: the target's name.
        scheme: ``"maskgit"``, ``"roar"`` (image tokens) or ``"autoregressive"`` (sequences).
        num_tokens: image: most tokens to generate (the unknown positions, up to this many);
            sequence: most new tokens (the text never exceeds the modality's ``max_length``).
        num_steps: decoding steps (image) or ``num_tokens`` (autoregressive: one token per step).
        token_schedule: one of :data:`TOKEN_SCHEDULES`: how many image tokens each step reveals.
        temperatures: one per step (ignored when ``greedy``).
        greedy: take the most likely token instead of sampling.
        top_k / top_p: keep the k most likely tokens (0 = off; a float in (0, 1) is a fraction of
            the vocabulary, as the reference reads it) / the smallest set of probability >= p
            (0 or 1 = off) before sampling.
        guidance_conditions: condition sets (tuples of modality names, or variants
            ``"<modality>#<label>"``, see :data:`VARIANT_SEPARATOR`); empty = no guidance.
        guidance_weights: one tuple per step, one weight per condition set.
        reveal_rule / roar_order / sequence_start / sequence_stop / filter_order: see
            :data:`CONVENTION_CHOICES`.
    """

    modality: str
    scheme: str
    num_tokens: int
    num_steps: int
    token_schedule: str
    temperatures: tuple[float, ...]
    greedy: bool
    top_k: int | float
    top_p: float
    guidance_conditions: tuple[tuple[str, ...], ...] = ()
    guidance_weights: tuple[tuple[float, ...], ...] = ()
    reveal_rule: str = "confidence"
    roar_order: str = "fixed"
    sequence_start: str = "absent"
    sequence_stop: str = "fourm_hf"
    filter_order: str = "after_temperature"


@dataclass(frozen=True)
class GenerationSchedule:
    """The conditioning modalities and the targets, decoded in order (each becomes an input of the next).

    ``encoder_order``: ``"model"`` packs encoder inputs in the model's modality order;
    ``"schedule"`` in the order conditions then targets (the reference concatenates its dict in
    insertion order). The encoder is order-blind, so this only changes float rounding.
    """

    cond_domains: tuple[str, ...]
    targets: tuple[TargetSchedule, ...]
    encoder_order: str = "model"


def _check_steps(num_steps: int) -> None:
    if not isinstance(num_steps, int) or num_steps < 1:
        raise ValueError(f"decoding steps must be an integer >= 1, got {num_steps!r}.")


def reveal_counts(num_tokens: int, num_steps: int, schedule: str = "cosine") -> list[int]:
    """How many of ``num_tokens`` image tokens each of ``num_steps`` steps reveals (sums to num_tokens).

    See the module docstring for the schedules. ``cosine`` and ``linear`` reveal at least one token
    per step while tokens remain; the ``ml4m_*`` ones follow the reference exactly (steps may be 0).
    """
    if schedule not in TOKEN_SCHEDULES:
        raise ValueError(f"token decoding schedule must be one of {TOKEN_SCHEDULES}, got {schedule!r}.")
    _check_steps(num_steps)
    if schedule == "ml4m_cosine":
        return ml4m_cosine_counts(num_tokens, num_steps)
    if schedule == "ml4m_linear":
        return ml4m_linear_counts(num_tokens, num_steps)
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


def ml4m_cosine_counts(num_tokens: int, num_steps: int) -> list[int]:
    """The reference's cosine: ``h_i = (1 + cos(pi i / T)) / 2`` for i < T; step i < T-1 reveals
    ``round(N (h_i - h_{i+1}))`` (Python rounding, half to even), the last step the rest."""
    hidden = [0.5 * (1.0 + math.cos(math.pi * step / num_steps)) for step in range(num_steps)]
    counts = [round(num_tokens * (hidden[step] - hidden[step + 1])) for step in range(num_steps - 1)]
    counts.append(num_tokens - sum(counts))
    if counts[-1] < 0:  # only for N far below T; the reference would fail here
        raise ValueError(f"ml4m_cosine cannot split {num_tokens} tokens over {num_steps} steps; use fewer steps.")
    return counts


def ml4m_linear_counts(num_tokens: int, num_steps: int) -> list[int]:
    """The reference's linear: the steps of ``numpy.linspace(0, N, T + 1, dtype=int)``, largest
    first (zeros at the end when T > N, which the sampler skips)."""
    edges = np.linspace(0, num_tokens, num_steps + 1, dtype=int)
    return sorted((int(step) for step in np.diff(edges)), reverse=True)


def temperature_schedule(
    temperature: float, num_steps: int, schedule: str = "constant", token_counts: list[int] | None = None
) -> tuple[float, ...]:
    """Per-step temperatures.

    ``constant``; ``linear`` from ``temperature`` down to ``temperature / num_steps``; ``decay``
    ``temperature / (1 + 9 t / (T - 1))`` (fast at first, ending at a tenth); ``onex:<min>:<power>``
    the reference's "one over x" schedule (its X->RGB recipes use ``onex:0.5:0.5``): with
    ``y = 1 / x**power`` on ``x = linspace(1, 100, N)`` rescaled to [0, 1] and ``c_t`` the fraction
    of the ``N`` tokens revealed after step t (``token_counts``), step t gets
    ``min + (temperature - min) * (1 - c_t) * y_t``, at least 1e-9 (as in the reference, only the
    first T points of ``y`` are used).
    """
    if schedule == "constant":
        return (float(temperature),) * num_steps
    if schedule == "linear":
        return tuple(temperature * (1 - step / num_steps) for step in range(num_steps))
    if schedule == "decay":
        return tuple(temperature / (1 + 9 * step / max(num_steps - 1, 1)) for step in range(num_steps))
    if isinstance(schedule, str) and schedule.startswith("onex"):
        return onex_temperatures(temperature, schedule, token_counts or [1] * num_steps)
    raise ValueError(f"temperature schedule must be one of {TEMPERATURE_SCHEDULES}, got {schedule!r}.")


def onex_temperatures(temperature: float, schedule: str, token_counts: list[int]) -> tuple[float, ...]:
    """``onex:<min>:<power>`` temperatures for steps revealing ``token_counts`` tokens (see above)."""
    try:
        _, minimum, power = schedule.split(":")
        minimum, power = float(minimum), float(power)
    except ValueError:
        raise ValueError(f"onex temperature schedule must read 'onex:<min_temperature>:<power>', got {schedule!r}.") from None
    total = sum(token_counts)
    if total < 1:
        raise ValueError("onex temperature schedule: the steps reveal no token.")
    curve = 1.0 / np.linspace(1, 100, num=total) ** power
    curve = curve - curve.min()
    curve = curve / curve.max() if curve.max() > 0 else np.ones_like(curve)
    revealed = np.cumsum(token_counts) / total
    steps = min(len(token_counts), total)
    values = [max(minimum + (temperature - minimum) * (1 - revealed[t]) * curve[t], 1e-9) for t in range(steps)]
    return tuple(float(v) for v in values) + (max(minimum, 1e-9),) * (len(token_counts) - steps)


def guidance_scale_schedule(scale: float, num_steps: int, schedule: str = "constant") -> tuple[float, ...]:
    """Per-step guidance scales: constant, or linear from ``scale`` to 1 (no guidance) at the last step."""
    if schedule == "constant":
        return (float(scale),) * num_steps
    if schedule == "linear":
        return tuple(scale + (1.0 - scale) * step / max(num_steps - 1, 1) for step in range(num_steps))
    raise ValueError(f"guidance schedule must be one of {GUIDANCE_SCHEDULES}, got {schedule!r}.")


def resolve_conventions(conventions) -> dict[str, str]:
    """``"fourm_hf"`` / ``"ml4m"`` / a dict of overrides (on top of ``"fourm_hf"``, or of the preset
    named under ``"base"``) -> one value per :data:`CONVENTION_CHOICES` key."""
    if conventions is None:
        conventions = "fourm_hf"
    if isinstance(conventions, str):
        if conventions not in CONVENTIONS:
            raise ValueError(f"conventions must be one of {sorted(CONVENTIONS)} or a dict, got {conventions!r}.")
        return dict(CONVENTIONS[conventions])
    if not isinstance(conventions, dict):
        raise TypeError(f"conventions must be a name {sorted(CONVENTIONS)} or a dict, got {type(conventions).__name__}.")
    overrides = dict(conventions)
    resolved = resolve_conventions(overrides.pop("base", "fourm_hf"))
    for key, value in overrides.items():
        if key not in CONVENTION_CHOICES:
            raise ValueError(f"conventions: unknown key {key!r}; expected {sorted(CONVENTION_CHOICES)} (or 'base').")
        if value not in CONVENTION_CHOICES[key]:
            raise ValueError(f"conventions[{key!r}] must be one of {CONVENTION_CHOICES[key]}, got {value!r}.")
        resolved[key] = value
    return resolved
