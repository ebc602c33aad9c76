"""Captions: corpus BLEU and the F1 of "colour shape" object mentions."""

from __future__ import annotations

import datasets
import evaluate

from .base import _FourMMetric


def tokenize_caption(text: str) -> list[str]:
    """Lowercase and split on whitespace (punctuation stays attached to its word); for object mentions."""
    return text.lower().split()


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
    r"""Corpus BLEU (Papineni et al. 2002) computed by sacreBLEU (Post 2018), BLEU-4 by default.

    Inputs: ``predictions`` strings, ``references`` a string or a list of strings per prediction
    (any number per prediction).

    The definition is sacreBLEU's ``BLEU`` with its default settings unless given: tokenizer
    ``"13a"`` (mteval-v13a, the WMT standard: punctuation split off), case-sensitive, ``"exp"``
    smoothing, no effective order. The result's ``signature`` names them all (e.g.
    ``nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:2.6.0``); quote it with the number.
    Scores are on the 0-1 scale (sacreBLEU's 0-100 divided by 100).

    Args:
        max_order: largest n-gram order (4: BLEU-4).
        smooth_method / smooth_value / tokenize / lowercase: sacreBLEU's ``BLEU`` arguments
            (``smooth_method`` one of ``"exp"``, ``"none"``, ``"floor"``, ``"add-k"``).

    Returns ``bleu``, ``precisions`` (p_1..p_N), ``brevity_penalty``, ``length_ratio`` (c / r),
    ``prediction_length`` (c), ``reference_length`` (r) and ``signature``.
    """

    def __init__(self, max_order: int = 4, smooth_method: str = "exp", smooth_value: float | None = None,
                 tokenize: str = "13a", lowercase: bool = False, **kwargs):
        from sacrebleu.metrics import BLEU

        if int(max_order) < 1:
            raise ValueError(f"CaptionBLEU: max_order must be >= 1, got {max_order}")
        if smooth_method not in BLEU.SMOOTH_DEFAULTS:
            raise ValueError(f"CaptionBLEU: smooth_method must be one of {sorted(BLEU.SMOOTH_DEFAULTS)}, got {smooth_method!r}")
        self.bleu = BLEU(max_ngram_order=int(max_order), smooth_method=smooth_method, smooth_value=smooth_value,
                         tokenize=tokenize, lowercase=bool(lowercase))
        super().__init__(**kwargs)

    def _info(self):
        return evaluate.MetricInfo(
            description="Corpus-level BLEU computed by sacreBLEU (default signature unless configured).",
            citation="Papineni et al., BLEU, ACL 2002; Post, A Call for Clarity in Reporting BLEU Scores, WMT 2018.",
            inputs_description="predictions: list of str; references: list of str or list of list of str",
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.List(datasets.Value("string"))}
            ),
        )

    def _prepare_sample(self, index, prediction, reference):
        return _prepare_caption_pair("CaptionBLEU", index, prediction, reference)

    def _compute(self, predictions, references):
        # sacreBLEU takes reference streams: stream j holds every prediction's j-th reference (None if it has fewer)
        streams = [[refs[j] if j < len(refs) else None for refs in references]
                   for j in range(max(len(refs) for refs in references))]
        score = self.bleu.corpus_score(list(predictions), streams)
        return {
            "bleu": float(score.score) / 100.0,
            "precisions": [float(p) / 100.0 for p in score.precisions],
            "brevity_penalty": float(score.bp),
            "length_ratio": float(score.ratio),
            "prediction_length": int(score.sys_len),
            "reference_length": int(score.ref_len),
            "signature": str(self.bleu.get_signature()),
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
