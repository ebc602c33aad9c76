"""Box confidences: how sure the model was of the tokens it generated for each box.

4M writes boxes as text (``v0=.. v1=.. v2=.. v3=.. label``, one group per box), so a box has no
score of its own. Its score here is the mean probability the model gave its tokens while
generating them: from the box's ``v0=`` coordinate up to the next box's ``v0=`` (or the end of the
sequence), each token's probability being the softmax of the (guided) logits at temperature 1, as
``generate(return_token_probs=True)`` records it. A score lies in (0, 1]; 1 means the model put all
its mass on every token of the box.
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def box_token_spans(tokenizer, ids: Sequence[int]) -> list[tuple[int, int]]:
    """``[(start, end)]`` token ranges of the boxes :meth:`FourMTextTokenizer.decode_boxes` reads from ``ids``, in order.

    Each range runs from a ``v0=`` coordinate to the next ``v0=`` or the end of the sequence (the first ``[EOS]``,
    else the trailing ``[PAD]`` padding); ranges that do not parse into a box (malformed groups, which the decoder
    skips) are left out.
    """
    return [(start, end) for start, end, _ in parsed_box_spans(tokenizer, ids)]


def parsed_box_spans(tokenizer, ids: Sequence[int]) -> list[tuple[int, int, dict]]:
    """``[(start, end, box)]``: :func:`box_token_spans` with the box each range decodes to (each range decoded once)."""
    ids = [int(i) for i in ids]
    end = ids.index(tokenizer.eos_token_id) if tokenizer.eos_token_id in ids else len(ids)
    while end > 0 and ids[end - 1] == tokenizer.pad_token_id:
        end -= 1
    first_v0, last_v0 = tokenizer.coordinate_token_id(0, 0), tokenizer.coordinate_token_id(0, tokenizer.coord_bins - 1)
    starts = [index for index in range(end) if first_v0 <= ids[index] <= last_v0]
    spans = []
    for start, next_start in zip(starts, starts[1:] + [end]):
        boxes = tokenizer.decode_boxes(ids[start:next_start])
        if len(boxes) == 1:
            spans.append((start, next_start, boxes[0]))
    return spans


def box_scores(tokenizer, ids: Sequence[int], probs: Sequence[float]) -> list[float]:
    """One score per box of ``decode_boxes(ids)``: the mean of ``probs`` over the box's tokens (module docstring).

    ``ids`` (L,) generated ``det`` ids and ``probs`` (L,) their probabilities. ValueError when the lengths differ,
    when a box token has no probability (NaN: given, not generated) or when the boxes cannot be matched to token
    ranges (the scores would then belong to other boxes). :func:`scored_boxes` is the same without the
    whole-sequence check, for decoding (each token decoded once).
    """
    boxes, scores = scored_boxes(tokenizer, ids, probs)
    decoded = tokenizer.decode_boxes([int(i) for i in ids])
    if boxes != decoded:
        raise ValueError(f"det: the {len(decoded)} decoded boxes do not match the {len(boxes)} box token ranges; "
                         "cannot give them scores")
    return scores


def scored_boxes(tokenizer, ids: Sequence[int], probs: Sequence[float]) -> tuple[list[dict], list[float]]:
    """``(boxes, scores)`` of generated ``det`` ids: the boxes ``decode_boxes(ids)`` gives (built from the
    box token ranges, so each box's tokens are decoded once) and :func:`box_scores`' score of each.

    ``probs`` (L,) the tokens' probabilities; ValueError on a length mismatch or a box token without one.
    """
    ids, probs = [int(i) for i in ids], [float(p) for p in probs]
    if len(ids) != len(probs):
        raise ValueError(f"det: {len(ids)} token ids but {len(probs)} token probabilities; expected one per token")
    boxes, scores = [], []
    for start, end, box in parsed_box_spans(tokenizer, ids):
        span = probs[start:end]
        if any(math.isnan(p) for p in span):
            raise ValueError(f"det: tokens {start}..{end - 1} have no probability (given, not generated); "
                             "only generated boxes get scores")
        boxes.append(box)
        scores.append(sum(span) / len(span))
    return boxes, scores


__all__ = ["box_scores", "box_token_spans", "parsed_box_spans", "scored_boxes"]
