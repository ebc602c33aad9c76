"""Captions: corpus BLEU and the F1 of "colour shape" object mentions."""

from __future__ import annotations

import math
from collections import Counter

import datasets
import evaluate
import numpy as np

from .base import _FourMMetric


def tokenize_caption(text: str) -> list[str]:
    """Lowercase and split on whitespace (punctuation stays attached to its word)."""
    return text.lower().split()


def _ngram_counts(tokens: list[str], order: int) -> Counter:
    return Counter(tuple(tokens[start : start + order]) for start in range(len(tokens) - order + 1))


def _prepare_caption_pair(name: str, index: int, prediction, reference):
    if not isinstance(prediction, str):
        raise ValueError(f"{name}: predictions[{index}] must be a string, got {type(prediction).__name__}")
    references = [reference] if isinstance(reference, str) else reference
    if not isinstance(references, (list, tuple)) or not references or not all(isinstance(r, str) for r in references):
        raise ValueError(
            f"{name}: references[{index}] must be a string or a non-empty list of strings, got {reference!r}"
        )
    return prediction, list(references), {}


class CaptionBLEU(_FourMMetric):
    r"""Corpus BLEU (Papineni et al. 2002), BLEU-4 by default.

    Inputs: ``predictions`` strings, ``references`` a string or a list of strings per prediction.
    Tokenisation: lowercase, split on whitespace (:func:`tokenize_caption`).

    For n = 1..max_order: p_n = sum over sentences of clipped n-gram matches (each n-gram counted
    at most its maximum count in any reference of that sentence) / total n-grams in the predictions.
    With ``smooth=True`` add one to numerator and denominator of p_n for n >= 2 (Lin & Och 2004).
    Brevity penalty BP = 1 if c > r else exp(1 - r / c), c = total prediction length, r = sum of the
    reference lengths closest to each prediction's length (the shorter on ties).
    BLEU = BP * exp(mean_n log p_n); 0 when some p_n is 0 or c is 0.

    Returns ``bleu``, ``precisions`` (p_1..p_N), ``brevity_penalty``, ``length_ratio`` (c / r),
    ``prediction_length`` (c) and ``reference_length`` (r).
    """

    def __init__(self, max_order: int = 4, smooth: bool = False, **kwargs):
        if int(max_order) < 1:
            raise ValueError(f"CaptionBLEU: max_order must be >= 1, got {max_order}")
        self.max_order = int(max_order)
        self.smooth = bool(smooth)
        super().__init__(**kwargs)

    def _info(self):
        return evaluate.MetricInfo(
            description="Corpus-level BLEU with brevity penalty and optional add-one smoothing.",
            citation="Papineni et al., BLEU: a Method for Automatic Evaluation of Machine Translation, ACL 2002.",
            inputs_description="predictions: list of str; references: list of str or list of list of str",
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.List(datasets.Value("string"))}
            ),
        )

    def _prepare_sample(self, index, prediction, reference):
        return _prepare_caption_pair("CaptionBLEU", index, prediction, reference)

    def _compute(self, predictions, references):
        matches = np.zeros(self.max_order)
        totals = np.zeros(self.max_order)
        prediction_length = reference_length = 0
        for prediction, sentence_references in zip(predictions, references):
            prediction_tokens = tokenize_caption(prediction)
            reference_tokens = [tokenize_caption(reference) for reference in sentence_references]
            prediction_length += len(prediction_tokens)
            reference_length += min((abs(len(r) - len(prediction_tokens)), len(r)) for r in reference_tokens)[1]
            for order in range(1, self.max_order + 1):
                predicted = _ngram_counts(prediction_tokens, order)
                max_reference = Counter()
                for tokens in reference_tokens:
                    max_reference |= _ngram_counts(tokens, order)
                matches[order - 1] += sum(min(count, max_reference[gram]) for gram, count in predicted.items())
                totals[order - 1] += max(len(prediction_tokens) - order + 1, 0)
        if self.smooth:
            matches[1:] += 1
            totals[1:] += 1
        precisions = np.divide(matches, totals, out=np.zeros_like(matches), where=totals > 0)
        if prediction_length == 0:
            brevity_penalty = 0.0
        elif prediction_length > reference_length:
            brevity_penalty = 1.0
        else:
            brevity_penalty = math.exp(1.0 - reference_length / prediction_length)
        if (precisions > 0).all() and prediction_length > 0:
            bleu = brevity_penalty * math.exp(np.log(precisions).mean())
        else:
            bleu = 0.0
        return {
            "bleu": float(bleu),
            "precisions": [float(p) for p in precisions],
            "brevity_penalty": float(brevity_penalty),
            "length_ratio": float(prediction_length / reference_length) if reference_length else float("nan"),
            "prediction_length": int(prediction_length),
            "reference_length": int(reference_length),
        }


class CaptionObjectF1(_FourMMetric):
    r"""Precision / recall / F1 of "colour shape" object mentions in captions of rendered scenes.

    Args:
        colours: colour words, e.g. ``["red", "green", "blue"]``.
        shapes: shape words (singular), e.g. ``["sphere", "cube", "cylinder", "cone"]``.
        max_gap: at most this many other words may stand between a colour and its shape
            ("red metal cube" is a red cube with ``max_gap >= 1``).

    Both vocabularies may also be given to ``compute`` (overriding the constructor's).

    Mention extraction (:meth:`extract_mentions`): lowercase, split on whitespace, strip
    punctuation at word edges; a shape word may be plural (trailing "s" or "es"). Each colour word
    is paired with the first shape word within ``max_gap + 1`` words after it, unless another
    colour or shape word comes first. A caption's mentions are a set (repeats count once).

    Micro-averaged over the corpus with P / R the mention sets of prediction / reference:
    precision = sum|P & R| / sum|P|, recall = sum|P & R| / sum|R|, f1 = 2 p r / (p + r); a zero
    denominator gives 0 (as scikit-learn's ``zero_division=0``); the counts are returned too.
    """

    def __init__(self, colours=None, shapes=None, max_gap: int = 2, **kwargs):
        self.colours = None if colours is None else [c.lower() for c in colours]
        self.shapes = None if shapes is None else [s.lower() for s in shapes]
        self.max_gap = int(max_gap)
        super().__init__(**kwargs)

    def _info(self):
        return evaluate.MetricInfo(
            description="Precision/recall/F1 of colour-shape object mentions in generated captions.",
            citation="",
            inputs_description="predictions: list of str; references: list of str (or list of list of str, merged)",
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.List(datasets.Value("string"))}
            ),
        )

    def _prepare_sample(self, index, prediction, reference):
        return _prepare_caption_pair("CaptionObjectF1", index, prediction, reference)

    def extract_mentions(self, text: str, colours=None, shapes=None) -> set[tuple[str, str]]:
        """The set of (colour, shape) pairs mentioned in ``text``."""
        colours = set(colours if colours is not None else self.colours)
        shapes = set(shapes if shapes is not None else self.shapes)
        words = [word.strip(".,;:!?\"'()[]") for word in tokenize_caption(text)]

        def as_shape(word):
            for candidate in (word, word[:-1] if word.endswith("s") else None, word[:-2] if word.endswith("es") else None):
                if candidate and candidate in shapes:
                    return candidate
            return None

        mentions = set()
        for position, word in enumerate(words):
            if word not in colours:
                continue
            for following in words[position + 1 : position + 2 + self.max_gap]:
                shape = as_shape(following)
                if shape is not None:
                    mentions.add((word, shape))
                    break
                if following in colours:
                    break
        return mentions

    def _compute(self, predictions, references, colours=None, shapes=None):
        colours = [c.lower() for c in colours] if colours is not None else self.colours
        shapes = [s.lower() for s in shapes] if shapes is not None else self.shapes
        if not colours or not shapes:
            raise ValueError("CaptionObjectF1: `colours` and `shapes` vocabularies are required (constructor or compute)")
        matched = predicted = referenced = 0
        for prediction, sentence_references in zip(predictions, references):
            predicted_mentions = self.extract_mentions(prediction, colours, shapes)
            reference_mentions = set()
            for reference in sentence_references:
                reference_mentions |= self.extract_mentions(reference, colours, shapes)
            matched += len(predicted_mentions & reference_mentions)
            predicted += len(predicted_mentions)
            referenced += len(reference_mentions)
        precision = matched / predicted if predicted else 0.0
        recall = matched / referenced if referenced else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
        return {
            "precision": precision,
            "recall": recall,
            "f1": f1,
            "num_matched": matched,
            "num_predicted": predicted,
            "num_referenced": referenced,
        }
