"""The pipeline's ``caption_encoding=`` option: a caption as WordPiece ids, as T5 embeddings, or both.

4M-21 reads a caption as ``caption`` ids and as ``t5_caption`` (the hidden states of a T5 encoder,
``processing/t5_captions.py``). The pipeline uses the ids by default (``"ids"``: no T5 encoder needed);
``"t5"`` replaces them with the T5 embeddings of the same text, ``"both"`` gives the model both, as 4M-21's
training mixture often did. The T5 encoder is the processor's ``t5_encoder`` (a processor loaded by name
holds the catalogue's, downloaded on the first call that needs it).
"""

from __future__ import annotations

CAPTION_ENCODINGS = ("ids", "t5", "both")
T5_MODALITY = "t5_caption"


def check_caption_encoding(value) -> str:
    if value not in CAPTION_ENCODINGS:
        raise ValueError(f"caption_encoding must be one of {CAPTION_ENCODINGS}, got {value!r}.")
    return value


def t5_conditions(processor, config, captions: list[str], caption_encoding: str, tokens: dict, cond_domains: list):
    """-> (tokens, cond_domains, continuous_inputs, known) with the caption as ``caption_encoding`` asks."""
    if caption_encoding == "ids":
        return tokens, cond_domains, {}, {}
    if T5_MODALITY not in config.input_modalities:
        raise ValueError(f"caption_encoding={caption_encoding!r}: this model does not read t5_caption (its inputs are "
                         f"{config.input_modalities}).")
    if not captions:
        raise ValueError(f"caption_encoding={caption_encoding!r}: the call has no caption (text=) to encode.")
    encoder = getattr(processor, "t5_encoder", None)
    if encoder is None:
        raise ValueError(f"caption_encoding={caption_encoding!r}: the processor has no t5_encoder; load the processor by "
                         "name (the catalogue names the T5 encoder) or set processor.t5_encoder = "
                         "T5CaptionEncoder.from_pretrained(...) (fourm_hf.processing.t5_captions).")
    embeddings, mask = encoder(captions)
    if caption_encoding == "t5":
        tokens = {name: ids for name, ids in tokens.items() if name != "caption"}
        cond_domains = [name for name in cond_domains if name != "caption"]
    return tokens, cond_domains + [T5_MODALITY], {T5_MODALITY: embeddings}, {T5_MODALITY: mask}


__all__ = ["CAPTION_ENCODINGS", "check_caption_encoding", "t5_conditions"]
