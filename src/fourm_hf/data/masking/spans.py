"""Sequences: T5-style span masking with sentinels, and cutting a target at a sentinel."""

from __future__ import annotations

import numpy as np

from .ids import SENTINEL_OFFSET


def span_mask_sequence(
    tokens: np.ndarray, dropped: np.ndarray, max_spans: int | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Replace every maximal run of dropped tokens by one sentinel.

    Args:
        tokens: (L,) int token ids.
        dropped: (L,) bool, True = the token is hidden from the encoder and becomes a target.
        max_spans: at most this many spans (the tokenizer's sentinels are finite); dropped tokens
            after the last allowed span are kept visible instead.
    Returns:
        ``(masked_input, target, sentinel_positions)``: ``masked_input`` (n,) is the sequence with
        span ``i`` replaced by ``[S_i]`` (i = 1, 2, ...); ``target`` (m,) is
        ``[S_1] span_1 [S_2] span_2 ... [S_k] span_k [S_{k+1}]`` (the last sentinel marks the end),
        empty when nothing is dropped; ``sentinel_positions`` (k+1,) are the indices of the
        sentinels in ``target``.
    """
    tokens = np.asarray(tokens)
    dropped = np.asarray(dropped, dtype=bool)
    span_starts = dropped & ~np.concatenate(([False], dropped[:-1]))
    span_number = np.cumsum(span_starts)  # 1-based span of each dropped token
    if max_spans is not None and span_number[-1:].sum() > max_spans:
        dropped = dropped & (span_number <= max_spans)
        span_starts = span_starts & dropped
        span_number = np.cumsum(span_starts)
    num_spans = int(span_starts.sum())
    if num_spans == 0:
        return tokens.copy(), tokens[:0].copy(), np.zeros(0, dtype=np.int64)

    sentinels = SENTINEL_OFFSET + span_number
    masked_input = np.where(span_starts, sentinels, tokens)[~dropped | span_starts]

    span_tokens = tokens[dropped]
    starts_in_spans = np.flatnonzero(span_starts[dropped])  # where each span begins in span_tokens
    first_sentinels = SENTINEL_OFFSET + np.arange(1, num_spans + 1)
    target = np.insert(span_tokens, starts_in_spans, first_sentinels)
    target = np.append(target, SENTINEL_OFFSET + num_spans + 1).astype(tokens.dtype)
    sentinel_positions = np.append(starts_in_spans + np.arange(num_spans), len(target) - 1)
    return masked_input.astype(tokens.dtype), target, sentinel_positions


def cut_target_at_sentinel(target: np.ndarray, sentinel_positions: np.ndarray, max_decoder_tokens: int) -> np.ndarray:
    """Longest prefix of ``target`` that ends on a sentinel and needs at most ``max_decoder_tokens``.

    A target of length m gives m - 1 decoder tokens (inputs ``target[:-1]``, labels
    ``target[1:]``), so a prefix ending on the sentinel at index j costs j decoder tokens. Spans are
    never split: the prefix stops right after a span, on the sentinel that closes it. Returns an
    empty array when not even the first span fits.
    """
    fitting = sentinel_positions[(sentinel_positions <= max_decoder_tokens) & (sentinel_positions > 0)]
    if len(fitting) == 0:
        return target[:0]
    return target[: int(fitting[-1]) + 1]
