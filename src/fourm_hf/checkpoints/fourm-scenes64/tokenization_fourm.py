"""The 4M text tokenizer: WordPiece with a fixed id layout, and bounding boxes <-> text.

Captions and bounding boxes are both sequences of ids from one WordPiece vocabulary whose first
ids are reserved, in this order (the layout of the reference 4M tokenizer, so its file loads
unchanged):

    id 0                        [PAD]
    id 1                        [UNK]
    id 2                        [SOS]
    id 3                        [EOS]
    ids 4 .. 4+S-1              sentinels [S_0] .. [S_{S-1}]            (S = 200 in the reference)
    next 4*B ids                coordinates v0=0..v0=B-1, v1=0.., v2=0.., v3=0..v3=B-1  (B = 1000)
    next C ids                  class names, one token each, e.g. "wine glass"  (C = 80 in the reference)
    the rest                    WordPieces (alphabet first, then learned pieces)

Every reserved token is a `tokenizers` added token, so "v0=12" or "wine glass" in a text is one id.
Text is lower-cased and split like BERT (BertNormalizer + BertPreTokenizer).

Boxes are serialised as ``v0=xmin v1=ymin v2=xmax v3=ymax label v0=... label ...``, boxes sorted by
the distance of their top-left corner to the origin. Coordinates are normalised to [0, 1] and
binned with ``round(value * (B - 1))``, so 0 and 1 map to the first and last bin exactly and a
bin decodes back to ``bin / (B - 1)``: a round trip moves a coordinate by at most half a bin.

Public API:
    FourMTextTokenizer        the transformers tokenizer (registered with AutoTokenizer)
    train_text_tokenizer      learn a WordPiece vocabulary with this layout from a caption corpus
    boxes_to_text / text_to_boxes
    ``fourm-hf train-text-tokenizer`` (``add_arguments`` / ``main`` below)
"""

from __future__ import annotations

import math
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Sequence
from typing import Any

from tokenizers import AddedToken, Tokenizer, decoders, normalizers, pre_tokenizers
from tokenizers.models import WordPiece
from tokenizers.trainers import WordPieceTrainer
from transformers import PreTrainedTokenizerFast

PAD_TOKEN = "[PAD]"
UNK_TOKEN = "[UNK]"
SOS_TOKEN = "[SOS]"
EOS_TOKEN = "[EOS]"
CONTROL_TOKENS = (PAD_TOKEN, UNK_TOKEN, SOS_TOKEN, EOS_TOKEN)
FIRST_SENTINEL_ID = len(CONTROL_TOKENS)

DEFAULT_NUM_SENTINELS = 200
DEFAULT_COORD_BINS = 1000
NUM_BOX_COORDS = 4  # v0=xmin, v1=ymin, v2=xmax, v3=ymax
BOX_COORD_NAMES = ("xmin", "ymin", "xmax", "ymax")

_SENTINEL_PATTERN = re.compile(r"^\[S_(\d+)\]$")
_COORDINATE_PATTERN = re.compile(r"^v([0-3])=(\d+)$")
_BRACKETED_PATTERN = re.compile(r"^\[[A-Z0-9_]+\]$")


def sentinel_token(index: int) -> str:
    """The text of sentinel ``index``: ``[S_index]``."""
    return f"[S_{index}]"


def coordinate_token(axis: int, bin_index: int) -> str:
    """The text of a coordinate token: ``v{axis}={bin_index}`` (axis 0..3 = xmin, ymin, xmax, ymax)."""
    return f"v{axis}={bin_index}"


def normalize_class_name(name: Any) -> str:
    """A class name as the tokenizer sees it: lower case, single spaces. Raises on anything unusable."""
    if not isinstance(name, str):
        raise TypeError(f"class name must be a str, got {type(name).__name__}: {name!r}")
    normalized = " ".join(name.lower().split())
    if not normalized:
        raise ValueError(f"class name must contain a non-space character, got {name!r}")
    for word in normalized.split(" "):
        if _COORDINATE_PATTERN.match(word) or _BRACKETED_PATTERN.match(word.upper()):
            raise ValueError(
                f"class name {name!r} contains {word!r}, which reads as a coordinate or special token"
            )
    return normalized


def _normalize_class_list(class_names: Iterable[str] | None) -> list[str]:
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
        AddedToken(name, single_word=True, normalized=True, special=True) for name in _normalize_class_list(class_names)
    ]
    return tokens


def _empty_wordpiece_backend() -> Tokenizer:
    """A `tokenizers.Tokenizer` with the reference's WordPiece model, normaliser, pre-tokenizer and decoder."""
    backend = Tokenizer(WordPiece(unk_token=UNK_TOKEN, continuing_subword_prefix="##", max_input_chars_per_word=100))
    backend.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=True
    )
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.decoder = decoders.WordPiece(prefix="##", cleanup=True)
    return backend


def read_layout(backend: Tokenizer) -> dict[str, Any]:
    """Check that a `tokenizers.Tokenizer` has the 4M id layout and measure it.

    Returns:
        dict with ``num_sentinels``, ``coord_bins``, ``class_names`` (list of str, in id order),
        ``first_coordinate_id``, ``first_class_id``, ``first_wordpiece_id``.
    """
    id_to_token = {index: token for token, index in backend.get_vocab(with_added_tokens=True).items()}
    for index, expected in enumerate(CONTROL_TOKENS):
        if id_to_token.get(index) != expected:
            raise ValueError(
                f"text tokenizer: id {index} must be {expected!r} (4M layout), found {id_to_token.get(index)!r}"
            )
    num_sentinels = 0
    while id_to_token.get(FIRST_SENTINEL_ID + num_sentinels) == sentinel_token(num_sentinels):
        num_sentinels += 1
    if num_sentinels == 0:
        raise ValueError(f"text tokenizer: id {FIRST_SENTINEL_ID} must be the first sentinel '[S_0]' (4M layout)")
    first_coordinate_id = FIRST_SENTINEL_ID + num_sentinels
    coord_bins = 0
    while id_to_token.get(first_coordinate_id + coord_bins) == coordinate_token(0, coord_bins):
        coord_bins += 1
    if coord_bins < 2:
        raise ValueError(
            f"text tokenizer: ids from {first_coordinate_id} must be coordinate tokens 'v0=0', 'v0=1', ... (4M layout)"
        )
    for axis in range(1, NUM_BOX_COORDS):
        for bin_index in range(coord_bins):
            index = first_coordinate_id + axis * coord_bins + bin_index
            if id_to_token.get(index) != coordinate_token(axis, bin_index):
                raise ValueError(
                    f"text tokenizer: id {index} must be {coordinate_token(axis, bin_index)!r} (4M layout with "
                    f"{coord_bins} bins), found {id_to_token.get(index)!r}"
                )
    first_class_id = first_coordinate_id + NUM_BOX_COORDS * coord_bins
    added_ids = set(backend.get_added_tokens_decoder())
    class_names = []
    while first_class_id + len(class_names) in added_ids:
        class_names.append(id_to_token[first_class_id + len(class_names)])
    return {
        "num_sentinels": num_sentinels,
        "coord_bins": coord_bins,
        "class_names": class_names,
        "first_coordinate_id": first_coordinate_id,
        "first_class_id": first_class_id,
        "first_wordpiece_id": first_class_id + len(class_names),
    }


class FourMTextTokenizer(PreTrainedTokenizerFast):
    """WordPiece tokenizer for 4M captions and boxes, with the reference id layout (see the module docstring).

    Build it from a `tokenizers` file or object with that layout, e.g. the reference's
    ``FourMTextTokenizer(tokenizer_file="text_tokenizer_4m_wordpiece_30k.json")``, train one with
    `train_text_tokenizer`, or load a saved one with ``AutoTokenizer.from_pretrained(folder)``.

    ``tokenizer(text)`` gives the same ids as the raw `tokenizers` file and adds nothing. The model's
    sequence format (ids followed by ``[EOS]``) comes from `encode_for_model` / `encode_boxes`.

    Decoding: the backend marks every reserved token as special, so the generic
    ``skip_special_tokens=True`` would drop coordinates and class names. Here it drops only
    ``[PAD]``, ``[SOS]``, ``[EOS]`` and sentinels, which is also what `decode_text` does.
    """

    vocab_files_names = {"tokenizer_file": "tokenizer.json"}
    model_input_names = ["input_ids", "attention_mask"]

    def __init__(
        self,
        *args,
        pad_token: str = PAD_TOKEN,
        unk_token: str = UNK_TOKEN,
        bos_token: str = SOS_TOKEN,
        eos_token: str = EOS_TOKEN,
        clean_up_tokenization_spaces: bool = False,
        **kwargs,
    ):
        if kwargs.get("tokenizer_object") is None and kwargs.get("tokenizer_file") is None:
            raise ValueError(
                "FourMTextTokenizer needs `tokenizer_file` (a tokenizers JSON file with the 4M layout) or "
                "`tokenizer_object`; to make a new one use `train_text_tokenizer`."
            )
        tokenizer_file = kwargs.get("tokenizer_file")
        if kwargs.get("tokenizer_object") is None and not os.path.isfile(tokenizer_file):
            raise ValueError(f"FourMTextTokenizer: tokenizer_file {tokenizer_file!r} is not a file")
        super().__init__(
            *args,
            pad_token=pad_token,
            unk_token=unk_token,
            bos_token=bos_token,
            eos_token=eos_token,
            clean_up_tokenization_spaces=clean_up_tokenization_spaces,
            **kwargs,
        )
        self._layout = read_layout(self._tokenizer)

    @classmethod
    def convert_to_native_format(cls, trust_remote_code: bool = False, **kwargs):
        # The base class turns `tokenizer_file` into vocab/merges for subclasses that define
        # `__init__` (and would rebuild a BPE model). Ours loads the file as it is.
        return kwargs

    @classmethod
    def from_tokenizers_json(cls, path: str | os.PathLike, **kwargs) -> "FourMTextTokenizer":
        """Load a `tokenizers` JSON file with the 4M layout (e.g. the reference's) unchanged."""
        return cls(tokenizer_file=str(path), **kwargs)

    # ----- layout -----

    @property
    def num_sentinels(self) -> int:
        return self._layout["num_sentinels"]

    @property
    def coord_bins(self) -> int:
        return self._layout["coord_bins"]

    @property
    def class_names(self) -> list[str]:
        """Class names that are single tokens, in id order."""
        return list(self._layout["class_names"])

    @property
    def first_wordpiece_id(self) -> int:
        return self._layout["first_wordpiece_id"]

    @property
    def sos_token_id(self) -> int:
        return self.bos_token_id

    def sentinel_token_id(self, index: int) -> int:
        """Id of ``[S_index]`` (= 4 + index)."""
        if not isinstance(index, int) or not 0 <= index < self.num_sentinels:
            raise ValueError(f"sentinel index must be an int in [0, {self.num_sentinels}), got {index!r}")
        return FIRST_SENTINEL_ID + index

    def is_sentinel(self, token_id: int) -> bool:
        return FIRST_SENTINEL_ID <= int(token_id) < FIRST_SENTINEL_ID + self.num_sentinels

    def coordinate_token_id(self, axis: int, bin_index: int) -> int:
        """Id of ``v{axis}={bin_index}``."""
        if not isinstance(axis, int) or not 0 <= axis < NUM_BOX_COORDS:
            raise ValueError(f"coordinate axis must be an int in [0, {NUM_BOX_COORDS}), got {axis!r}")
        if not isinstance(bin_index, int) or not 0 <= bin_index < self.coord_bins:
            raise ValueError(f"coordinate bin must be an int in [0, {self.coord_bins}), got {bin_index!r}")
        return self._layout["first_coordinate_id"] + axis * self.coord_bins + bin_index

    def is_coordinate(self, token_id: int) -> bool:
        first = self._layout["first_coordinate_id"]
        return first <= int(token_id) < first + NUM_BOX_COORDS * self.coord_bins

    def control_token_ids(self) -> set[int]:
        """Ids that carry no content: [PAD], [SOS], [EOS] and all sentinels."""
        ids = {self.pad_token_id, self.bos_token_id, self.eos_token_id}
        ids.update(range(FIRST_SENTINEL_ID, FIRST_SENTINEL_ID + self.num_sentinels))
        return ids

    # ----- the model's sequence format -----

    def encode_for_model(self, text: str, modality: str = "caption", max_length: int | None = None) -> list[int]:
        """Ids of ``text`` followed by ``[EOS]``: one sequence modality of a sample (no [SOS], no padding).

        Raises ValueError for empty text or when the ids (with [EOS]) exceed ``max_length``.
        """
        if not isinstance(text, str):
            raise TypeError(f"{modality}: text must be a str, got {type(text).__name__}")
        if not text.strip():
            raise ValueError(f"{modality}: text is empty; expected at least one non-space character")
        return self._finish_sequence(self(text, add_special_tokens=False)["input_ids"], modality, max_length)

    def encode_boxes(
        self, boxes: Sequence[dict], modality: str = "det", max_length: int | None = None, class_names=None
    ) -> list[int]:
        """Ids of `boxes_to_text` (with this tokenizer's bins) followed by ``[EOS]``. No boxes gives ``[EOS]``."""
        text = boxes_to_text(boxes, coord_bins=self.coord_bins, class_names=class_names, modality=modality)
        ids = self(text, add_special_tokens=False)["input_ids"] if text else []
        return self._finish_sequence(ids, modality, max_length)

    def _finish_sequence(self, ids: list[int], modality: str, max_length: int | None) -> list[int]:
        ids = list(ids) + [self.eos_token_id]
        if max_length is not None and len(ids) > max_length:
            raise ValueError(
                f"{modality}: {len(ids)} tokens (with [EOS]) exceed max_length={max_length}; shorten the text"
            )
        return ids

    # ----- decoding -----

    def decode_text(self, token_ids: Iterable[int], keep_sentinels: bool = False) -> str:
        """Text of ``token_ids`` without [PAD], [SOS], [EOS] (and sentinels unless ``keep_sentinels``).

        Coordinate tokens, class names and [UNK] are kept. Ids outside the vocabulary become [UNK].
        """
        dropped = self.control_token_ids()
        if keep_sentinels:
            dropped -= set(range(FIRST_SENTINEL_ID, FIRST_SENTINEL_ID + self.num_sentinels))
        vocabulary_size = len(self)
        kept = []
        for token_id in token_ids:
            token_id = int(token_id)
            if token_id in dropped:
                continue
            kept.append(token_id if 0 <= token_id < vocabulary_size else self.unk_token_id)
        return self._tokenizer.decode(kept, skip_special_tokens=False)

    def _decode(self, token_ids, skip_special_tokens: bool = False, clean_up_tokenization_spaces=None, **kwargs) -> str:
        if skip_special_tokens:
            if isinstance(token_ids, int):
                token_ids = [token_ids]
            if isinstance(token_ids, dict):
                token_ids = token_ids["input_ids"]
            return self.decode_text(token_ids)
        return super()._decode(
            token_ids, skip_special_tokens=False, clean_up_tokenization_spaces=clean_up_tokenization_spaces, **kwargs
        )

    def decode_boxes(self, token_ids: Iterable[int], class_names: Sequence[str] | None = None) -> list[dict]:
        """Boxes from generated ids (see `text_to_boxes`); never raises on malformed ids."""
        try:
            text = self.decode_text(token_ids, keep_sentinels=True)
        except (TypeError, ValueError, OverflowError):
            return []
        return text_to_boxes(text, coord_bins=self.coord_bins, class_names=class_names)


# ----- boxes <-> text -----


def coordinate_to_bin(value: float, coord_bins: int) -> int:
    """Bin of a coordinate in [0, 1]: ``round(value * (coord_bins - 1))`` (half to even)."""
    return int(round(value * (coord_bins - 1)))


def bin_to_coordinate(bin_index: int, coord_bins: int) -> float:
    """Coordinate in [0, 1] of a bin: ``bin_index / (coord_bins - 1)``."""
    return bin_index / (coord_bins - 1)


def _validate_box(index: int, box: Any, class_names: set[str] | None, modality: str) -> tuple[str, list[float]]:
    if not isinstance(box, dict):
        raise TypeError(f"{modality}: box {index} must be a dict with 'label' and 'box', got {type(box).__name__}")
    for field in ("label", "box"):
        if field not in box:
            raise ValueError(f"{modality}: box {index} has no {field!r} field; expected {{'label': str, 'box': [...]}}")
    label = box["label"]
    if not isinstance(label, str) or not label.strip():
        raise ValueError(f"{modality}: box {index} field 'label' must be a non-empty str, got {label!r}")
    label = normalize_class_name(label) if class_names is not None else " ".join(label.split())
    if class_names is not None and label not in class_names:
        raise ValueError(f"{modality}: box {index} field 'label' {box['label']!r} is not a known class name")
    for word in label.split(" "):
        if _COORDINATE_PATTERN.match(word) or _BRACKETED_PATTERN.match(word.upper()):
            raise ValueError(
                f"{modality}: box {index} field 'label' {label!r} contains {word!r}, which reads as a special token"
            )
    coords = box["box"]
    if isinstance(coords, (str, bytes)) or not isinstance(coords, Sequence) and not hasattr(coords, "__len__"):
        raise TypeError(f"{modality}: box {index} field 'box' must be 4 numbers [xmin, ymin, xmax, ymax]")
    coords = list(coords)
    if len(coords) != NUM_BOX_COORDS:
        raise ValueError(
            f"{modality}: box {index} field 'box' has {len(coords)} values; expected 4 [xmin, ymin, xmax, ymax]"
        )
    values = []
    for name, value in zip(BOX_COORD_NAMES, coords):
        try:
            value = float(value)
        except (TypeError, ValueError):
            raise TypeError(f"{modality}: box {index} field 'box' {name} must be a number, got {value!r}") from None
        if not math.isfinite(value) or not 0.0 <= value <= 1.0:
            raise ValueError(
                f"{modality}: box {index} field 'box' {name}={value} is outside [0, 1]; boxes are normalised xyxy"
            )
        values.append(value)
    xmin, ymin, xmax, ymax = values
    if xmin > xmax:
        raise ValueError(f"{modality}: box {index} field 'box' has xmin={xmin} > xmax={xmax}")
    if ymin > ymax:
        raise ValueError(f"{modality}: box {index} field 'box' has ymin={ymin} > ymax={ymax}")
    return label, values


def boxes_to_text(
    boxes: Sequence[dict],
    coord_bins: int = DEFAULT_COORD_BINS,
    class_names: Iterable[str] | None = None,
    modality: str = "det",
) -> str:
    """Serialise boxes as ``v0=xmin v1=ymin v2=xmax v3=ymax label ...``.

    Args:
        boxes: list of ``{"label": str, "box": [xmin, ymin, xmax, ymax]}``, coordinates in [0, 1].
        coord_bins: number of bins per coordinate (coordinates binned by `coordinate_to_bin`).
        class_names: when given, every label must be one of them (compared lower-cased).

    Boxes are sorted by the distance of their top-left corner to the origin (ties keep input
    order). Labels are written with single spaces. An empty list gives ``""``.
    Raises ValueError / TypeError naming the box index and field.
    """
    if not isinstance(coord_bins, int) or coord_bins < 2:
        raise ValueError(f"{modality}: coord_bins must be an int >= 2, got {coord_bins!r}")
    if isinstance(boxes, (str, bytes, dict)) or not isinstance(boxes, Iterable):
        raise TypeError(f"{modality}: boxes must be a list of {{'label', 'box'}} dicts, got {type(boxes).__name__}")
    known = set(_normalize_class_list(class_names)) if class_names is not None else None
    validated = [_validate_box(index, box, known, modality) for index, box in enumerate(boxes)]
    validated.sort(key=lambda item: math.hypot(item[1][0], item[1][1]))
    words = []
    for label, values in validated:
        words += [coordinate_token(axis, coordinate_to_bin(value, coord_bins)) for axis, value in enumerate(values)]
        words.append(label)
    return " ".join(words)


def text_to_boxes(
    text_or_ids: str | Sequence[int],
    coord_bins: int = DEFAULT_COORD_BINS,
    class_names: Iterable[str] | None = None,
    tokenizer: FourMTextTokenizer | None = None,
) -> list[dict]:
    """Parse (possibly malformed) generated box text back into ``[{"label": str, "box": [4 floats]}]``.

    Reads ``v0= v1= v2= v3= label`` groups left to right. A box is kept only when its four
    coordinates come in order, each bin is below ``coord_bins``, xmin <= xmax, ymin <= ymax, the
    label is non-empty (and, with ``class_names``, a known class). Anything else (incomplete or
    out-of-order boxes, trailing garbage) is skipped; ``[UNK]`` words are left out of labels;
    a sentinel or other bracketed special token ends the box being read; text after ``[EOS]``
    is ignored. Never raises for malformed text.

    Args:
        text_or_ids: the text, or token ids (then ``tokenizer`` is required).
    """
    if not isinstance(text_or_ids, str):
        if tokenizer is None:
            raise TypeError("text_to_boxes: token ids need `tokenizer=`; or pass the decoded text")
        return tokenizer.decode_boxes(text_or_ids, class_names=class_names)
    known = None
    if class_names is not None:
        known = set(_normalize_class_list(class_names))
    boxes = []

    def finish_box(bins, label_words):
        if bins is None or len(bins) != NUM_BOX_COORDS or not label_words:
            return
        label = " ".join(label_words)
        xmin, ymin, xmax, ymax = (bin_to_coordinate(b, coord_bins) for b in bins)
        if xmin <= xmax and ymin <= ymax and (known is None or label in known):
            boxes.append({"label": label, "box": [xmin, ymin, xmax, ymax]})

    bins: list[int] | None = None  # bins of the box being read; None = skipping until the next v0
    label_words: list[str] = []  # only filled once the four bins are read
    for word in text_or_ids.split():
        coordinate = _COORDINATE_PATTERN.match(word)
        if coordinate is not None:
            axis, bin_index = int(coordinate.group(1)), int(coordinate.group(2))
            if label_words:  # a coordinate after a label closes that box
                finish_box(bins, label_words)
                bins, label_words = None, []
            if axis == 0:
                bins, label_words = [], []
            if bins is not None and axis == len(bins) and bin_index < coord_bins:
                bins.append(bin_index)
            else:
                bins = None  # out of order or out of range
            continue
        if word == EOS_TOKEN:
            break
        if word == UNK_TOKEN:
            continue  # an unknown word: skipped; a label made only of them is empty and drops its box
        if _BRACKETED_PATTERN.match(word):
            # sentinels, [PAD], [SOS], other bracketed tokens: close a finished box, drop a partial one
            finish_box(bins, label_words)
            bins, label_words = None, []
            continue
        if bins is not None and len(bins) == NUM_BOX_COORDS:
            label_words.append(word)
    finish_box(bins, label_words)
    return boxes


# ----- training -----


def train_text_tokenizer(
    texts: Iterable[str],
    vocab_size: int = 2000,
    class_names: Iterable[str] | None = None,
    num_sentinels: int = DEFAULT_NUM_SENTINELS,
    coord_bins: int = DEFAULT_COORD_BINS,
    min_frequency: int = 1,
    show_progress: bool = False,
) -> FourMTextTokenizer:
    """Learn a WordPiece vocabulary from a text corpus, with the 4M layout in front.

    Args:
        texts: captions (or any text); empty strings are ignored.
        vocab_size: number of ids for WordPieces (alphabet + learned pieces) after the reserved ids;
            the trainer stops earlier when the corpus has nothing more to merge. The reference has
            30000 - 4284 = 25716. Total size: ``len(tokenizer)``.
        class_names: names that become single tokens (lower-cased), in this order.
        num_sentinels / coord_bins: sizes of the sentinel and coordinate blocks.
    """
    if not isinstance(vocab_size, int) or vocab_size < 1:
        raise ValueError(f"vocab_size must be an int >= 1 (WordPieces after the reserved ids), got {vocab_size!r}")
    reserved = layout_tokens(num_sentinels, coord_bins, _normalize_class_list(class_names))
    counted = {"texts": 0}

    def checked_texts():
        for index, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"train_text_tokenizer: text {index} must be a str, got {type(text).__name__}")
            if text.strip():
                counted["texts"] += 1
                yield text

    backend = _empty_wordpiece_backend()
    trainer = WordPieceTrainer(
        vocab_size=len(reserved) + vocab_size,
        min_frequency=min_frequency,
        special_tokens=reserved,
        continuing_subword_prefix="##",
        show_progress=show_progress,
    )
    backend.train_from_iterator(checked_texts(), trainer=trainer)
    if counted["texts"] == 0:
        raise ValueError("train_text_tokenizer: the corpus has no non-empty text")
    return FourMTextTokenizer(tokenizer_object=backend)


# ----- command line: fourm-hf train-text-tokenizer -----


def add_arguments(parser) -> None:
    parser.add_argument("--dataset", required=True, help="a `datasets` dataset saved with save_to_disk")
    parser.add_argument("--split", default="train", help="split to read when --dataset is a DatasetDict")
    parser.add_argument(
        "--columns", default="caption", help="comma-separated text columns to learn from (box columns add their labels)"
    )
    classes = parser.add_mutually_exclusive_group()
    classes.add_argument(
        "--class-names-from",
        metavar="COLUMN",
        help="column of box lists [{'label', 'box'}] whose labels become class tokens ('det' reads 'boxes')",
    )
    classes.add_argument("--class-names", help="comma-separated class names that become single tokens")
    parser.add_argument("--vocab-size", type=int, default=2000, help="WordPieces after the reserved ids")
    parser.add_argument("--num-sentinels", type=int, default=DEFAULT_NUM_SENTINELS)
    parser.add_argument("--coord-bins", type=int, default=DEFAULT_COORD_BINS)
    parser.add_argument("--min-frequency", type=int, default=1)
    parser.add_argument("--out", required=True, help="folder for save_pretrained (written atomically)")


def _load_dataset(path: str, split: str):
    from datasets import DatasetDict, load_from_disk

    dataset = load_from_disk(path)
    if isinstance(dataset, DatasetDict):
        if split not in dataset:
            raise ValueError(f"--dataset {path}: no split {split!r}; splits are {sorted(dataset)}")
        dataset = dataset[split]
    return dataset


def _resolve_column(dataset, column: str) -> str:
    if column in dataset.column_names:
        return column
    if column == "det" and "boxes" in dataset.column_names:
        return "boxes"
    raise ValueError(f"dataset has no column {column!r}; columns are {dataset.column_names}")


def _iter_column_texts(dataset, columns: list[str], progress):
    """Text of every row and column: strings as they are, box lists as their labels joined by spaces."""
    for column in columns:
        for row_index, value in enumerate(dataset[column]):
            progress.update(1)
            if value is None:
                continue
            if isinstance(value, str):
                yield value
            elif isinstance(value, list):
                labels = [box.get("label") for box in value if isinstance(box, dict)]
                if any(not isinstance(label, str) for label in labels):
                    raise ValueError(f"column {column!r} row {row_index}: every box needs a str 'label'")
                yield " ".join(labels)
            else:
                raise TypeError(
                    f"column {column!r} row {row_index}: expected a str or a list of boxes, got {type(value).__name__}"
                )


def _class_names_from_column(dataset, column: str) -> list[str]:
    names = set()
    for row_index, value in enumerate(dataset[column]):
        for box_index, box in enumerate(value or []):
            if not isinstance(box, dict) or not isinstance(box.get("label"), str):
                raise ValueError(f"column {column!r} row {row_index} box {box_index}: expected {{'label': str, ...}}")
            names.add(normalize_class_name(box["label"]))
    if not names:
        raise ValueError(f"column {column!r} has no box labels to use as class names")
    return sorted(names)


def save_atomically(tokenizer: FourMTextTokenizer, out_dir: str) -> None:
    """save_pretrained into a temporary sibling folder, then swap it into place."""
    out_dir = os.path.abspath(out_dir)
    parent = os.path.dirname(out_dir)
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".tmp-" + os.path.basename(out_dir) + "-", dir=parent)
    try:
        tokenizer.save_pretrained(staging)
        if os.path.isdir(out_dir):
            retired = staging + "-old"
            os.replace(out_dir, retired)
            os.replace(staging, out_dir)
            shutil.rmtree(retired)
        else:
            os.replace(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def main(args) -> int:
    from tqdm.auto import tqdm

    dataset = _load_dataset(args.dataset, args.split)
    columns = [_resolve_column(dataset, column.strip()) for column in args.columns.split(",") if column.strip()]
    if not columns:
        raise ValueError("--columns names no column")
    if args.class_names_from:
        class_names = _class_names_from_column(dataset, _resolve_column(dataset, args.class_names_from))
    elif args.class_names:
        class_names = [name for name in args.class_names.split(",") if name.strip()]
    else:
        class_names = []
    with tqdm(total=len(dataset) * len(columns), desc="train-text-tokenizer", unit="text") as progress:
        tokenizer = train_text_tokenizer(
            _iter_column_texts(dataset, columns, progress),
            vocab_size=args.vocab_size,
            class_names=class_names,
            num_sentinels=args.num_sentinels,
            coord_bins=args.coord_bins,
            min_frequency=args.min_frequency,
        )
    save_atomically(tokenizer, args.out)
    print(
        f"saved {args.out}: {len(tokenizer)} ids ({tokenizer.num_sentinels} sentinels, {tokenizer.coord_bins} "
        f"coordinate bins, {len(tokenizer.class_names)} class names, "
        f"{len(tokenizer) - tokenizer.first_wordpiece_id} WordPieces)"
    )
    return 0
