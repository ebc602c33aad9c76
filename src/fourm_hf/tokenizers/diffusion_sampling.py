"""Noise schedule, timesteps and the sampling loop of the DiVAE decoders (fixture README 12.5-12.8).

The schedule and the update rule come from ``diffusers``' schedulers, configured as the reference:

* linear betas ``linspace(1e-4, 0.02, 1000)`` (float32) rescaled to zero terminal SNR
  (``rescale_betas_zero_snr=True``: shift/scale ``sqrt(alpha_bar)`` so the last value is 0 and the
  first unchanged, back to betas, ``alpha_bar = cumprod(1 - beta)``), so ``alpha_bar[999] == 0``;
* ``prediction_type="sample"`` (the UNet predicts ``x_0``), no clipping or thresholding,
  ``set_alpha_to_one=True``, DDIM with ``eta = 0``.

What diffusers does **not** reproduce is the reference's timestep spacing: the reference uses the
*integer* ratio ``r = T // n`` for every mode, so ``n = 3`` trailing steps are ``[999, 666, 333, 0]``
(four model calls), while diffusers' ``"trailing"`` uses a float ratio (``[999, 666, 332]``).
:func:`reference_timesteps` computes the reference's timesteps and :func:`set_reference_timesteps` installs
them on the diffusers scheduler after ``set_timesteps(n)``; the DDIM step then looks back by
``T // n``, exactly as the reference's step does.

Numerics: torch's float32 ``linspace`` is compiled with or without fused multiply-adds depending on
the CPU kernel (on this project's machine ``ATEN_CPU_CAPABILITY=default`` and the native ``avx512``
give 196 different betas and ``alpha_bar`` up to 1.2e-7 apart), so the schedule is reproducible to
about one float32 ulp across machines, not bit for bit: against the fixture (made elsewhere; neither kernel here reproduces it)
the largest difference here is 1.8e-7, far below what moves a decoded pixel by 1e-4. On one machine
diffusers' rescale is the reference's computation bit for bit (``tests/test_divae.py``), and
``alpha_bar[0] = 1 - 1e-4`` and ``alpha_bar[999] = 0`` are exact everywhere.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from tqdm.auto import tqdm

SCHEDULERS = ("ddim", "ddpm")
TIMESTEP_SPACINGS = ("trailing", "leading", "linspace")
BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")


def reference_timesteps(num_steps: int, num_train_timesteps: int = 1000, spacing: str = "trailing") -> torch.LongTensor:
    """The reference's inference timesteps (descending int64), with the integer ratio ``r = T // n``.

    * ``trailing`` (the reference's default): ``arange(T, 0, -r) - 1`` -> ``[999, 666, 333, 0]`` for
      ``n = 3`` (``ceil(T / r)`` model calls, one more than ``n`` when ``r`` does not divide ``T``);
    * ``leading``: ``arange(n) * r`` reversed -> ``[666, 333, 0]``;
    * ``linspace``: ``round(linspace(T, 1, n)) - 1`` -> ``[999, 499, 0]``.
    """
    if isinstance(num_steps, bool) or not isinstance(num_steps, (int, np.integer)) or not 1 <= num_steps <= num_train_timesteps:
        raise ValueError(f"DiVAE sampling: num_steps must be an integer in [1, {num_train_timesteps}], got {num_steps!r}.")
    ratio = num_train_timesteps // num_steps
    if spacing == "trailing":
        steps = np.arange(num_train_timesteps, 0, -ratio).round().astype(np.int64) - 1
    elif spacing == "leading":
        steps = (np.arange(0, num_steps) * ratio).round()[::-1].astype(np.int64)
    elif spacing == "linspace":
        steps = np.linspace(num_train_timesteps, 1, num_steps).round().astype(np.int64) - 1
    else:
        raise ValueError(f"DiVAE sampling: timestep spacing must be one of {TIMESTEP_SPACINGS}, got {spacing!r}.")
    return torch.from_numpy(steps.copy())


def make_scheduler(
    scheduler: str = "ddim",
    num_train_timesteps: int = 1000,
    beta_schedule: str = "linear",
    prediction_type: str = "sample",
    zero_terminal_snr: bool = True,
    clip_sample: bool = False,
    thresholding: bool = False,
):
    """A ``diffusers`` ``DDIMScheduler`` / ``DDPMScheduler`` with the reference's settings (see module docstring)."""
    if scheduler not in SCHEDULERS:
        raise ValueError(f"DiVAE: scheduler must be one of {SCHEDULERS}, got {scheduler!r}.")
    if beta_schedule not in BETA_SCHEDULES:
        raise ValueError(f"DiVAE: beta_schedule must be one of {BETA_SCHEDULES}, got {beta_schedule!r}.")
    if prediction_type not in ("sample", "epsilon", "v_prediction"):
        raise ValueError(f"DiVAE: prediction_type must be 'sample', 'epsilon' or 'v_prediction', got {prediction_type!r}.")
    from diffusers import DDIMScheduler, DDPMScheduler  # imported here: diffusers is only needed for sampling

    common = dict(
        num_train_timesteps=num_train_timesteps,
        beta_start=1e-4,
        beta_end=0.02,
        beta_schedule=beta_schedule,
        prediction_type=prediction_type,
        clip_sample=clip_sample,
        thresholding=thresholding,
        rescale_betas_zero_snr=zero_terminal_snr,
    )
    if scheduler == "ddim":
        return DDIMScheduler(**common, set_alpha_to_one=True, steps_offset=0)
    return DDPMScheduler(**common, variance_type="fixed_small")


def set_reference_timesteps(noise_scheduler, num_steps: int, spacing: str = "trailing") -> torch.LongTensor:
    """Put the reference's timesteps (:func:`reference_timesteps`) on a diffusers scheduler; returns them.

    ``set_timesteps(num_steps)`` first, so the scheduler's ``num_inference_steps`` (which sets the
    DDIM look-back ``T // n``) is the reference's ``n``; then the timesteps are replaced.
    """
    timesteps = reference_timesteps(num_steps, noise_scheduler.config.num_train_timesteps, spacing)
    noise_scheduler.set_timesteps(num_steps)
    noise_scheduler.timesteps = timesteps
    if hasattr(noise_scheduler, "custom_timesteps"):  # DDPM: step back to the next listed timestep
        noise_scheduler.custom_timesteps = True
    return timesteps


def sample_images(
    denoiser: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    noise_scheduler,
    initial_noise: torch.Tensor,
    num_steps: int,
    spacing: str = "trailing",
    generator: torch.Generator | None = None,
    progress: bool = True,
    on_step: Callable[[int, int, torch.Tensor, torch.Tensor], None] | None = None,
) -> torch.Tensor:
    """Run the reverse diffusion from ``initial_noise`` [B, C, H, W]; returns the final sample.

    ``denoiser(x_t, t)`` gives the model output for timestep ``t`` (a 0-dim int64 tensor shared by
    the batch). ``on_step(index, t, model_output, prev_sample)`` (optional) sees every step.
    ``generator`` is used by stochastic schedulers (DDPM); DDIM with eta 0 is deterministic.
    """
    timesteps = set_reference_timesteps(noise_scheduler, num_steps, spacing)
    sample = initial_noise
    for index, timestep in enumerate(tqdm(timesteps, desc="DiVAE decoding", disable=not progress, leave=False)):
        model_output = denoiser(sample, timestep)
        sample = noise_scheduler.step(model_output.float(), int(timestep), sample, generator=generator).prev_sample
        if on_step is not None:
            on_step(index, int(timestep), model_output, sample)
    return sample


__all__ = [
    "BETA_SCHEDULES",
    "SCHEDULERS",
    "TIMESTEP_SPACINGS",
    "make_scheduler",
    "reference_timesteps",
    "sample_images",
    "set_reference_timesteps",
]
