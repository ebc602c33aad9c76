"""``t5_caption``: a T5 encoder's last hidden states of the caption (4M-21's caption embedding input)."""

from __future__ import annotations

import warnings

import numpy as np

from ....processing.t5_captions import T5_MAX_LENGTH
from ..base import Labeller

T5_DTYPES = ("float32", "bfloat16", "float16")


class T5CaptionLabeller(Labeller):
    """``t5_caption`` (N, d) float16: ``T5EncoderModel(...).last_hidden_state`` of the caption's N tokens.

    The caption is the ``caption_column`` of the same row: written by an earlier caption labeller, or a column of
    the input dataset. Only the caption's own tokens are stored (no padding rows), at most ``max_length`` of
    them, ``</s>`` included: the T5 tokenizer cuts a longer caption to ``max_length - 1`` tokens plus ``</s>``,
    as the reference's 77-token embeddings are (a warning counts the cut captions). ``dtype`` is the encoder's
    compute dtype (``bfloat16`` halves the memory of T5-XXL on a GPU); the stored vectors are float16.
    """

    def __init__(self, model_id: str, device: str = "cpu", batch_size: int = 8, max_length: int = T5_MAX_LENGTH,
                 caption_column: str = "caption", dtype: str = "float32"):
        import torch
        from transformers import AutoConfig, AutoTokenizer, T5EncoderModel

        if dtype not in T5_DTYPES:
            raise ValueError(f"t5_caption: dtype must be one of {T5_DTYPES}, got {dtype!r}")
        if not (isinstance(max_length, int) and max_length >= 2):
            raise ValueError(f"t5_caption: max_length must be an integer >= 2, got {max_length!r}")
        try:
            config = AutoConfig.from_pretrained(model_id)
        except (OSError, ValueError, KeyError) as error:
            raise ValueError(f"t5_caption: cannot load model {model_id!r} (expected a local folder or Hub id of a T5 "
                             f"model, e.g. google/t5-v1_1-xxl): {error}") from error
        if config.model_type != "t5":
            raise ValueError(f"t5_caption: model {model_id!r} is a {config.model_type!r} model, not a T5 model; the "
                             "t5_caption labeller runs T5EncoderModel (4M-21 uses google/t5-v1_1-xxl)")
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(model_id)
        except (OSError, ValueError, TypeError) as error:
            raise ValueError(f"t5_caption: model {model_id!r} has no loadable tokenizer: {error}") from error
        model = T5EncoderModel.from_pretrained(model_id, dtype=getattr(torch, dtype))
        self.model = model.to(device).eval().requires_grad_(False)
        self.model_id, self.device, self.batch_size, self.max_length = model_id, device, int(batch_size), max_length
        self.caption_column, self.dtype, self.width = caption_column, dtype, int(config.d_model)
        self.columns, self.requires = ("t5_caption",), (caption_column,)

    def features(self, size):
        from datasets import Array2D

        return {"t5_caption": Array2D((None, self.width), "float16")}

    def encode(self, captions: list[str]) -> list[np.ndarray]:
        """Captions -> one (N_i, d) float16 array each (N_i = the caption's tokens, at most ``max_length``)."""
        import torch

        full_lengths = [len(ids) for ids in self.tokenizer(captions)["input_ids"]]
        cut = sum(length > self.max_length for length in full_lengths)
        if cut:
            warnings.warn(f"t5_caption: {cut} of {len(captions)} captions have more than {self.max_length} T5 tokens and "
                          f"were cut to {self.max_length}", stacklevel=3)
        encoded = self.tokenizer(captions, padding="longest", truncation=True, max_length=self.max_length, return_tensors="pt")
        with torch.inference_mode():
            states = self.model(input_ids=encoded["input_ids"].to(self.device),
                                attention_mask=encoded["attention_mask"].to(self.device)).last_hidden_state
        states = states.float().cpu().numpy()
        lengths = encoded["attention_mask"].sum(dim=1).tolist()
        return [states[row, :length].astype(np.float16) for row, length in enumerate(lengths)]

    def label(self, images, labels):
        captions = labels[self.caption_column]
        for index, caption in enumerate(captions):
            if not isinstance(caption, str):
                raise ValueError(f"t5_caption: the {self.caption_column!r} of image {index} of this batch is "
                                 f"{type(caption).__name__}, expected a string")
        vectors = []
        for start in range(0, len(captions), self.batch_size):
            vectors.extend(self.encode(list(captions[start : start + self.batch_size])))
        return {"t5_caption": vectors}

    def metadata(self):
        return {"model": self.model_id, "source": "T5EncoderModel last_hidden_state of the caption tokens, (N, d)",
                "caption_column": self.caption_column, "max_length": self.max_length, "dtype": self.dtype,
                "stored_dtype": "float16", "width": self.width}
