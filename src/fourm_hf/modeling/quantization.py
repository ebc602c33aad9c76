"""int8 inference on CPUs: PyTorch's dynamic quantisation of a FourMModel's linear layers.

    model = FourMModel.from_pretrained(folder)            # float32
    model = quantize_int8(model)                           # decoder blocks + output heads in int8

Each chosen ``nn.Linear`` becomes ``torch.ao.nn.quantized.dynamic.Linear``: its weight is stored as
int8 (one scale per output row), and each call quantises its input on the fly and multiplies with
int8 kernels (fbgemm / x86), returning float32. On the CPU this package is measured on, the 30000-way
caption head at batch 1 ran 3.7x and 196-row products 2.4-4.1x faster than float32
(``benchmarks/bench_fast_decoding.py --kernels``, benchmarks/RESULTS.md). Logits still leave the heads
as float32 and sampling works on float32 probabilities.

Parts (``parts=``): ``"decoder"`` (every decoder block and the context projection), ``"heads"``
(the untied output projections of the target modalities), ``"encoder"`` (every encoder block).
Token tables, LayerNorms and the patch embedding stay float32. Tied heads (the token table is the
output projection) stay float32 too, since the table is also read as an embedding.

This is an inference transform: the quantised model cannot be trained, is CPU-only, and is not
saved by ``save_pretrained`` (quantise again after loading). Only float32 parts are quantised; a
model in another dtype is refused rather than silently upcast.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

QUANTIZABLE_PARTS = ("encoder", "decoder", "heads")
DEFAULT_PARTS = ("decoder", "heads")


def _modules_of(model, part: str) -> list[nn.Module]:
    """The modules whose ``nn.Linear`` children a part quantises."""
    if part == "encoder":
        return list(model.encoder)
    if part == "decoder":
        return list(model.decoder) + [model]  # the model itself for decoder_proj_context
    return [embedding for embedding in model.decoder_embeddings.values() if embedding.to_logits is not None]


def _quantize_children(module: nn.Module, names: list[str] | None) -> None:
    """Swap ``module``'s linear layers (all descendants, or only the direct children ``names``) for
    dynamic int8 ones, in place."""
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    # torch.ao.quantization is deprecated upstream in favour of torchao, whose eager int8 CPU kernels
    # measured slower than float32 here; its deprecation warnings are not the user's to act on.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if names is None:
            quantize_dynamic(module, {nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8, inplace=True)
        else:
            quantize_dynamic(module, {name: per_channel_dynamic_qconfig for name in names}, dtype=torch.qint8, inplace=True)


def quantize_int8(model, parts: tuple[str, ...] | list[str] = DEFAULT_PARTS):
    """Quantise ``model``'s linear layers in ``parts`` to dynamic int8, in place; returns the model.

    Args:
        model: a float32 :class:`~fourm_hf.FourMModel` on the CPU, in eval mode.
        parts: any of ``"encoder"``, ``"decoder"``, ``"heads"`` (default decoder and heads).
    Raises:
        ValueError: an unknown part, a model on another device than the CPU, or a part already quantised.
        TypeError: not a FourMModel, or a part whose weights are not float32.
    """
    if not (hasattr(model, "decoder_embeddings") and hasattr(model, "encoder") and hasattr(model, "decoder")):
        raise TypeError(f"quantize_int8: expected a FourMModel, got {type(model).__name__}.")
    parts = [parts] if isinstance(parts, str) else list(parts)
    unknown = [part for part in parts if part not in QUANTIZABLE_PARTS]
    if unknown or not parts:
        raise ValueError(f"quantize_int8: parts must be a non-empty subset of {QUANTIZABLE_PARTS}, got {parts!r}.")
    for part in parts:
        if not _modules_of(model, part):
            raise ValueError(f"quantize_int8: part {part!r} has nothing to quantise in this model (its output heads are "
                             "tied to the token tables, which stay float32); leave it out of parts.")
        for module in _modules_of(model, part):
            linears = _direct_linears(module, part)
            if not linears:
                raise ValueError(f"quantize_int8: part {part!r} is already quantised (it has no float nn.Linear left).")
            for linear in linears:
                if linear.weight.device.type != "cpu":
                    raise ValueError(f"quantize_int8: int8 dynamic quantisation runs on the CPU; part {part!r} is on "
                                     f"{linear.weight.device}. Move the model to the CPU first.")
                if linear.weight.dtype != torch.float32:
                    raise TypeError(f"quantize_int8: part {part!r} has {linear.weight.dtype} weights; int8 quantisation "
                                    "starts from float32 (load the model without dtype=, or .float() it first).")
    model.eval()
    for part in parts:
        for module in _modules_of(model, part):
            _quantize_children(module, ["decoder_proj_context"] if module is model else None)
    return model


def _direct_linears(module: nn.Module, part: str) -> list[nn.Linear]:
    """The float ``nn.Linear`` layers a part would swap in ``module``."""
    if part == "decoder" and hasattr(module, "decoder_proj_context"):
        return [module.decoder_proj_context] if type(module.decoder_proj_context) is nn.Linear else []
    return [child for child in module.modules() if type(child) is nn.Linear]


def quantized_parts(model) -> list[str]:
    """The parts of ``model`` that :func:`quantize_int8` has quantised (those with no float linear left)."""
    return [part for part in QUANTIZABLE_PARTS
            if _modules_of(model, part) and not any(_direct_linears(module, part) for module in _modules_of(model, part))]


__all__ = ["DEFAULT_PARTS", "QUANTIZABLE_PARTS", "quantize_int8", "quantized_parts"]
