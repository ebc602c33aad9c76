"""Checking the call options of generation, in one place.

The pipeline's call options and :func:`~.planning.build_generation_schedule` /
:func:`~.sampler.generate` arguments go through these validators, one per option kind. Each
raises a ``TypeError`` (:class:`~fourm_hf.errors.WrongTypeError`, also a ``ValueError``; wrong type: a ``bool`` option given ``"False"``, a number given ``"hot"``)
or a ``ValueError`` (``nan``, ``inf``, out of range) that names the option and what it accepts.
Structural checks (which modalities, tensor shapes) stay with the code that knows the model.
"""

from __future__ import annotations

import math
import numbers

import torch

from ...errors import WrongTypeError

SEED_LIMIT = 2**63  # seeds in [0, 2**63): torch.Generator.manual_seed takes 64 bits and the sampler adds the step


def _is_number(value) -> bool:
    """A real number that is not a bool (numpy scalars included, strings and tensors not)."""
    return isinstance(value, numbers.Real) and not isinstance(value, (bool,)) and not _is_numpy_bool(value)


def _is_numpy_bool(value) -> bool:
    return type(value).__name__ == "bool_"


def check_bool(option: str, value) -> bool:
    """``True`` / ``False`` only: ``"False"``, ``0`` or ``None`` are a TypeError (``bool("False")`` is True)."""
    if isinstance(value, bool) or _is_numpy_bool(value):
        return bool(value)
    raise WrongTypeError(f"{option} must be True or False, got {value!r} ({type(value).__name__}).")


def check_number(option: str, value, *, low: float | None = None, high: float | None = None,
                 low_open: bool = False, high_open: bool = False, accepts: str = "") -> float:
    """A finite real number in the interval given by ``low``/``high`` (closed unless ``*_open``).

    ``accepts`` says in words what the option means (e.g. "the classifier-free guidance scale")."""
    what = f" ({accepts})" if accepts else ""
    if not _is_number(value):
        raise WrongTypeError(f"{option} must be a number{what}, got {value!r} ({type(value).__name__}).")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{option} must be a finite number{what}, got {number}.")
    below = low is not None and (number <= low if low_open else number < low)
    above = high is not None and (number >= high if high_open else number > high)
    if below and high is None:
        raise ValueError(f"{option} must be a finite number {'>' if low_open else '>='} {low}{what}, got {number}.")
    if below or above:
        left = "(" if low_open else "["
        right = ")" if high_open else "]"
        interval = f"{left}{'-inf' if low is None else low}, {'inf' if high is None else high}{right}"
        raise ValueError(f"{option} must lie in {interval}{what}, got {number}.")
    return number


def check_int(option: str, value, *, low: int | None = None, high: int | None = None, accepts: str = "") -> int:
    """An integer (numpy integers too, never a bool or a float) in ``[low, high]``."""
    what = f" ({accepts})" if accepts else ""
    if high is None:
        wanted = "an integer" if low is None else f"an integer >= {low}"
    else:
        wanted = f"an integer in [{'-inf' if low is None else low}, {high}]"
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or _is_numpy_bool(value):
        raise WrongTypeError(f"{option} must be {wanted}{what}, got {value!r} ({type(value).__name__}).")
    number = int(value)
    if (low is not None and number < low) or (high is not None and number > high):
        raise ValueError(f"{option} must be {wanted}{what}, got {number}.")
    return number


def check_seed(value, option: str = "seed") -> int:
    """A seed for ``torch.Generator.manual_seed``: an integer in ``[0, 2**63)``."""
    return check_int(option, value, low=0, high=SEED_LIMIT - 1, accepts="a seed for torch.Generator")


def check_generator(value, option: str = "generator") -> torch.Generator:
    if not isinstance(value, torch.Generator):
        raise WrongTypeError(f"{option} must be a torch.Generator, got {type(value).__name__}.")
    return value


def check_temperature(value, option: str = "temperature") -> float:
    """Sampling temperature: a finite number > 0 (``greedy=True`` for argmax decoding)."""
    return check_number(option, value, low=0.0, low_open=True, accepts="> 0; use greedy=True for argmax")


def check_top_k(value, option: str = "top_k") -> int | float:
    """An integer >= 0 (a count, 0 = off) or a float fraction of the vocabulary in (0, 1) (0.0 = off)."""
    if isinstance(value, float) and value == 0.0:
        return 0
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return check_int(option, value, low=0, accepts="a count, 0 = off, or a fraction of the vocabulary in (0, 1)")
    return check_number(option, value, low=0.0, high=1.0, low_open=True, high_open=True,
                        accepts="a fraction of the vocabulary, or an integer count >= 0")


def check_top_p(value, option: str = "top_p") -> float:
    return check_number(option, value, low=0.0, high=1.0, accepts="nucleus mass, 0 or 1 = off")


def check_guidance_scale(value, option: str = "cfg_scale") -> float:
    """Classifier-free guidance scale: any finite number (1 = off; nan/inf would turn every logit to nan)."""
    return check_number(option, value, accepts="the classifier-free guidance scale, 1 = off")


def check_guidance_weight(value, option: str) -> float:
    """A multimodal guidance weight: any finite number (negative steers away)."""
    return check_number(option, value, accepts="a guidance weight; negative steers away")


def check_negative_scale(value, option: str = "negative_scale") -> float:
    return check_number(option, value, low=0.0, accepts="the weight of the negative prompt's term, subtracted")


def check_steps(value, option: str) -> int:
    """Decoding steps: an integer >= 1."""
    return check_int(option, value, low=1)


def check_per_modality(option: str, value, check) -> None:
    """``value`` is one value or ``{modality: value}`` (``None`` entries = the default); check each."""
    if isinstance(value, dict):
        for name, item in value.items():
            if item is not None:
                check(item, f"{option}[{name!r}]")
    elif value is not None:
        check(value, option)


def check_pipeline_options(*, num_steps=None, temperature=None, top_k=None, top_p=None, greedy=None,
                           cfg_scale=None, guidance=None, negative_scale=None, seed=None, generator=None,
                           num_diffusion_steps=None, progress=None, return_tokens=None) -> None:
    """Every scalar call option of the any-to-any pipeline (``None`` = not given)."""
    if seed is not None and generator is not None:
        raise ValueError("Give either seed or generator, not both.")
    check_per_modality("num_steps", num_steps, lambda v, o: check_steps(v, o))
    check_per_modality("temperature", temperature, check_temperature)
    check_per_modality("top_k", top_k, check_top_k)
    check_per_modality("top_p", top_p, check_top_p)
    check_per_modality("greedy", greedy, lambda v, o: check_bool(o, v))
    if cfg_scale is not None:
        check_guidance_scale(cfg_scale)
    if guidance is not None and isinstance(guidance, dict):
        for name, weight in guidance.items():
            check_guidance_weight(weight, f"guidance[{name!r}]")
    if negative_scale is not None:
        check_negative_scale(negative_scale)
    if seed is not None:
        check_seed(seed)
    if generator is not None:
        check_generator(generator)
    if num_diffusion_steps is not None:
        check_int("num_diffusion_steps", num_diffusion_steps, low=1, accepts="DDIM steps of the diffusion tokenizers")
    for option, value in (("progress", progress), ("return_tokens", return_tokens)):
        if value is not None:
            check_bool(option, value)


def check_generate_options(*, generator=None, seed=None, naive=False, batch_guidance=None, progress=False,
                           return_known=False, num_sentinels=0, batch_size=None) -> None:
    """The options of :func:`~.sampler.generate` other than tokens and schedule."""
    if generator is not None:
        check_generator(generator)
    if seed is not None:
        check_seed(seed)
    for option, value in (("naive", naive), ("progress", progress), ("return_known", return_known)):
        check_bool(option, value)
    if batch_guidance is not None and not isinstance(batch_guidance, bool):
        raise TypeError(f"batch_guidance must be True, False or None (batched on an accelerator, one view at a time "
                        f"on the CPU), got {batch_guidance!r}.")
    check_int("num_sentinels", num_sentinels, low=0, accepts="[S_i] ids of the text vocabulary")
    if batch_size is not None:
        check_int("batch_size", batch_size, low=1)
