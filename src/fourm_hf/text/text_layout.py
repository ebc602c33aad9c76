"""The reserved-id layout of the 4M text vocabulary: what each leading id means, and checking it.

The layout of the reference 4M tokenizer (so its file loads unchanged):

    id 0                        [PAD]
    id 1                        [UNK]
    id 2                        [SOS]
    id 3                        [EOS]
    ids 4 .. 4+S-1              sentinels [S_0] .. [S_{S-1}]            (S = 200 in the reference)
    next 4*B ids                coordinates v0=0..v0=B-1, v1=0.., v2=0.., v3=0..v3=B-1  (B = 1000)
    next C ids                  class names, one token each, e.g. "wine glass"  (C = 80 in the reference)
    the rest                    WordPieces (alphabet first, then learned pieces)

`layout_tokens` gives the reserved tokens of a layout (as `tokenizers` added tokens), `read_layout`
measures the layout of a built `tokenizers.Tokenizer`, `vocab_layout` measures it on a plain
token -> id vocabulary before a tokenizer is built from it. All three raise ValueError naming the
first id that breaks the layout.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from tokenizers import AddedToken, Tokenizer

PAD_TOKEN = "[PAD]"
UNK_TOKEN = "[UNK]"
SOS_TOKEN = "[SOS]"
EOS_TOKEN = "[EOS]"
CONTROL_TOKENS = (PAD_TOKEN, UNK_TOKEN, SOS_TOKEN, EOS_TOKEN)
FIRST_SENTINEL_ID = len(CONTROL_TOKENS)

DEFAULT_NUM_SENTINELS = 200
DEFAULT_COORD_BINS = 1000
NUM_BOX_COORDS = 4  # v0=xmin, v1=ymin, v2=xmax, v3=ymax

COORDINATE_PATTERN = re.compile(r"^v([0-3])=(\d+)$")
BRACKETED_PATTERN = re.compile(r"^\[[A-Z0-9_]+\]$")


def sentinel_token(index: int) -> str:
    """The text of sentinel ``index``: ``[S_index]``."""
    return f"[S_{index}]"


def coordinate_token(axis: int, bin_index: int) -> str:
    """The text of a coordinate token: ``v{axis}={bin_index}`` (axis 0..3 = xmin, ymin, xmax, ymax)."""
    return f"v{axis}={bin_index}"


def reads_as_special(word: str) -> bool:
    """Whether one word of text would be read as a coordinate or a bracketed special token."""
    return bool(COORDINATE_PATTERN.match(word) or BRACKETED_PATTERN.match(word.upper()))


def normalize_class_name(name: Any) -> str:
    """A class name as the tokenizer sees it: lower case, single spaces. Raises on anything unusable."""
    if not isinstance(name, str):
        raise TypeError(f"class name must be a str, got {type(name).__name__}: {name!r}")
    normalized = " ".join(name.lower().split())
    if not normalized:
        raise ValueError(f"class name must contain a non-space character, got {name!r}")
    for word in normalized.split(" "):
        if reads_as_special(word):
            raise ValueError(
                f"class name {name!r} contains {word!r}, which reads as a coordinate or special token"
            )
    return normalized


def normalize_class_list(class_names: Iterable[str] | None) -> list[str]:
    """`normalize_class_name` of each name; raises on a bare string or a name listed twice."""
    if class_names is None:
        return []
    if isinstance(class_names, str):
        raise TypeError("class_names must be a list of strings, not one string")
    names = [normalize_class_name(name) for name in class_names]
    seen = set()
    for name in names:
        if name in seen:
            raise ValueError(f"class_names lists {name!r} twice (after lower-casing)")
        seen.add(name)
    return names


def layout_tokens(num_sentinels: int, coord_bins: int, class_names: Sequence[str] = ()) -> list[AddedToken]:
    """The reserved tokens, in id order, with the same added-token flags as the reference file.

    Control tokens match anywhere; sentinels and coordinates match as whole words on the raw text;
    class names match as whole words on the lower-cased text.
    """
    if not isinstance(num_sentinels, int) or num_sentinels < 1:
        raise ValueError(f"num_sentinels must be an int >= 1, got {num_sentinels!r}")
    if not isinstance(coord_bins, int) or coord_bins < 2:
        raise ValueError(f"coord_bins must be an int >= 2, got {coord_bins!r}")
    tokens = [AddedToken(token, single_word=False, normalized=False, special=True) for token in CONTROL_TOKENS]
    tokens += [
        AddedToken(sentinel_token(index), single_word=True, normalized=False, special=True)
        for index in range(num_sentinels)
    ]
    tokens += [
        AddedToken(coordinate_token(axis, bin_index), single_word=True, normalized=False, special=True)
        for axis in range(NUM_BOX_COORDS)
        for bin_index in range(coord_bins)
    ]
    tokens += [
        AddedToken(name, single_word=True, normalized=True, special=True) for name in normalize_class_list(class_names)
    ]
    return tokens


def measure_layout(id_to_token: Mapping[int, str], class_ids: Iterable[int], source: str = "text tokenizer") -> dict:
    """Check the control, sentinel and coordinate blocks of ``id_to_token`` and measure the layout.

    Args:
        id_to_token: every id of the vocabulary -> its token.
        class_ids: ids that are class names; the class block is the run of them right after the
            coordinates.
        source: what the vocabulary came from, for the error messages.

    Returns:
        dict with ``num_sentinels``, ``coord_bins``, ``class_names`` (list of str, in id order),
        ``first_coordinate_id``, ``first_class_id``, ``first_wordpiece_id``.
    """
    for index, expected in enumerate(CONTROL_TOKENS):
        if id_to_token.get(index) != expected:
            raise ValueError(f"{source}: id {index} must be {expected!r} (4M layout), found {id_to_token.get(index)!r}")
    num_sentinels = 0
    while id_to_token.get(FIRST_SENTINEL_ID + num_sentinels) == sentinel_token(num_sentinels):
        num_sentinels += 1
    if num_sentinels == 0:
        raise ValueError(
            f"{source}: id {FIRST_SENTINEL_ID} must be the first sentinel '[S_0]' (4M layout), "
            f"found {id_to_token.get(FIRST_SENTINEL_ID)!r}"
        )
    first_coordinate_id = FIRST_SENTINEL_ID + num_sentinels
    coord_bins = 0
    while id_to_token.get(first_coordinate_id + coord_bins) == coordinate_token(0, coord_bins):
        coord_bins += 1
    if coord_bins < 2:
        raise ValueError(
            f"{source}: ids from {first_coordinate_id} (after {num_sentinels} sentinels) must be coordinate tokens "
            f"'v0=0', 'v0=1', ... (4M layout), found {id_to_token.get(first_coordinate_id + coord_bins)!r} "
            f"at id {first_coordinate_id + coord_bins}"
        )
    for axis in range(1, NUM_BOX_COORDS):
        for bin_index in range(coord_bins):
            index = first_coordinate_id + axis * coord_bins + bin_index
            if id_to_token.get(index) != coordinate_token(axis, bin_index):
                raise ValueError(
                    f"{source}: id {index} must be {coordinate_token(axis, bin_index)!r} (4M layout with "
                    f"{coord_bins} bins), found {id_to_token.get(index)!r}"
                )
    first_class_id = first_coordinate_id + NUM_BOX_COORDS * coord_bins
    class_ids = set(class_ids)
    class_names = []
    while first_class_id + len(class_names) in class_ids:
        class_names.append(id_to_token[first_class_id + len(class_names)])
    return {
        "num_sentinels": num_sentinels,
        "coord_bins": coord_bins,
        "class_names": class_names,
        "first_coordinate_id": first_coordinate_id,
        "first_class_id": first_class_id,
        "first_wordpiece_id": first_class_id + len(class_names),
    }


def read_layout(backend: Tokenizer) -> dict[str, Any]:
    """`measure_layout` of a built `tokenizers.Tokenizer`; its class names are the added tokens after the coordinates."""
    id_to_token = {index: token for token, index in backend.get_vocab(with_added_tokens=True).items()}
    return measure_layout(id_to_token, backend.get_added_tokens_decoder())


def vocab_layout(
    vocab: Mapping[str, int], class_names: Sequence[str] | None = None, class_ids: Iterable[int] = ()
) -> dict[str, Any]:
    """Check a plain token -> id vocabulary (all ids, reserved ones included) and measure its layout.

    A vocabulary does not say which tokens after the coordinates are class names, so they are named:
    ``class_names`` must be the tokens at the ids right after the coordinates, in that order; or
    ``class_ids`` (e.g. the added tokens of a saved tokenizer) mark them. With neither there are no
    class names. The ids must be 0..N-1, each once, and no WordPiece may contain whitespace (a
    multi-word class name left unnamed would otherwise pass as an unreachable WordPiece).

    Returns:
        the `measure_layout` dict.
    """
    if not isinstance(vocab, Mapping) or not vocab:
        raise TypeError(f"vocab must be a non-empty dict token -> id, got {type(vocab).__name__}")
    id_to_token: dict[int, str] = {}
    for token, index in vocab.items():
        if not isinstance(token, str) or isinstance(index, bool) or not isinstance(index, int):
            raise TypeError(f"vocab entries must be str -> int, got {token!r} -> {index!r}")
        if index in id_to_token:
            raise ValueError(f"vocab gives id {index} to both {id_to_token[index]!r} and {token!r}")
        id_to_token[index] = token
    missing = next((index for index in range(len(vocab)) if index not in id_to_token), None)
    if missing is not None:
        raise ValueError(f"vocab ids must be 0..{len(vocab) - 1} without gaps; id {missing} is missing")
    layout = measure_layout(id_to_token, class_ids, source="vocab")
    if class_names is not None:
        names = normalize_class_list(class_names)
        if layout["class_names"] and layout["class_names"] != names:
            raise ValueError(
                f"vocab: class_names {names} differ from the class tokens {layout['class_names']} of the added tokens"
            )
        for offset, name in enumerate(names):
            index = layout["first_class_id"] + offset
            if id_to_token.get(index) != name:
                raise ValueError(
                    f"vocab: class name {offset} {name!r} must be at id {index} (right after the coordinates, 4M "
                    f"layout), found {id_to_token.get(index)!r}"
                )
        layout["class_names"] = names
        layout["first_wordpiece_id"] = layout["first_class_id"] + len(names)
    for index in range(layout["first_wordpiece_id"], len(id_to_token)):
        token = id_to_token[index]
        if not token or token != "".join(token.split()):
            raise ValueError(
                f"vocab: token {token!r} at id {index} is no WordPiece (empty or with whitespace); a multi-word "
                f"class name must come right after the coordinates and be named with class_names="
            )
    return layout
