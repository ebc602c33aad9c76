"""4M's sequence format for the text modalities (``caption``, ``det``) under transformers' text options.

A 4M sequence is the tokenizer's ids followed by ``[EOS]``; a batch is one (B, L) int64 array of
left-aligned rows right-padded with ``[PAD]`` = 0 (a row's length is its number of non-zero ids).
transformers' ``TextKwargs`` map onto it as follows:

- ``padding``: ``True`` / ``"longest"`` (4M's default) pads to the longest row, ``"max_length"`` to
  ``max_length``; ``False`` / ``"do_not_pad"`` pads nothing, so the rows must have one length;
- ``max_length``: most ids of a row, [EOS] included (default: the processor's ``max_text_length``);
- ``truncation``: off by default (a longer row is an error naming it); ``True`` / ``"longest_first"``
  / ``"only_first"`` keep its first ``max_length - 1`` ids and [EOS];
- ``pad_to_multiple_of``: the padded length is rounded up to a multiple of it;
- ``padding_side``: only ``"right"``; ``add_special_tokens``: [EOS] is always added.

Any other text option set to a value that would ask for something (``return_attention_mask=True``,
``stride=2``, ...) is rejected: 4M's sequences have no such parts.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

PAD_ID = 0
SEQUENCE_OPTIONS = ("padding", "max_length", "truncation", "pad_to_multiple_of", "padding_side", "verbose")
PADDING = {True: "longest", "longest": "longest", "max_length": "max_length", False: "do_not_pad",
           "do_not_pad": "do_not_pad", None: "longest"}
TRUNCATION = {True: True, "longest_first": True, "only_first": True, False: False, "do_not_truncate": False,
              None: False}


def sequence_options(text_kwargs: Mapping, max_text_length: int) -> dict:
    """Merged ``text_kwargs`` -> ``{"padding", "max_length", "truncation", "pad_to_multiple_of"}`` for
    :func:`fit_sequence` / :func:`pad_sequences`. Raises ValueError for options 4M cannot honour."""
    for key, value in text_kwargs.items():
        if key in SEQUENCE_OPTIONS or value is None or (key == "add_special_tokens" and value):
            continue
        if key.startswith("return_") and value is False:
            continue
        raise ValueError(
            f"FourMProcessor: text option {key}={value!r} is not supported; 4M sequences are ids followed by [EOS], "
            f"right-padded with [PAD] (options: padding, max_length, truncation, pad_to_multiple_of, return_tensors)"
        )
    if text_kwargs.get("padding_side") not in (None, "right"):
        raise ValueError(f"FourMProcessor: padding_side={text_kwargs['padding_side']!r}; 4M rows are left-aligned "
                         "and padded on the right")
    padding = getattr(text_kwargs.get("padding"), "value", text_kwargs.get("padding"))  # PaddingStrategy enums
    truncation = getattr(text_kwargs.get("truncation"), "value", text_kwargs.get("truncation"))
    if padding not in PADDING:
        raise ValueError(f"FourMProcessor: padding={padding!r}; expected True / 'longest', 'max_length' or False")
    if truncation not in TRUNCATION:
        raise ValueError(f"FourMProcessor: truncation={truncation!r}; expected True / 'longest_first' or False")
    max_length = text_kwargs.get("max_length")
    return {
        "padding": PADDING[padding],
        "max_length": int(max_text_length if max_length is None else max_length),
        "truncation": TRUNCATION[truncation],
        "pad_to_multiple_of": text_kwargs.get("pad_to_multiple_of"),
    }


def fit_sequence(ids: list[int], max_length: int, truncation: bool, name: str, eos_id: int) -> list[int]:
    """A sequence (ids + [EOS]) within ``max_length``: cut to its first ``max_length - 1`` ids + [EOS]
    with ``truncation``, else a ValueError naming ``name``."""
    if len(ids) <= max_length:
        return ids
    if not truncation:
        raise ValueError(f"{name}: {len(ids)} tokens (with [EOS]) exceed max_length={max_length}; shorten the text "
                         "or pass truncation=True")
    return ids[: max_length - 1] + [eos_id]


def pad_sequences(sequences: list[list[int]], padding: str = "longest", max_length: int | None = None,
                  pad_to_multiple_of: int | None = None, name: str = "sequence") -> torch.Tensor:
    """Right-pad id lists with [PAD] into a (B, L) int64 tensor: to the longest row, to ``max_length`` or
    not at all (``"do_not_pad"``: the rows must have one length), rounded up to ``pad_to_multiple_of``."""
    lengths = [len(sequence) for sequence in sequences]
    if padding == "max_length":
        length = max_length
    elif padding == "do_not_pad":
        if len(set(lengths)) > 1:
            raise ValueError(f"{name}: padding=False but the rows have different lengths {lengths}; a batch is one "
                             "(B, L) array, so pad it (padding='longest' or 'max_length')")
        length = lengths[0] if lengths else 0
    else:
        length = max(lengths, default=0)
    if pad_to_multiple_of and padding != "do_not_pad":
        length = -(-length // int(pad_to_multiple_of)) * int(pad_to_multiple_of)
    padded = torch.full((len(sequences), length), PAD_ID, dtype=torch.long)
    for row, sequence in enumerate(sequences):
        padded[row, : len(sequence)] = torch.as_tensor(sequence, dtype=torch.long)
    return padded
