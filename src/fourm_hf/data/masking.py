"""4M masking: Dirichlet token budgets, image position sampling, span masking, and the Trainer collator.

One training sample of 4M is a dict of token arrays (see ``notes/BATCH_FORMAT.md``)::

    {"tok_rgb": (G*G,) ids, "tok_depth": (G*G,) ids, ..., "caption": (L,) ids ending in [EOS],
     "pixel_values": (3, H, W) float32, "sample_index": int}

Per sample, :class:`FourMMaskingCollator` does what the 4M paper describes:

1. Pick one component of the masking strategy (a weighted mixture of symmetric Dirichlets, e.g.
   the 4M-7 mixture of RGB->all and all->all).
2. Draw the share of the *input* budget each modality gets from that component's Dirichlet over
   input modalities, and the share of the *target* budget from its Dirichlet over output
   modalities. Modalities absent from the sample or with alpha 0 get nothing. Shares become
   integer counts with :func:`distribute_budget` (largest remainder, capped by the tokens each
   modality has, the excess handed to the others in proportion to their shares).
3. Image modalities: a random permutation of the grid; its first ``n_in`` cells are inputs, the
   next ``n_target`` cells are targets, so inputs and targets never overlap.
4. Sequence modalities: T5-style span masking with sentinels and a keep probability drawn from
   U(0, 1) (:func:`span_mask_sequence`). The encoder gets the first ``n_in`` tokens of the
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
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import torch
from transformers import TrainerCallback

from ..configuration_fourm import FourMConfig

PAD_ID = 0
EOS_ID = 3
# Sentinel [S_i] has id SENTINEL_OFFSET + i; span masking uses [S_1], [S_2], ... (as 4M does).
SENTINEL_OFFSET = 4
# The reference 4M text tokenizer has 200 sentinels [S_0]..[S_199].
DEFAULT_NUM_SENTINELS = 200
IGNORE_INDEX = -100
SAMPLE_INDEX_FIELD = "sample_index"
PIXEL_VALUES_FIELD = "pixel_values"


# ------------------------------------------------------------------------------------------------
# Masking strategies: one Dirichlet, or a weighted mixture of them
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DirichletMasking:
    """One symmetric-Dirichlet component of a masking strategy.

    Args:
        input_alphas: modality name -> Dirichlet concentration for the input budget. A modality
            not listed (or with alpha 0) never receives input tokens in this component. Small
            alphas (< 1) concentrate the budget on few modalities; a huge alpha (e.g. 1000 for
            RGB) takes almost all of it.
        target_alphas: the same for the target budget (pixel modalities must be 0: they are
            inputs only).
        weight: relative probability of this component in a mixture.
        name: label used in reports and errors.
    """

    input_alphas: Mapping[str, float]
    target_alphas: Mapping[str, float]
    weight: float = 1.0
    name: str = "dirichlet"

    def __post_init__(self):
        for field_name in ("input_alphas", "target_alphas"):
            for modality, alpha in getattr(self, field_name).items():
                if not np.isfinite(alpha) or alpha < 0:
                    raise ValueError(
                        f"Masking component {self.name!r}: {field_name}[{modality!r}] must be a finite "
                        f"number >= 0, got {alpha!r}."
                    )
        if not np.isfinite(self.weight) or self.weight <= 0:
            raise ValueError(f"Masking component {self.name!r}: weight must be > 0, got {self.weight!r}.")


def _alphas(names: Sequence[str], value: float, **overrides: float) -> dict[str, float]:
    alphas = {name: value for name in names}
    alphas.update({name: alpha for name, alpha in overrides.items() if name in alphas})
    return alphas


def masking_preset(name: str, config: FourMConfig) -> list[DirichletMasking]:
    """Named masking strategies, resolved for the modalities of ``config``.

    * ``"uniform"``: one Dirichlet with alpha 1 on every input and output modality.
    * ``"all2all"``: one Dirichlet with alpha 0.5 everywhere (the 4M all->all setting).
    * ``"rgb2all"``: inputs are only the RGB pixels (alpha 1000, others 0), targets alpha 0.5.
    * ``"4m7"``: the 4M-7 training mixture, half ``rgb2all`` and half ``all2all``.
    * ``"4m7_caption"``: a caption-biased mixture, one third each of ``rgb2all``, caption->all
      (caption input alpha 1000, others 0; targets 0.5) and ``all2all``.

    Pixel modalities always get target alpha 0. ``rgb2all`` needs a pixels modality named
    ``"rgb"`` (or, failing that, ``tok_rgb``); caption->all needs ``"caption"``. As its inputs are
    RGB only, an ``rgb2all`` sample has at most ``grid_size**2`` input tokens: on a grid smaller
    than the input budget (8x8 = 64 < 128) the rest of its encoder row is padding.
    """
    inputs, outputs = list(config.input_modalities), list(config.output_modalities)

    def anchored(anchor: str, label: str, weight: float) -> DirichletMasking:
        if anchor not in inputs:
            raise ValueError(
                f"Masking preset {name!r} needs {anchor!r} among config.input_modalities, got {inputs}."
            )
        return DirichletMasking(
            input_alphas=_alphas(inputs, 0.0, **{anchor: 1000.0}),
            target_alphas=_alphas(outputs, 0.5),
            weight=weight,
            name=label,
        )

    def rgb_anchor() -> str:
        return "rgb" if "rgb" in inputs else "tok_rgb"

    all2all = DirichletMasking(_alphas(inputs, 0.5), _alphas(outputs, 0.5), weight=1.0, name="all2all")
    if name == "uniform":
        return [DirichletMasking(_alphas(inputs, 1.0), _alphas(outputs, 1.0), name="uniform")]
    if name == "all2all":
        return [all2all]
    if name == "rgb2all":
        return [anchored(rgb_anchor(), "rgb2all", 1.0)]
    if name == "4m7":
        return [anchored(rgb_anchor(), "rgb2all", 0.5), replace(all2all, weight=0.5)]
    if name == "4m7_caption":
        return [
            anchored(rgb_anchor(), "rgb2all", 1.0),
            anchored("caption", "caption2all", 1.0),
            all2all,
        ]
    raise ValueError(f"Unknown masking preset {name!r}; expected one of {sorted(MASKING_PRESETS)}.")


MASKING_PRESETS = ("uniform", "all2all", "rgb2all", "4m7", "4m7_caption")


# ------------------------------------------------------------------------------------------------
# Budgets
# ------------------------------------------------------------------------------------------------
def distribute_budget(total: int, weights: np.ndarray, capacity: np.ndarray) -> np.ndarray:
    """Split ``total`` tokens into integer counts proportional to ``weights``, capped by ``capacity``.

    Rounding is by largest remainder: every modality first gets ``floor(share * total)``, then the
    leftover tokens go one each to the largest fractional parts (ties: lower index first). A
    modality whose count exceeds its capacity is set to its capacity and the excess is split the
    same way among the modalities that still have room, in proportion to their weights (equally if
    all their weights are 0). Modalities with capacity 0 never get tokens.

    Args:
        total: tokens to hand out (>= 0).
        weights: (M,) float, >= 0 (e.g. a Dirichlet draw).
        capacity: (M,) int, >= 0.
    Returns:
        (M,) int64 counts with ``counts <= capacity`` and ``counts.sum() == min(total, capacity.sum())``.
    """
    weights = np.asarray(weights, dtype=np.float64)
    capacity = np.asarray(capacity, dtype=np.int64)
    counts = np.zeros(len(capacity), dtype=np.int64)
    remaining = int(min(total, capacity.sum()))
    while remaining > 0:
        open_slots = counts < capacity
        share = np.where(open_slots, weights, 0.0)
        if share.sum() <= 0:
            share = open_slots.astype(np.float64)
        exact = share / share.sum() * remaining
        add = np.floor(exact).astype(np.int64)
        leftover = remaining - int(add.sum())
        if leftover > 0:
            # Stable sort on the negated fractional part: largest first, lower index on ties.
            order = np.argsort(-(exact - add), kind="stable")
            add[order[:leftover]] += 1
        counts = np.minimum(counts + add, capacity)
        remaining = int(min(total, capacity.sum())) - int(counts.sum())
    return counts


# ------------------------------------------------------------------------------------------------
# Sequences: T5-style span masking with sentinels
# ------------------------------------------------------------------------------------------------
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


# ------------------------------------------------------------------------------------------------
# Sample index and epoch plumbing
# ------------------------------------------------------------------------------------------------
class _IndexedDataset(torch.utils.data.Dataset):
    """Map-style dataset wrapper that adds ``sample_index`` = the item's index to each dict."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, index):
        sample = self.dataset[index]
        if not isinstance(sample, Mapping):
            raise TypeError(f"with_sample_index: item {index} is a {type(sample).__name__}, expected a dict.")
        return {**sample, SAMPLE_INDEX_FIELD: int(index)}


def with_sample_index(dataset):
    """Give every sample its row index as ``sample_index``, the key of its masking randomness.

    A ``datasets.Dataset`` gets a new column (kept in memory, no cache file); any other map-style
    dataset (``__getitem__`` returning dicts + ``__len__``) is wrapped. Do this *before* shuffling
    or splitting, so an index names the same sample forever.
    """
    import datasets

    if isinstance(dataset, datasets.Dataset):
        if SAMPLE_INDEX_FIELD in dataset.column_names:
            raise ValueError(f"Dataset already has a {SAMPLE_INDEX_FIELD!r} column.")
        return dataset.add_column(SAMPLE_INDEX_FIELD, np.arange(len(dataset), dtype=np.int64))
    if not hasattr(dataset, "__getitem__") or not hasattr(dataset, "__len__"):
        raise TypeError(f"with_sample_index needs a map-style dataset, got {type(dataset).__name__}.")
    return _IndexedDataset(dataset)


class MaskingEpochCallback(TrainerCallback):
    """Tells the collator the epoch at the start of every epoch, so masks change between epochs.

    ``Trainer`` calls ``on_epoch_begin`` before it creates the epoch's data iterator, so dataloader
    workers (which copy the collator when the iterator is created) see the new epoch, as long as
    ``dataloader_persistent_workers`` is off. On resume, ``state.epoch`` (e.g. 1.5) floors to the
    epoch being resumed.
    """

    def __init__(self, collator: "FourMMaskingCollator"):
        self.collator = collator

    def on_epoch_begin(self, args, state, control, **kwargs):
        self.collator.set_epoch(int(state.epoch or 0))
        return control


# ------------------------------------------------------------------------------------------------
# The collator
# ------------------------------------------------------------------------------------------------
@dataclass
class MaskedSample:
    """The chosen tokens of one sample, before padding.

    Encoder arrays are (n_in,), decoder arrays (n_dec,), all int64. ``component`` is the index of
    the mixture component used; ``input_counts`` / ``target_counts`` map modality -> tokens used.
    """

    input_ids: np.ndarray
    input_modality_ids: np.ndarray
    input_positions: np.ndarray
    decoder_input_ids: np.ndarray
    decoder_modality_ids: np.ndarray
    decoder_positions: np.ndarray
    labels: np.ndarray
    component: int
    input_counts: dict[str, int] = field(default_factory=dict)
    target_counts: dict[str, int] = field(default_factory=dict)


class FourMMaskingCollator:
    """``transformers.Trainer`` data collator: per-sample 4M masking, packed to fixed lengths.

    Args:
        config: the model's :class:`FourMConfig` (modality ids, grid size, vocab sizes).
        input_budget / target_budget: encoder / decoder tokens per sample (default: the config's).
            They are also the padded lengths of the batch.
        strategy: a preset name (:data:`MASKING_PRESETS`), one :class:`DirichletMasking`, or a list
            of them (a mixture weighted by their ``weight``).
        seed: base seed; a sample's masks depend only on ``(seed, epoch, sample_index)``.
        allow_missing_modalities: accept samples without some configured modality (it gets no
            tokens). Off by default: a corpus missing a modality is usually a bug.
        num_sentinels: sentinels of the text tokenizer ([S_0].. have ids 4..); a sequence gets at
            most ``num_sentinels - 2`` spans (further dropped tokens stay visible).
        validate: check every sample's ids and shapes in ``__call__`` (cheap; keep it on).

    Call it on a list of sample dicts (each with ``sample_index``); it returns the packed batch of
    ``notes/BATCH_FORMAT.md`` as int64 tensors (+ ``pixel_values`` when some input is pixels).
    """

    def __init__(
        self,
        config: FourMConfig,
        input_budget: int | None = None,
        target_budget: int | None = None,
        strategy: str | DirichletMasking | Sequence[DirichletMasking] = "4m7",
        seed: int = 0,
        allow_missing_modalities: bool = False,
        num_sentinels: int = DEFAULT_NUM_SENTINELS,
        validate: bool = True,
    ):
        if not isinstance(config, FourMConfig):
            raise TypeError(f"config must be a FourMConfig, got {type(config).__name__}.")
        self.config = config
        self.input_budget = int(config.input_budget if input_budget is None else input_budget)
        self.target_budget = int(config.target_budget if target_budget is None else target_budget)
        if self.input_budget < 1 or self.target_budget < 0:
            raise ValueError(
                f"input_budget must be >= 1 and target_budget >= 0, got {self.input_budget} and {self.target_budget}."
            )
        self.seed = int(seed)
        self.epoch = 0
        self.allow_missing_modalities = bool(allow_missing_modalities)
        self.num_sentinels = int(num_sentinels)
        self.validate = bool(validate)

        self.modality_names = list(config.modality_names)
        self.specs = [config.modality(name) for name in self.modality_names]
        self.spec_by_name = dict(zip(self.modality_names, self.specs))
        self.kinds = [spec.kind for spec in self.specs]
        self.num_cells = config.grid_size**2
        self.input_names = frozenset(config.input_modalities)
        self.output_names = frozenset(config.output_modalities)
        self.is_input = np.array([name in self.input_names for name in self.modality_names])
        self.is_image = np.array([kind != "sequence" for kind in self.kinds])
        self.has_targets = np.array([kind != "pixels" for kind in self.kinds])
        self.image_size = config.image_size
        self.is_output = np.array([name in config.output_modalities for name in self.modality_names])
        self.image_ids = [i for i, kind in enumerate(self.kinds) if kind != "sequence"]
        self.sequence_ids = [i for i, kind in enumerate(self.kinds) if kind == "sequence"]
        pixel_names = [name for name, kind in zip(self.modality_names, self.kinds) if kind == "pixels"]
        if len(pixel_names) > 1:
            raise ValueError(f"At most one pixels modality is supported (read from 'pixel_values'), got {pixel_names}.")
        self.pixel_name = pixel_names[0] if pixel_names else None

        self.components = self._resolve_strategy(strategy)
        weights = np.array([c.weight for c in self.components], dtype=np.float64)
        self.component_cdf = np.cumsum(weights / weights.sum())
        self.input_alphas = np.array([[c.input_alphas.get(n, 0.0) for n in self.modality_names] for c in self.components])
        self.target_alphas = np.array([[c.target_alphas.get(n, 0.0) for n in self.modality_names] for c in self.components])
        self._check_sentinels()
        self._check_budgets_fit_config()

    # ---- construction checks -------------------------------------------------------------------
    def _resolve_strategy(self, strategy) -> list[DirichletMasking]:
        if isinstance(strategy, str):
            components = masking_preset(strategy, self.config)
        elif isinstance(strategy, DirichletMasking):
            components = [strategy]
        else:
            components = list(strategy)
            if not components or not all(isinstance(c, DirichletMasking) for c in components):
                raise TypeError("strategy must be a preset name, a DirichletMasking, or a non-empty list of them.")
        for component in components:
            for name, alpha in component.input_alphas.items():
                if alpha > 0 and name not in self.config.input_modalities:
                    raise ValueError(
                        f"Masking component {component.name!r}: input_alphas names {name!r}, which is not in "
                        f"config.input_modalities {self.config.input_modalities}."
                    )
            for name, alpha in component.target_alphas.items():
                if alpha > 0 and name in self.config.modality_specs and self.config.modality(name).kind == "pixels":
                    raise ValueError(
                        f"Masking component {component.name!r}: modality {name!r} is raw pixels (input only); "
                        f"its target alpha must be 0, got {alpha}."
                    )
                if alpha > 0 and name not in self.config.output_modalities:
                    raise ValueError(
                        f"Masking component {component.name!r}: target_alphas names {name!r}, which is not in "
                        f"config.output_modalities {self.config.output_modalities}."
                    )
            if not any(a > 0 for a in component.input_alphas.values()):
                raise ValueError(f"Masking component {component.name!r}: every input alpha is 0; the encoder would be empty.")
        return components

    def _check_sentinels(self):
        for i in self.sequence_ids:
            spec = self.specs[i]
            if SENTINEL_OFFSET + self.num_sentinels > spec.vocab_size:
                raise ValueError(
                    f"Modality {spec.name!r}: vocab_size {spec.vocab_size} cannot hold {self.num_sentinels} sentinels "
                    f"starting at id {SENTINEL_OFFSET}; pass a smaller num_sentinels."
                )
        if self.sequence_ids and self.num_sentinels < 3:
            raise ValueError(f"num_sentinels must be >= 3 ([S_1] and [S_2] for one span), got {self.num_sentinels}.")

    def _capacity(self, name: str, side: str) -> int:
        spec = self.spec_by_name[name]
        if spec.kind == "sequence":
            return spec.max_length + (1 if side == "target" else 0)
        return self.num_cells

    def _check_budgets_fit_config(self):
        most_inputs = sum(self._capacity(n, "input") for n in self.config.input_modalities)
        most_targets = sum(self._capacity(n, "target") for n in self.config.output_modalities)
        if self.input_budget > most_inputs:
            raise ValueError(
                f"input_budget {self.input_budget} is larger than all the tokens the input modalities "
                f"{self.config.input_modalities} can hold ({most_inputs})."
            )
        if self.target_budget > most_targets:
            raise ValueError(
                f"target_budget {self.target_budget} is larger than all the tokens the output modalities "
                f"{self.config.output_modalities} can hold ({most_targets})."
            )

    # ---- epoch -----------------------------------------------------------------------------------
    def set_epoch(self, epoch: int):
        """Masks of epoch ``e`` differ from those of every other epoch (same seed and index)."""
        if int(epoch) < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch}.")
        self.epoch = int(epoch)

    def rng_for(self, sample_index: int) -> np.random.Generator:
        """The generator of one sample: a SeedSequence of (seed, epoch, index), no global state."""
        return np.random.default_rng((self.seed, self.epoch, int(sample_index)))

    # ---- validation ------------------------------------------------------------------------------
    def validate_sample(self, sample: Mapping) -> dict[str, np.ndarray]:
        """Check one sample against the config; return its token arrays by modality name.

        Raises ValueError / TypeError naming the modality and field for: a missing modality
        (unless ``allow_missing_modalities``), a non-integer or non-1-D token array, a wrong number
        of image tokens, an empty or too long sequence, an id outside ``[0, vocab_size)``, pixel
        values of the wrong shape, a missing or negative ``sample_index``, and a sample with fewer
        tokens than the budgets.
        """
        if not isinstance(sample, Mapping):
            raise TypeError(f"A sample must be a dict of modality arrays, got {type(sample).__name__}.")
        where = f"sample {sample.get(SAMPLE_INDEX_FIELD, '?')}"
        if SAMPLE_INDEX_FIELD not in sample:
            raise ValueError(
                f"Sample is missing the {SAMPLE_INDEX_FIELD!r} field that seeds its masks; wrap the dataset with "
                f"fourm_hf.data.masking.with_sample_index(dataset)."
            )
        index = sample[SAMPLE_INDEX_FIELD]
        if isinstance(index, torch.Tensor):
            index = index.item()
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or index < 0:
            raise ValueError(f"{where}: field {SAMPLE_INDEX_FIELD!r} must be an int >= 0, got {index!r}.")

        arrays: dict[str, np.ndarray] = {}
        for name, spec in zip(self.modality_names, self.specs):
            key = PIXEL_VALUES_FIELD if spec.kind == "pixels" else name
            value = sample.get(key)
            if value is None:
                if self.allow_missing_modalities:
                    continue
                raise ValueError(
                    f"{where}: modality {name!r} is missing (field {key!r}); the config lists it. Add it to the "
                    f"corpus, or pass allow_missing_modalities=True."
                )
            if spec.kind == "pixels":
                arrays[name] = self._check_pixels(name, value, where)
            else:
                arrays[name] = self._check_tokens(name, spec, value, where)

        available_inputs = sum(self._available(n, a, "input") for n, a in arrays.items() if n in self.input_names)
        available_targets = sum(self._available(n, a, "target") for n, a in arrays.items() if n in self.output_names)
        if available_inputs < self.input_budget:
            raise ValueError(
                f"{where}: input_budget {self.input_budget} is larger than the {available_inputs} tokens its input "
                f"modalities {sorted(n for n in arrays if n in self.input_names)} hold."
            )
        if available_targets < self.target_budget:
            raise ValueError(
                f"{where}: target_budget {self.target_budget} is larger than the {available_targets} tokens its "
                f"output modalities {sorted(n for n in arrays if n in self.output_names)} hold."
            )
        return arrays

    def _available(self, name: str, tokens: np.ndarray, side: str) -> int:
        if self.spec_by_name[name].kind == "sequence":
            return len(tokens) + (1 if side == "target" else 0)
        return self.num_cells

    def _check_pixels(self, name: str, value, where: str) -> np.ndarray:
        pixels = value.numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
        expected = (self.spec_by_name[name].num_channels, self.image_size, self.image_size)
        if pixels.shape != expected:
            raise ValueError(
                f"{where}: modality {name!r} field {PIXEL_VALUES_FIELD!r} has shape {pixels.shape}, expected {expected} "
                f"(channels, image_size, image_size)."
            )
        if pixels.dtype.kind != "f":
            raise TypeError(f"{where}: modality {name!r} field {PIXEL_VALUES_FIELD!r} must be float, got {pixels.dtype}.")
        return pixels

    def _check_tokens(self, name: str, spec, value, where: str) -> np.ndarray:
        tokens = value.numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
        if tokens.ndim != 1:
            raise ValueError(f"{where}: modality {name!r} field {name!r} must be 1-D token ids, got shape {tokens.shape}.")
        if tokens.size and tokens.dtype.kind not in "iu":
            raise TypeError(f"{where}: modality {name!r} field {name!r} must hold integer ids, got dtype {tokens.dtype}.")
        tokens = tokens.astype(np.int64, copy=False)
        if spec.kind == "image_tokens" and len(tokens) != self.num_cells:
            raise ValueError(
                f"{where}: modality {name!r} field {name!r} has {len(tokens)} tokens, expected grid_size**2 = "
                f"{self.num_cells} (grid {self.config.grid_size}x{self.config.grid_size})."
            )
        if spec.kind == "sequence" and not 1 <= len(tokens) <= spec.max_length:
            raise ValueError(
                f"{where}: modality {name!r} field {name!r} has {len(tokens)} tokens, expected 1..max_length = "
                f"{spec.max_length} (the text ids followed by [EOS])."
            )
        low, high = int(tokens.min()), int(tokens.max())
        if low < 0 or high >= spec.vocab_size:
            bad = low if low < 0 else high
            raise ValueError(
                f"{where}: modality {name!r} field {name!r} has token id {bad}, outside the vocabulary "
                f"[0, {spec.vocab_size})."
            )
        return tokens

    def validate_dataset(self, dataset, max_samples: int | None = None) -> int:
        """Validate every sample (or the first ``max_samples``) before training; returns the count.

        Raises ValueError on an empty dataset and on the first bad sample.
        """
        from tqdm.auto import tqdm

        total = len(dataset)
        if total == 0:
            raise ValueError("The dataset is empty: there is nothing to train on.")
        count = total if max_samples is None else min(total, int(max_samples))
        for i in tqdm(range(count), desc="validating samples", disable=count < 1000):
            self.validate_sample(dataset[i])
        return count

    # ---- masking one sample ----------------------------------------------------------------------
    def mask_sample(self, sample: Mapping) -> MaskedSample:
        """Choose the input and target tokens of one sample (unpadded)."""
        arrays = self.validate_sample(sample) if self.validate else self._arrays_unchecked(sample)
        rng = self.rng_for(int(sample[SAMPLE_INDEX_FIELD]))
        num_modalities = len(self.modality_names)
        present = np.array([name in arrays for name in self.modality_names])
        component = self._choose_component(rng, present, sample[SAMPLE_INDEX_FIELD], arrays)
        lengths = np.array(
            [len(arrays[n]) if (present[i] and self.kinds[i] == "sequence") else 0 for i, n in enumerate(self.modality_names)]
        )
        is_image, has_targets = self.is_image, self.has_targets
        input_alpha = np.where(present & self.is_input, self.input_alphas[component], 0.0)
        target_alpha = np.where(present & self.is_output & has_targets, self.target_alphas[component], 0.0)
        input_share = self._dirichlet(rng, input_alpha)
        target_share = self._dirichlet(rng, target_alpha)

        # Step 1: shares -> counts. Image cells are split between inputs (first) and targets.
        input_capacity = np.where(input_alpha > 0, np.where(is_image, self.num_cells, lengths), 0)
        input_counts = distribute_budget(self.input_budget, input_share, input_capacity)
        target_capacity = np.where(target_alpha > 0, np.where(is_image, self.num_cells - input_counts, lengths + 1), 0)
        target_counts = distribute_budget(self.target_budget, target_share, target_capacity)

        # Step 2: span-mask the sequences; they may use less than their counts.
        sequence_parts = {}
        for i in self.sequence_ids:
            if not present[i] or input_counts[i] + target_counts[i] == 0:
                input_counts[i] = target_counts[i] = 0
                continue
            masked_input, target = self._mask_sequence(rng, arrays[self.modality_names[i]], input_counts[i], target_counts[i])
            sequence_parts[i] = (masked_input, target)
            input_counts[i] = len(masked_input)
            target_counts[i] = max(len(target) - 1, 0)

        # Step 3: what the sequences left over goes to image modalities with free cells.
        image_input = is_image & (input_alpha > 0)
        spare_inputs = self.input_budget - int(input_counts.sum())
        if spare_inputs > 0:
            room = np.where(image_input, self.num_cells - input_counts, 0)
            input_counts += distribute_budget(spare_inputs, input_share, room)
        image_target = is_image & (target_alpha > 0)
        target_counts = np.where(image_target, np.minimum(target_counts, self.num_cells - input_counts), target_counts)
        spare_targets = self.target_budget - int(target_counts.sum())
        if spare_targets > 0:
            room = np.where(image_target, self.num_cells - input_counts - target_counts, 0)
            target_counts += distribute_budget(spare_targets, target_share, room)

        # Step 4: image positions, one random permutation per image modality (inputs then targets).
        encoder_parts, decoder_parts = [], []
        image_rows = [i for i in self.image_ids if input_counts[i] + target_counts[i] > 0]
        permutations = rng.random((len(image_rows), self.num_cells)).argsort(axis=1) if image_rows else None
        for i in range(num_modalities):
            if i in sequence_parts:
                masked_input, target = sequence_parts[i]
                encoder_parts.append((masked_input, i, np.arange(len(masked_input))))
                if len(target) > 1:
                    decoder_parts.append((target[:-1], i, np.arange(len(target) - 1), target[1:]))
            elif i in image_rows:
                order = permutations[image_rows.index(i)]
                n_in, n_target = int(input_counts[i]), int(target_counts[i])
                input_positions = np.sort(order[:n_in])
                target_positions = np.sort(order[n_in : n_in + n_target])
                if self.kinds[i] == "pixels":
                    encoder_parts.append((np.zeros(n_in, dtype=np.int64), i, input_positions))
                else:
                    tokens = arrays[self.modality_names[i]]
                    encoder_parts.append((tokens[input_positions], i, input_positions))
                    decoder_parts.append(
                        (np.zeros(n_target, dtype=np.int64), i, target_positions, tokens[target_positions])
                    )

        enc_ids, enc_mods, enc_pos = self._concat(encoder_parts, num_fields=2)
        dec_ids, dec_mods, dec_pos, dec_labels = self._concat(decoder_parts, num_fields=3)
        return MaskedSample(
            input_ids=enc_ids,
            input_modality_ids=enc_mods,
            input_positions=enc_pos,
            decoder_input_ids=dec_ids,
            decoder_modality_ids=dec_mods,
            decoder_positions=dec_pos,
            labels=dec_labels,
            component=component,
            input_counts={self.modality_names[i]: int(c) for i, c in enumerate(input_counts) if c > 0},
            target_counts={self.modality_names[i]: int(c) for i, c in enumerate(target_counts) if c > 0},
        )

    def _arrays_unchecked(self, sample: Mapping) -> dict[str, np.ndarray]:
        arrays = {}
        for name, kind in zip(self.modality_names, self.kinds):
            value = sample.get(PIXEL_VALUES_FIELD if kind == "pixels" else name)
            if value is not None:
                arrays[name] = np.asarray(value.numpy() if isinstance(value, torch.Tensor) else value)
        return arrays

    def _choose_component(self, rng: np.random.Generator, present: np.ndarray, index, arrays) -> int:
        """Draw a mixture component, among those that give some present input modality alpha > 0.

        Only matters with ``allow_missing_modalities``: a sample without RGB pixels cannot be an
        RGB->all sample, so it is drawn from the other components (weights renormalised).
        """
        usable = ((self.input_alphas > 0) & (present & self.is_input)[None, :]).any(axis=1)
        if not usable.any():
            raise ValueError(
                f"sample {index}: no masking component gives input alpha > 0 to a modality the sample has; "
                f"present: {sorted(arrays)}."
            )
        if usable.all():
            cdf = self.component_cdf
        else:
            weights = np.where(usable, np.diff(self.component_cdf, prepend=0.0), 0.0)
            cdf = np.cumsum(weights / weights.sum())
        component = int(np.searchsorted(cdf, rng.random(), side="right"))
        return min(component, len(self.components) - 1)

    @staticmethod
    def _dirichlet(rng: np.random.Generator, alphas: np.ndarray) -> np.ndarray:
        """(M,) shares summing to 1 over the modalities with alpha > 0 (zeros elsewhere)."""
        shares = np.zeros(len(alphas))
        active = alphas > 0
        if active.any():
            shares[active] = rng.dirichlet(alphas[active])
        return shares

    def _mask_sequence(
        self, rng: np.random.Generator, tokens: np.ndarray, n_input: int, n_target: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Span-mask one sequence for ``n_input`` encoder and ``n_target`` decoder tokens.

        No target budget: the encoder sees the sequence as is (its first ``n_input`` tokens). No
        input budget: the whole sequence is one span, i.e. ``[S_1] text [S_2]`` (caption
        generation). Otherwise each token is kept with probability p ~ U(0, 1).
        Returns ``(encoder_tokens, target)`` with ``len(encoder_tokens) <= n_input`` and
        ``len(target) - 1 <= n_target`` decoder tokens.
        """
        keep_probability = rng.random()
        keep_draws = rng.random(len(tokens))
        if n_target == 0:
            dropped = np.zeros(len(tokens), dtype=bool)
        elif n_input == 0:
            dropped = np.ones(len(tokens), dtype=bool)
        else:
            dropped = keep_draws >= keep_probability
        # k spans use [S_1]..[S_{k+1}], so the last sentinel [S_{num_sentinels-1}] allows k = num_sentinels - 2.
        max_spans = self.num_sentinels - 2
        masked_input, target, sentinel_positions = span_mask_sequence(tokens, dropped, max_spans=max_spans)
        target = cut_target_at_sentinel(target, sentinel_positions, n_target)
        return masked_input[:n_input], target

    @staticmethod
    def _concat(parts, num_fields: int):
        """Concatenate (ids, modality, positions[, labels]) parts into int64 arrays."""
        if not parts:
            return tuple(np.zeros(0, dtype=np.int64) for _ in range(num_fields + 1))
        ids = np.concatenate([p[0] for p in parts]).astype(np.int64, copy=False)
        modalities = np.concatenate([np.full(len(p[0]), p[1], dtype=np.int64) for p in parts])
        positions = np.concatenate([p[2] for p in parts]).astype(np.int64, copy=False)
        if num_fields == 2:
            return ids, modalities, positions
        labels = np.concatenate([p[3] for p in parts]).astype(np.int64, copy=False)
        return ids, modalities, positions, labels

    # ---- the batch -------------------------------------------------------------------------------
    def __call__(self, samples: Sequence[Mapping]) -> dict[str, torch.Tensor]:
        """Mask every sample and pack them into the fixed-shape batch of BATCH_FORMAT.md.

        Returns int64 tensors ``input_ids``, ``input_modality_ids``, ``input_positions``,
        ``attention_mask`` of shape (B, input_budget); ``decoder_input_ids``,
        ``decoder_modality_ids``, ``decoder_positions``, ``decoder_attention_mask``, ``labels``
        (-100 on padding) of shape (B, target_budget); and ``pixel_values`` (B, C, H, W) float32
        when some sample has a pixels input token (zeros for samples without pixels).
        """
        if len(samples) == 0:
            raise ValueError("Cannot collate an empty list of samples.")
        batch_size, l_in, l_dec = len(samples), self.input_budget, self.target_budget
        input_ids = np.zeros((batch_size, l_in), dtype=np.int64)
        input_modality_ids = np.zeros_like(input_ids)
        input_positions = np.zeros_like(input_ids)
        attention_mask = np.zeros_like(input_ids)
        decoder_input_ids = np.zeros((batch_size, l_dec), dtype=np.int64)
        decoder_modality_ids = np.zeros_like(decoder_input_ids)
        decoder_positions = np.zeros_like(decoder_input_ids)
        decoder_attention_mask = np.zeros_like(decoder_input_ids)
        labels = np.full((batch_size, l_dec), IGNORE_INDEX, dtype=np.int64)
        uses_pixels = False

        for row, sample in enumerate(samples):
            masked = self.mask_sample(sample)
            n_in, n_dec = len(masked.input_ids), len(masked.labels)
            input_ids[row, :n_in] = masked.input_ids
            input_modality_ids[row, :n_in] = masked.input_modality_ids
            input_positions[row, :n_in] = masked.input_positions
            attention_mask[row, :n_in] = 1
            decoder_input_ids[row, :n_dec] = masked.decoder_input_ids
            decoder_modality_ids[row, :n_dec] = masked.decoder_modality_ids
            decoder_positions[row, :n_dec] = masked.decoder_positions
            decoder_attention_mask[row, :n_dec] = 1
            labels[row, :n_dec] = masked.labels
            uses_pixels = uses_pixels or (self.pixel_name is not None and self.pixel_name in masked.input_counts)

        batch = {
            "input_ids": input_ids,
            "input_modality_ids": input_modality_ids,
            "input_positions": input_positions,
            "attention_mask": attention_mask,
            "decoder_input_ids": decoder_input_ids,
            "decoder_modality_ids": decoder_modality_ids,
            "decoder_positions": decoder_positions,
            "decoder_attention_mask": decoder_attention_mask,
            "labels": labels,
        }
        batch = {key: torch.from_numpy(value) for key, value in batch.items()}
        if uses_pixels:
            batch[PIXEL_VALUES_FIELD] = self._stack_pixels(samples)
        return batch

    def _stack_pixels(self, samples: Sequence[Mapping]) -> torch.Tensor:
        channels = self.spec_by_name[self.pixel_name].num_channels
        size = self.image_size
        pixels = np.zeros((len(samples), channels, size, size), dtype=np.float32)
        for row, sample in enumerate(samples):
            value = sample.get(PIXEL_VALUES_FIELD)
            if value is not None:
                pixels[row] = value.numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
        return torch.from_numpy(pixels)


__all__ = [
    "DirichletMasking",
    "FourMMaskingCollator",
    "MASKING_PRESETS",
    "MaskedSample",
    "MaskingEpochCallback",
    "cut_target_at_sentinel",
    "distribute_budget",
    "masking_preset",
    "span_mask_sequence",
    "with_sample_index",
]
