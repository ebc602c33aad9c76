"""The 4M text tokenizer: WordPiece with the fixed 4M id layout, for captions and bounding boxes.

Captions and bounding boxes are both sequences of ids from one WordPiece vocabulary whose first
ids are reserved (control tokens, sentinels, coordinate bins, class names; see `text_layout`, the
layout of the reference 4M tokenizer, so its file loads unchanged). Every reserved token is a
`tokenizers` added token, so "v0=12" or "wine glass" in a text is one id. Text is lower-cased and
split like BERT (BertNormalizer + BertPreTokenizer). Boxes become text with `box_text`.

Public API:
    FourMTextTokenizer        the transformers tokenizer (registered with AutoTokenizer)
    train_text_tokenizer      learn a WordPiece vocabulary with this layout from a caption corpus
    boxes_to_text / text_to_boxes / coordinate_to_bin   (from `box_text`, re-exported here)
    save_atomically           save_pretrained into a temporary folder, then swap it into place
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable, Mapping, Sequence

from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers
from tokenizers.models import WordPiece
from tokenizers.trainers import WordPieceTrainer
from transformers import PreTrainedTokenizerFast

from .box_text import bin_to_coordinate, boxes_to_text, coordinate_to_bin, text_to_boxes
from .text_layout import (
    DEFAULT_COORD_BINS,
    DEFAULT_NUM_SENTINELS,
    EOS_TOKEN,
    FIRST_SENTINEL_ID,
    NUM_BOX_COORDS,
    PAD_TOKEN,
    SOS_TOKEN,
    UNK_TOKEN,
    layout_tokens,
    normalize_class_list,
    read_layout,
    vocab_layout,
)

__all__ = [
    "FourMTextTokenizer",
    "bin_to_coordinate",
    "boxes_to_text",
    "coordinate_to_bin",
    "save_atomically",
    "text_to_boxes",
    "train_text_tokenizer",
]


def wordpiece_backend(vocab: Mapping[str, int] | None = None) -> Tokenizer:
    """A `tokenizers.Tokenizer` with the reference's WordPiece model, normaliser, pre-tokenizer and decoder.

    ``vocab`` (token -> id, reserved tokens included) fills the WordPiece model; without it the model is
    empty, for training. Reserved tokens still have to be added (`layout_tokens`).
    """
    model = WordPiece(
        dict(vocab) if vocab is not None else None,
        unk_token=UNK_TOKEN,
        continuing_subword_prefix="##",
        max_input_chars_per_word=100,
    )
    backend = Tokenizer(model)
    backend.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=True
    )
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.decoder = decoders.WordPiece(prefix="##", cleanup=True)
    return backend


def read_vocab_file(path: str | os.PathLike) -> dict[str, int]:
    """A BERT-style vocab file (one token per line, id = line number) as a dict token -> id."""
    if not os.path.isfile(path):
        raise ValueError(f"FourMTextTokenizer: vocab file {str(path)!r} is not a file")
    with open(path, encoding="utf-8") as handle:
        tokens = [line.rstrip("\n").rstrip("\r") for line in handle]
    vocab = {}
    for index, token in enumerate(tokens):
        if token in vocab:
            raise ValueError(f"vocab file {str(path)!r}: token {token!r} on lines {vocab[token] + 1} and {index + 1}")
        vocab[token] = index
    return vocab


def backend_from_vocab(
    vocab: str | os.PathLike | Mapping[str, int], class_names: Sequence[str] | None = None, added_tokens_decoder=None
) -> Tokenizer:
    """A `tokenizers.Tokenizer` with the 4M layout built from a vocabulary (see `text_layout.vocab_layout`).

    Args:
        vocab: dict token -> id covering every id (reserved tokens first), or the path of a vocab file.
        class_names: the class-name tokens, which sit right after the coordinates.
        added_tokens_decoder: id -> token of a saved tokenizer's added tokens; its ids right after the
            coordinates are the class names when ``class_names`` is not given.
    """
    if isinstance(vocab, (str, os.PathLike)):
        vocab = read_vocab_file(vocab)
    class_ids = [int(index) for index in (added_tokens_decoder or {})]
    layout = vocab_layout(vocab, class_names=class_names, class_ids=class_ids)
    backend = wordpiece_backend(vocab)
    backend.add_special_tokens(layout_tokens(layout["num_sentinels"], layout["coord_bins"], layout["class_names"]))
    return backend


class FourMTextTokenizer(PreTrainedTokenizerFast):
    """WordPiece tokenizer for 4M captions and boxes, with the reference id layout (see the module docstring).

    Build it from
      * a `tokenizers` file or object with that layout, e.g. the reference's
        ``FourMTextTokenizer(tokenizer_file="text_tokenizer_4m_wordpiece_30k.json")``;
      * a vocabulary, like ``BertTokenizerFast``: ``FourMTextTokenizer(vocab={token: id})`` or
        ``FourMTextTokenizer(vocab_file="vocab.txt")`` (every id, reserved ones first; name the class
        tokens with ``class_names=``). The WordPiece model, normaliser and added tokens are those of
        the reference file, so the same vocabulary gives the same ids;
      * `train_text_tokenizer`, or a saved folder: ``AutoTokenizer.from_pretrained(folder)``.
    A source that breaks the layout raises ValueError naming the first wrong id.

    ``tokenizer(text)`` gives the same ids as the raw `tokenizers` file and adds nothing. The model's
    sequence format (ids followed by ``[EOS]``) comes from `encode_for_model` / `encode_boxes`.

    Decoding: the backend marks every reserved token as special, so the generic
    ``skip_special_tokens=True`` would drop coordinates and class names. Here it drops only
    ``[PAD]``, ``[SOS]``, ``[EOS]`` and sentinels, which is also what `decode_text` does.
    """

    vocab_files_names = {"tokenizer_file": "tokenizer.json"}
    model_input_names = ["input_ids", "attention_mask"]
    model = WordPiece

    def __init__(
        self,
        vocab: str | os.PathLike | Mapping[str, int] | None = None,
        vocab_file: str | os.PathLike | None = None,
        class_names: Sequence[str] | None = None,
        pad_token: str = PAD_TOKEN,
        unk_token: str = UNK_TOKEN,
        bos_token: str = SOS_TOKEN,
        eos_token: str = EOS_TOKEN,
        clean_up_tokenization_spaces: bool = False,
        **kwargs,
    ):
        if kwargs.pop("merges", None):
            raise ValueError("FourMTextTokenizer is a WordPiece tokenizer: it takes no BPE `merges`")
        sources = [name for name, value in [("vocab", vocab), ("vocab_file", vocab_file),
                                            ("tokenizer_file", kwargs.get("tokenizer_file")),
                                            ("tokenizer_object", kwargs.get("tokenizer_object"))] if value is not None]
        if not sources:
            raise ValueError(
                "FourMTextTokenizer needs `tokenizer_file` (a tokenizers JSON file with the 4M layout), "
                "`tokenizer_object`, `vocab` (dict token -> id) or `vocab_file`; to make a new one use "
                "`train_text_tokenizer`."
            )
        if len(sources) > 1:
            raise ValueError(f"FourMTextTokenizer takes one source of its vocabulary, got {' and '.join(sources)}")
        tokenizer_file = kwargs.get("tokenizer_file")
        if tokenizer_file is not None and not os.path.isfile(tokenizer_file):
            raise ValueError(f"FourMTextTokenizer: tokenizer_file {tokenizer_file!r} is not a file")
        if vocab is not None or vocab_file is not None:
            self._tokenizer = backend_from_vocab(
                vocab if vocab is not None else vocab_file, class_names, kwargs.get("added_tokens_decoder")
            )
        super().__init__(
            pad_token=pad_token,
            unk_token=unk_token,
            bos_token=bos_token,
            eos_token=eos_token,
            clean_up_tokenization_spaces=clean_up_tokenization_spaces,
            # the class names live in the backend's added tokens, which tokenizer.json saves
            class_names=None,
            **kwargs,
        )
        self._layout = read_layout(self._tokenizer)
        if class_names is not None and normalize_class_list(class_names) != self._layout["class_names"]:
            raise ValueError(
                f"FourMTextTokenizer: class_names {list(class_names)} differ from the class tokens "
                f"{self._layout['class_names']} of the {sources[0]}"
            )

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
        ids = self(text, add_special_tokens=False)["input_ids"]
        if not ids:  # e.g. "\x00\x00": control characters the normaliser removes
            raise ValueError(f"{modality}: text {text!r} has no characters the tokenizer keeps (only control or "
                             "invisible characters); expected at least one visible character")
        return self._finish_sequence(ids, modality, max_length)

    def encode_boxes(
        self, boxes: Sequence[dict], modality: str = "det", max_length: int | None = None, class_names=None
    ) -> list[int]:
        """Ids of `boxes_to_text` (with this tokenizer's bins) followed by ``[EOS]``. No boxes gives ``[EOS]``."""
        text = boxes_to_text(boxes, coord_bins=self.coord_bins, class_names=class_names, modality=modality)
        ids = self(text, add_special_tokens=False)["input_ids"] if text else []
        if self.unk_token_id in ids:
            self._refuse_unknown_label(boxes, modality)
        return self._finish_sequence(ids, modality, max_length)

    def _refuse_unknown_label(self, boxes: Sequence[dict], modality: str) -> None:
        """A box label with a word the vocabulary does not hold would be encoded as ``[UNK]``: refuse it."""
        for index, box in enumerate(boxes):
            label = box.get("label") if isinstance(box, dict) else None
            if isinstance(label, str) and self.unk_token_id in self(label, add_special_tokens=False)["input_ids"]:
                raise ValueError(f"{modality}: box {index} label {label!r} has a word the text tokenizer does not know "
                                 "(it would be encoded as [UNK]); use one of the tokenizer's class names")
        raise ValueError(f"{modality}: the boxes encode to [UNK]; use labels from the tokenizer's class names")

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
    reserved = layout_tokens(num_sentinels, coord_bins, normalize_class_list(class_names))
    counted = {"texts": 0}

    def checked_texts():
        for index, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"train_text_tokenizer: text {index} must be a str, got {type(text).__name__}")
            if text.strip():
                counted["texts"] += 1
                yield text

    backend = wordpiece_backend()
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


def save_atomically(tokenizer: FourMTextTokenizer, out_dir: str) -> None:
    """save_pretrained into a temporary sibling folder, then swap it into place."""
    out_dir = os.path.abspath(out_dir)
    os.makedirs(os.path.dirname(out_dir), exist_ok=True)
    # .<name>.tmp-<pid>: fourm-hf train-text-tokenizer removes the ones killed runs left (output_paths.py)
    staging = os.path.join(os.path.dirname(out_dir), f".{os.path.basename(out_dir)}.tmp-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    os.makedirs(staging)
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
