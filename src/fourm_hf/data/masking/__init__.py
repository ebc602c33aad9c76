"""4M masking: Dirichlet token budgets, image position sampling, span masking, and the Trainer collator.

One training sample of 4M is a dict of token arrays (see ``notes/BATCH_FORMAT.md``)::

    {"tok_rgb": (G*G,) ids, "tok_depth": (G*G,) ids, ..., "caption": (L,) ids ending in [EOS],
     "pixel_values": (3, H, W) float32, "sample_index": int}

Per sample, :class:`FourMMaskingCollator` does what the 4M paper describes:

1. Pick one component of the masking strategy (a weighted mixture of Dirichlets, e.g. the 4M-7
   mixture of RGB->all and all->all, or one of the reference's alphas files: ``mixtures``).
2. Draw the share of the *input* budget each modality gets from that component's Dirichlet over
   input modalities, and the share of the *target* budget from its Dirichlet over output
   modalities. Modalities absent from the sample or with alpha 0 get nothing. Shares become
   integer counts with :func:`distribute_budget` (largest remainder, capped by the tokens each
   modality has, the excess handed to the others in proportion to their shares).
3. Image modalities: a random permutation of the modality's own grid; its first ``n_in`` cells are inputs, the
   next ``n_target`` cells are targets, so inputs and targets never overlap.
4. Sequence modalities: T5-style span masking with sentinels and a keep probability set by the
   component's keep mode (``random``: U(0, 1); ``all``; ``binary``) (:func:`span_mask_sequence`).
   Sequence embeddings (``t5_caption``) are span-masked the same way, input only, a dropped span
   becoming one all-zero row. The encoder gets the first ``n_in`` tokens of the
   span-masked input; the target ``[S_1] span_1 [S_2] ... [S_k]`` is cut at a sentinel so that it
   fits ``n_target`` decoder tokens (:func:`cut_target_at_sentinel`).
5. Budget a sequence could not use (its masked input was shorter than its share, or its target had
   to be cut) goes to the image modalities that still have free cells, so the encoder is full
   whenever the sample has enough tokens.
6. Pack the chosen tokens into fixed-length rows (``input_budget`` encoder slots,
   ``target_budget`` decoder slots), padding the rest. Fixed shapes let ``torch.compile`` reuse one
   graph for every step.

All randomness of a sample comes from ``numpy.random.default_rng((seed, epoch, sample_index))``:
the same sample in the same epoch gets the same masks whatever batch it lands in, in whichever
process, so a resumed run is identical to an uninterrupted one. The sample index travels with the
sample (:func:`with_sample_index`); the epoch is set by :class:`MaskingEpochCallback`.

Modules: ``strategies`` (Dirichlet components, presets), ``mixtures`` (the reference's alphas files
and mixtures), ``budgets`` (``distribute_budget``), ``spans`` (span masking), ``collator``
(``FourMMaskingCollator``), ``sample_checks`` (one sample against the layout), ``epochs`` (sample
index and the epoch callback for ``Trainer``), ``ids`` (special token ids and field names),
``layout`` (where each modality lives: 4M-7, 4M-21 and SR layouts).
"""

from .budgets import distribute_budget
from .collator import FourMMaskingCollator, MaskedSample
from .epochs import MaskingEpochCallback, with_sample_index
from .layout import CONTINUOUS_INPUTS_FIELD, check_trainable_layout, sample_field
from .mixtures import REFERENCE_MIXTURES, MixtureReport, mixture_from_alphas, read_alphas_file, resolve_strategy
from .ids import (
    DEFAULT_NUM_SENTINELS,
    EOS_ID,
    IGNORE_INDEX,
    PAD_ID,
    PIXEL_VALUES_FIELD,
    SAMPLE_INDEX_FIELD,
    SENTINEL_OFFSET,
)
from .spans import cut_target_at_sentinel, span_mask_sequence
from .strategies import KEEP_MODES, MASKING_PRESETS, DirichletMasking, masking_preset

__all__ = [
    "CONTINUOUS_INPUTS_FIELD",
    "KEEP_MODES",
    "MixtureReport",
    "REFERENCE_MIXTURES",
    "mixture_from_alphas",
    "read_alphas_file",
    "resolve_strategy",
    "sample_field",
    "DEFAULT_NUM_SENTINELS",
    "DirichletMasking",
    "EOS_ID",
    "FourMMaskingCollator",
    "IGNORE_INDEX",
    "MASKING_PRESETS",
    "MaskedSample",
    "MaskingEpochCallback",
    "PAD_ID",
    "PIXEL_VALUES_FIELD",
    "SAMPLE_INDEX_FIELD",
    "SENTINEL_OFFSET",
    "check_trainable_layout",
    "cut_target_at_sentinel",
    "distribute_budget",
    "masking_preset",
    "span_mask_sequence",
    "with_sample_index",
]
