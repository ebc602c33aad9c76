"""Placing a neural tokenizer on the accelerator only while it encodes or decodes.

A released DiVAE is 1.15 GB in float32; 4M-21 XL with its RGB, depth and normal DiVAEs does not fit a
12 GB GPU if every tokenizer sits there. With offloading (``FourMProcessor.offload_tokenizers(device)``,
which ``pipeline("any-to-any")`` turns on for accelerators), every tokenizer rests on the CPU and
:func:`placed` moves the one in use to the device for that call, then back, also when the call fails.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn


def module_placement(module: nn.Module) -> tuple[torch.device, torch.dtype] | None:
    """(device, floating dtype) of ``module``'s first parameter; None for a parameterless module."""
    parameter = next(module.parameters(), None)
    return None if parameter is None else (parameter.device, parameter.dtype)


@contextmanager
def placed(module: nn.Module, device: torch.device | str | None, dtype: torch.dtype | None = None):
    """Within the block ``module`` is on ``device`` (and in ``dtype`` when given); afterwards, also after
    an error, it is back on its own device and dtype. ``device`` None (and no dtype) changes nothing.

    Moving is in place (``module.to``), so no second copy of the weights is made. Give ``dtype`` only
    for a round trip that is exact (a wider type): casting to a narrower one and back loses bits.
    """
    home = module_placement(module)
    if home is None or (device is None and dtype is None):
        yield module
        return
    home_device, home_dtype = home
    module.to(device=home_device if device is None else device, dtype=dtype)
    try:
        yield module
    finally:
        module.to(device=home_device, dtype=home_dtype if dtype is not None else None)


__all__ = ["module_placement", "placed"]
