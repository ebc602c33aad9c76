"""Planning a generation run: :func:`build_generation_schedule` turns per-target options into a
:class:`~.schedules.GenerationSchedule`."""

from __future__ import annotations

from collections.abc import Sequence

from ...configuration_fourm import FourMConfig
from .presets import DEFAULT_DECODING, get_preset, preset_recipe
from .options import (
    check_bool,
    check_guidance_scale,
    check_guidance_weight,
    check_int,
    check_number,
    check_steps,
    check_temperature,
    check_top_k,
    check_top_p,
)
from .schedules import (
    ENCODER_ORDERS,
    TOKEN_SCHEDULES,
    GenerationSchedule,
    TargetSchedule,
    guidance_scale_schedule,
    is_variant,
    resolve_conventions,
    reveal_counts,
    temperature_schedule,
    variant_base,
)


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
        weights.append(check_guidance_weight(weight, f"guidance weight of {names}"))
    return tuple(conditions), tuple(weights)


def _check_condition_set(config: FourMConfig, names: tuple[str, ...], cond_domains: list, target_domains: list) -> None:
    """A guidance condition set names conditioning inputs, or variants ``"<modality>#<label>"`` of
    token inputs of the model that are not targets; each modality at most once."""
    bases = [variant_base(name) for name in names]
    if len(set(bases)) != len(bases):
        raise ValueError(f"guidance condition set {names} shows a modality twice (a variant stands in for its modality).")
    for name, base in zip(names, bases):
        if not is_variant(name):
            if name not in cond_domains:
                raise ValueError(f"guidance weight for {name!r}, which is not a conditioning input {cond_domains}.")
            continue
        if not name[len(base) + 1:]:
            raise ValueError(f"guidance variant {name!r} needs a label after '#', e.g. 'caption#negative'.")
        if base not in config.input_modalities or config.modality(base).kind == "pixels":
            raise ValueError(f"guidance variant {name!r}: {base!r} is not a token input modality of this model.")
        if base in target_domains:
            raise ValueError(f"guidance variant {name!r}: {base!r} is a target; a variant stands in for an input.")


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
    conventions="fourm_hf",
    encoder_order: str = "model",
) -> GenerationSchedule:
    """Plan the decoding of ``target_domains`` (in order) from ``cond_domains``.

    Every per-target argument is a single value for all targets or a list with one per target.
    Defaults per modality: image tokens -> MaskGIT over all grid positions in 8 cosine steps;
    sequences -> autoregressive up to ``max_length`` tokens.

    Args:
        tokens_per_target: image: tokens to generate (default: all unknown); sequence: max new tokens.
        autoregression_schemes: ``"maskgit"`` / ``"roar"`` (images), ``"autoregressive"`` (sequences).
        decoding_steps: image decoding steps (>= 1); sequences always decode one token per step.
        token_decoding_schedules: one of ``TOKEN_SCHEDULES`` (image targets; ``"ml4m_cosine"`` /
            ``"ml4m_linear"`` are the reference's ``cosine`` / ``linear``).
        temps / temp_schedules: temperature > 0 and ``"constant"``, ``"linear"``, ``"decay"`` or
            ``"onex:<min>:<power>"`` (the reference's).
        cfg_scales / cfg_schedules: classifier-free guidance scale (1 = off) and ``"constant"`` or
            ``"linear"`` (from the scale to 1). The condition is ``cond_domains``, plus the targets
            decoded before when ``cfg_grow_conditioning``.
        top_k / top_p / greedy: sampling filters (an int top_k is a count, a float in (0, 1) a
            fraction of the vocabulary), or argmax decoding.
        guidance: multimodal weighted guidance ``{modality: weight}`` or ``[(modalities, weight), ...]``
            over modalities of ``cond_domains``; replaces classifier-free guidance (keep cfg_scales 1).
            A name may be a variant ``"<modality>#<label>"`` of a token input (given to ``generate`` in
            ``variant_tokens``): ``[(("caption",), 3.0), (("caption#negative",), -1.0)]`` is a
            negative prompt.
        conventions: ``"fourm_hf"`` (default), ``"ml4m"`` (the reference sampler's) or a dict of
            overrides, one per target or one for all (see ``schedules.CONVENTION_CHOICES``).
        encoder_order: ``"model"`` or ``"schedule"`` (conditions, then targets: the reference's order).
    """
    if encoder_order not in ENCODER_ORDERS:
        raise ValueError(f"encoder_order must be one of {ENCODER_ORDERS}, got {encoder_order!r}.")
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
        _check_condition_set(config, names, cond_domains, target_domains)
    scale_column = [check_guidance_scale(s, "cfg_scales") for s in _per_target(cfg_scales, "cfg_scales", target_domains)]
    check_bool("cfg_grow_conditioning", cfg_grow_conditioning)
    if guidance_conditions and any(s != 1.0 for s in scale_column):
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
        "conventions": [resolve_conventions(c) for c in _per_target(conventions, "conventions", target_domains)],
    }
    plans = []
    for index, name in enumerate(target_domains):
        value = {field: column[index] for field, column in columns.items()}
        spec = config.modality(name)
        limit = spec.max_length if spec.is_sequence else config.num_positions(name)
        num_tokens = limit if value["tokens_per_target"] is None else check_int(
            f"tokens_per_target for {name!r}", value["tokens_per_target"], low=1, high=limit)
        scheme = value["autoregression_schemes"] or ("autoregressive" if spec.is_sequence else "maskgit")
        allowed = ("autoregressive",) if spec.is_sequence else ("maskgit", "roar")
        if scheme not in allowed:
            raise ValueError(f"autoregression scheme for {name!r} ({spec.kind}) must be one of {allowed}, got {scheme!r}.")
        if spec.is_sequence:
            num_steps = num_tokens
        else:
            num_steps = DEFAULT_DECODING["image"]["num_steps"] if value["decoding_steps"] is None else value["decoding_steps"]
            num_steps = check_steps(num_steps, f"decoding_steps for {name!r}")
            if value["token_decoding_schedules"] not in TOKEN_SCHEDULES:
                raise ValueError(f"token decoding schedule for {name!r} must be one of {TOKEN_SCHEDULES}, "
                                 f"got {value['token_decoding_schedules']!r}.")
        greedy_here = check_bool(f"greedy for {name!r}", value["greedy"])
        temperature = (check_number(f"temperature for {name!r}", value["temps"]) if greedy_here
                       else check_temperature(value["temps"], f"temperature for {name!r}"))
        top_k_here = check_top_k(value["top_k"], f"top_k for {name!r}")
        top_p_here = check_top_p(value["top_p"], f"top_p for {name!r}")
        scale = scale_column[index]
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
        token_schedule = value["token_decoding_schedules"]
        counts = [1] * num_steps if spec.is_sequence else reveal_counts(num_tokens, num_steps, token_schedule)
        temperatures = temperature_schedule(temperature if not greedy_here else 1.0, num_steps, value["temp_schedules"], counts)
        plans.append(TargetSchedule(
            modality=name, scheme=scheme, num_tokens=num_tokens, num_steps=num_steps,
            token_schedule=token_schedule, temperatures=temperatures,
            greedy=greedy_here, top_k=top_k_here, top_p=top_p_here,
            guidance_conditions=conditions, guidance_weights=weights, **value["conventions"],
        ))
    return GenerationSchedule(cond_domains=tuple(cond_domains), targets=tuple(plans), encoder_order=encoder_order)


def build_preset_schedule(
    config: FourMConfig, preset: str | dict, cond_domains: Sequence[str], target_domains: Sequence[str], **overrides
) -> GenerationSchedule:
    """A :class:`GenerationSchedule` with each target decoded by its preset recipe.

    ``overrides`` are :func:`build_generation_schedule` arguments that replace the preset's
    (e.g. ``greedy=True``). Targets the preset does not list keep the planner's defaults.
    """
    preset = get_preset(preset) if isinstance(preset, str) else preset
    columns = {"autoregression_schemes": [], "decoding_steps": [], "token_decoding_schedules": [], "temps": [],
               "temp_schedules": [], "cfg_scales": [], "tokens_per_target": []}
    for target in target_domains:
        recipe = preset_recipe(preset, cond_domains, target) or {}
        sequence = config.modality(target).is_sequence
        limit = config.modality(target).max_length if sequence else None
        columns["autoregression_schemes"].append(recipe.get("scheme"))
        columns["decoding_steps"].append(None if sequence else recipe.get("num_steps"))
        columns["token_decoding_schedules"].append(recipe.get("token_schedule", "cosine"))
        columns["temps"].append(recipe.get("temperature", 1.0))
        columns["temp_schedules"].append(recipe.get("temperature_schedule", "constant"))
        columns["cfg_scales"].append(recipe.get("cfg_scale", 1.0) if cond_domains else 1.0)
        columns["tokens_per_target"].append(min(recipe["max_tokens"], limit) if "max_tokens" in recipe else None)
    arguments = {**columns, "top_k": preset["top_k"], "top_p": preset["top_p"],
                 "cfg_grow_conditioning": preset["cfg_grow_conditioning"], "conventions": preset["conventions"],
                 "encoder_order": "schedule"}
    arguments.update(overrides)
    return build_generation_schedule(config, list(cond_domains), list(target_domains), **arguments)
