"""4M-21's ``t5_caption`` input: caption text -> a T5 encoder's hidden states -> the model.

4M-21 reads a caption in two ways: as WordPiece ids (``caption``) and as the last hidden states of a
frozen T5 encoder (``t5_caption``, a sequence-embedding modality: (N, C) per caption, C the encoder's width,
4096 for T5-XXL). :class:`T5CaptionEncoder` computes the second from text; ``generate`` takes the result as
``continuous_inputs={"t5_caption": embeddings}, known={"t5_caption": mask}``::

    encoder = T5CaptionEncoder.from_pretrained("google/t5-v1_1-xxl")   # the catalogue's T5 encoder of 4M-21
    embeddings, mask = encoder(["a red cube on a table"])              # (1, N, 4096) float32, (1, N) bool

A caption longer than the modality's ``max_length`` (77 T5 tokens, ``[EOS]`` included) is a ``ValueError``,
never cut. Padding rows (mask False) are never shown to the model.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch

T5_MAX_LENGTH = 77  # t5_caption positions of 4M-21 (the registry's max_length)


class T5CaptionEncoder:
    """A T5 encoder (``T5EncoderModel``) and its tokenizer, frozen, turning captions into ``t5_caption`` rows.

    Args:
        encoder: a ``T5EncoderModel`` (any encoder returning ``last_hidden_state`` works).
        tokenizer: its tokenizer (``AutoTokenizer`` of the same repo).
        max_length: most T5 tokens per caption.
    """

    def __init__(self, encoder, tokenizer, max_length: int = T5_MAX_LENGTH):
        self.encoder = encoder.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.max_length = int(max_length)

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike, max_length: int = T5_MAX_LENGTH, **hub_options):
        """The encoder and tokenizer of a Hub repo or folder (``google/t5-v1_1-xxl``; a local test model)."""
        from transformers import AutoTokenizer, T5EncoderModel

        name = os.fspath(name_or_path)
        return cls(T5EncoderModel.from_pretrained(name, **hub_options), AutoTokenizer.from_pretrained(name, **hub_options),
                   max_length)

    @property
    def width(self) -> int:
        return int(self.encoder.config.d_model)

    def __call__(self, texts: str | Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Caption(s) -> (embeddings float32 (B, N, C), mask bool (B, N)); N is the longest caption's length."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        if not texts or not all(isinstance(text, str) and text.strip() for text in texts):
            raise ValueError("t5_caption: expected one or more non-empty caption strings.")
        encoded = self.tokenizer(texts, padding="longest", truncation=False, return_tensors="pt")
        lengths = encoded["attention_mask"].sum(dim=1)
        if int(lengths.max()) > self.max_length:
            longest = int(lengths.argmax())
            raise ValueError(f"t5_caption: caption {longest} has {int(lengths[longest])} T5 tokens, more than the "
                             f"modality's {self.max_length}; shorten it (captions are never cut).")
        device = next(self.encoder.parameters()).device
        with torch.inference_mode():
            states = self.encoder(input_ids=encoded["input_ids"].to(device),
                                  attention_mask=encoded["attention_mask"].to(device)).last_hidden_state
        return states.float().cpu(), encoded["attention_mask"].bool()




class LazyT5CaptionEncoder:
    """A :class:`T5CaptionEncoder` loaded (downloaded) on its first call: what a processor built by name holds
    as ``processor.t5_encoder`` (the catalogue's T5 encoder; T5-XXL is 4.7 B parameters, so only a call that
    asks for ``t5_caption`` pays for it)."""

    def __init__(self, name_or_path: str | os.PathLike, hub_options: dict | None = None, max_length: int = T5_MAX_LENGTH):
        self.name_or_path = os.fspath(name_or_path)
        self.hub_options = dict(hub_options or {})
        self.max_length = int(max_length)
        self.loaded = None

    @property
    def is_loaded(self) -> bool:
        return self.loaded is not None

    def load(self) -> T5CaptionEncoder:
        if self.loaded is None:
            self.loaded = T5CaptionEncoder.from_pretrained(self.name_or_path, self.max_length, **self.hub_options)
        return self.loaded

    def __call__(self, texts: str | Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        return self.load()(texts)

    def __deepcopy__(self, memo):  # shared, never copied (a processor's to_dict deep-copies its attributes)
        return self


__all__ = ["LazyT5CaptionEncoder", "T5CaptionEncoder", "T5_MAX_LENGTH"]
