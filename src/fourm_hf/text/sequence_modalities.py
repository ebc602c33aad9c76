"""4M-21's text-serialised modalities in the processor: structured data <-> text <-> token ids.

``metadata``, ``color_palette``, ``human_poses`` and ``sam_instance`` are sequences of the text
tokenizer, written in the reference's formats (:mod:`.text_serialization`). This module is the
processor's side of them:

* :func:`encode_sequences`: structured data (or its text) per sample -> ``(B, L)`` int64 ids followed
  by ``[EOS]``, right-padded with ``[PAD]`` (the layout of ``caption``);
* :func:`decode_sequences`: generated ids -> one ``{"text", "data", "error"}`` dict per sample. ``data``
  is the parsed structure; generated text that does not parse gives ``data`` None and the parser's
  message in ``error`` (never an exception).

Structured forms, as inputs and as ``data`` of outputs:

* ``metadata``: ``{key id: binned value}`` (ints; the key id indexes the reference's metadata key
  list, which is not bundled here: with ``metadata_keys=[...]`` names are used instead);
* ``color_palette``: :class:`ColorPalette` (inputs also take a list of ``(r, g, b)`` bins);
* ``human_poses``: a list of :class:`HumanPose` (inputs also take dicts of its fields);
* ``sam_instance``: a list of :class:`SamPoint` (inputs also take dicts ``{"point", "masks"}``).

A string input is taken as the serialisation itself and parsed first, so it must be well formed.

Pose and SAM token ids are written ``v0=k`` below ``id_split`` and ``v1=(k - id_split)`` above. The
reference splits at 512 (its tokenizer has 1000 coordinate bins); a tokenizer with fewer bins splits
at its bin count (:func:`id_split_for`), the convention of the shrunk fixtures.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import torch

from .text_serialization import (
    ID_SPLIT,
    ColorPalette,
    HumanPose,
    SamMask,
    SamPoint,
    coordinate,
    parse_serialized,
    serialize_human_poses,
    serialize_sam_instances,
)

# Modality -> most ids of one sample, [EOS] included (the registry's released lengths,
# ``modalities.FOURM21_MODALITIES``; tests check that they agree).
SEQUENCE_MAX_LENGTHS = {"metadata": 40, "color_palette": 23, "human_poses": 275, "sam_instance": 290}
SEQUENCE_MODALITIES = tuple(SEQUENCE_MAX_LENGTHS)
PAD_ID = 0
_COORDINATE = re.compile(r"^v[0-3]=(\d+)$")


def id_split_for(tokenizer) -> int:
    """Where pose / SAM token ids switch from ``v0=`` to ``v1=``: 512, or fewer coordinate bins."""
    return min(ID_SPLIT, int(tokenizer.coord_bins))


# ---- structured data -> text ----------------------------------------------------------------------------
def to_text(modality: str, value, id_split: int = ID_SPLIT, metadata_keys: Sequence[str] | None = None) -> str:
    """One sample's structured ``value`` (module docstring) -> the reference's text."""
    _check_modality(modality)
    if isinstance(value, str):
        parse_serialized(modality, value, id_split=id_split, metadata_keys=metadata_keys)  # must be well formed
        return value
    if modality == "metadata":
        return _metadata_text(value, metadata_keys)
    if modality == "color_palette":
        palette = value if isinstance(value, ColorPalette) else ColorPalette([_triple(c) for c in _items(value, modality)])
        return palette.serialize()
    if modality == "human_poses":
        return serialize_human_poses([_human(item) for item in _items(value, modality)], id_split)
    return serialize_sam_instances([_sam_point(item) for item in _items(value, modality)], id_split)


def _metadata_text(values, keys: Sequence[str] | None) -> str:
    if not isinstance(values, Mapping):
        raise ValueError(f"metadata: expected a dict {{key: binned value}}, got {type(values).__name__}.")
    chunks = []
    for key, value in values.items():
        if keys is not None and key in keys:
            key = list(keys).index(key)
        if isinstance(key, bool) or not isinstance(key, int):
            known = f"one of {list(keys)} or " if keys is not None else ""
            raise ValueError(f"metadata: key {key!r} must be {known}an integer key id >= 0.")
        chunks.append(f"{coordinate(1, key)} {coordinate(0, _integer(value, f'metadata[{key!r}]'))}")
    return " ".join(chunks)


def _items(value, modality: str) -> list:
    if isinstance(value, (list, tuple)):
        return list(value)
    raise ValueError(f"{modality}: expected a list (one entry per colour / person / point), got {type(value).__name__}.")


def _integer(value, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{where}: expected an integer bin >= 0, got {value!r}.")
    return value


def _triple(color) -> tuple[int, int, int]:
    if not isinstance(color, (list, tuple)) or len(color) != 3:
        raise ValueError(f"color_palette: a colour is an (r, g, b) triple of bins, got {color!r}.")
    return tuple(_integer(channel, "color_palette colour") for channel in color)


def _human(item) -> HumanPose:
    if isinstance(item, HumanPose):
        return item
    if isinstance(item, Mapping):
        try:
            return HumanPose(**item)
        except TypeError as error:
            raise ValueError(f"human_poses: a person dict needs the HumanPose fields (box, global_orientation, "
                             f"pose_ids, camera, shape): {error}") from None
    raise ValueError(f"human_poses: expected HumanPose entries (or dicts of its fields), got {type(item).__name__}.")


def _sam_point(item) -> SamPoint:
    if isinstance(item, SamPoint):
        return item
    if isinstance(item, Mapping) and "point" in item:
        try:
            masks = [m if isinstance(m, SamMask) else SamMask(tuple(m["box"]), list(m["token_ids"]))
                     for m in item.get("masks", [])]
        except (KeyError, TypeError) as error:
            raise ValueError(f"sam_instance: a mask is a SamMask or a dict {{'box', 'token_ids'}}: {error!r}") from None
        return SamPoint(tuple(item["point"]), masks)
    raise ValueError(f"sam_instance: expected SamPoint entries (or dicts {{'point', 'masks'}}), got {item!r}.")


# ---- batches ---------------------------------------------------------------------------------------------
def is_single_sample(modality: str, value) -> bool:
    """Whether ``value`` is one sample's data (else a list with one entry per sample)."""
    if isinstance(value, (str, Mapping, ColorPalette)):
        return True
    if not isinstance(value, (list, tuple)) or not value:
        return True  # not a list, or an empty one: one sample (its own checks report what is wrong)
    first = value[0]
    if modality == "color_palette":  # one palette is a list of (r, g, b), a batch a list of palettes
        return isinstance(first, (list, tuple)) and all(isinstance(c, int) for c in first)
    if modality == "metadata":
        return False
    return isinstance(first, (HumanPose, SamPoint, Mapping))


def sample_list(modality: str, value) -> tuple[list, bool]:
    """``value`` -> (one entry per sample, whether it was a batch)."""
    if is_single_sample(modality, value):
        return [value], False
    return list(value), True


# ---- text -> ids and back --------------------------------------------------------------------------------
def encode_sequences(tokenizer, inputs: Mapping, metadata_keys: Sequence[str] | None = None) -> dict[str, torch.Tensor]:
    """``{modality: one sample's data or a list of them}`` -> ``{modality: (B, L) int64}``.

    Each row is the ids of the serialisation followed by ``[EOS]``, right-padded with ``[PAD]``.
    Raises ValueError naming the modality for malformed data, a bin the tokenizer has no coordinate
    token for, a word it cannot represent, or more ids than the modality's released length.
    """
    id_split = id_split_for(tokenizer)
    encoded = {}
    for modality, value in inputs.items():
        samples, _ = sample_list(modality, value)
        rows = []
        for index, sample in enumerate(samples):
            where = modality if len(samples) == 1 else f"{modality}[{index}]"
            text = to_text(modality, sample, id_split, metadata_keys)
            rows.append(_text_ids(tokenizer, modality, text, where))
        width = max(len(row) for row in rows)
        padded = torch.full((len(rows), width), PAD_ID, dtype=torch.long)
        for row, ids in enumerate(rows):
            padded[row, : len(ids)] = torch.as_tensor(ids, dtype=torch.long)
        encoded[modality] = padded
    return encoded


def _text_ids(tokenizer, modality: str, text: str, where: str) -> list[int]:
    if not text.strip():
        raise ValueError(f"{where}: nothing to encode (no entries); leave the modality out instead.")
    bins = int(tokenizer.coord_bins)
    for word in text.split():
        match = _COORDINATE.match(word)
        if match and int(match[1]) >= bins:
            raise ValueError(f"{where}: {word!r} is outside the text tokenizer's {bins} coordinate bins "
                             f"(v0=0 .. v0={bins - 1}); bin the values first.")
    ids = tokenizer.encode_for_model(text, where, SEQUENCE_MAX_LENGTHS[modality])
    if tokenizer.unk_token_id in ids:
        unknown = [word for word in text.split() if tokenizer.unk_token_id in tokenizer(word, add_special_tokens=False)["input_ids"]]
        raise ValueError(f"{where}: the text tokenizer has no token for {unknown}; it cannot write this modality.")
    return ids


def decode_sequences(tokenizer, modality: str, rows: Sequence[Sequence[int]],
                     metadata_keys: Sequence[str] | None = None) -> list[dict]:
    """Generated id rows of ``modality`` -> per row ``{"text": str, "data": parsed or None, "error": str or None}``."""
    _check_modality(modality)
    id_split = id_split_for(tokenizer)
    decoded = []
    for row in rows:
        text = tokenizer.decode_text(row)
        try:
            data, error = parse_serialized(modality, text, id_split=id_split, metadata_keys=metadata_keys), None
        except (ValueError, TypeError, IndexError) as exception:
            message = str(exception)
            data, error = None, message if message.startswith(modality) else f"{modality}: {message}"
        decoded.append({"text": text, "data": data, "error": error})
    return decoded


def _check_modality(modality: str) -> None:
    if modality not in SEQUENCE_MAX_LENGTHS:
        raise ValueError(f"{modality!r} is not a text-serialised 4M-21 modality; expected one of {list(SEQUENCE_MODALITIES)}.")


__all__ = ["SEQUENCE_MAX_LENGTHS", "SEQUENCE_MODALITIES", "decode_sequences", "encode_sequences", "id_split_for",
           "is_single_sample", "sample_list", "to_text"]
