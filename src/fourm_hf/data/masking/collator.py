"""``FourMMaskingCollator``: per-sample 4M masking (steps in ``fourm_hf.data.masking``), packed to fixed lengths."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from ...configuration_fourm import FourMConfig
from ...modalities import CONTINUOUS_KINDS
from .budgets import distribute_budget
from .ids import DEFAULT_NUM_SENTINELS, IGNORE_INDEX, PIXEL_VALUES_FIELD, SAMPLE_INDEX_FIELD, SENTINEL_OFFSET
from .layout import CONTINUOUS_INPUTS_FIELD, modality_layouts, uses_continuous_inputs_field
from .mixtures import resolve_strategy
from .sample_checks import as_array, available_tokens, read_sample, sample_index_of
from .spans import cut_target_at_sentinel, span_mask_sequence
from .strategies import DirichletMasking

# The reference lowers a sequence's keep probability by 0.9 until its input fits; after this many
# tries (p < 1e-40) the whole sequence is one span.
MAX_KEEP_RETRIES = 900


@dataclass
class MaskedSample:
    """The chosen tokens of one sample, before padding.

    Encoder arrays are (n_in,), decoder arrays (n_dec,), all int64. ``component`` is the index of
    the mixture component used; ``input_counts`` / ``target_counts`` map modality -> tokens used;
    ``dense_inputs`` maps each continuous input used to ``(array, rows to zero or None)``.
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
    dense_inputs: dict[str, tuple[np.ndarray, np.ndarray | None]] = field(default_factory=dict)


class FourMMaskingCollator:
    """``transformers.Trainer`` data collator: per-sample 4M masking, packed to fixed lengths.

    Args:
        config: the model's :class:`FourMConfig`. Every layout the model runs is laid out
            (:mod:`~fourm_hf.data.masking.layout`): each image modality on its own grid,
            learned-position global embeddings, sequences, ``sequence_embedding`` inputs and
            several pixels inputs (``rgb`` and ``rgb@448``).
        input_budget / target_budget: encoder / decoder tokens per sample (default: the config's).
            They are also the padded lengths of the batch.
        strategy: a preset name (:data:`MASKING_PRESETS`), a reference mixture name
            (:data:`~fourm_hf.data.masking.mixtures.REFERENCE_MIXTURES`), the path of one of the
            reference's alphas YAML files, one :class:`DirichletMasking`, or a list of them (a
            mixture weighted by their ``weight``).
        seed: base seed; a sample's masks depend only on ``(seed, epoch, sample_index)``.
        allow_missing_modalities: accept samples without some configured modality (it gets no
            tokens). Off by default: a corpus missing a modality is usually a bug.
        num_sentinels: sentinels of the text tokenizer ([S_0].. have ids 4..); a sequence gets at
            most ``num_sentinels - 2`` spans (further dropped tokens stay visible).
        validate: check every sample's ids and shapes in ``__call__`` (cheap; keep it on).
        min_input_tokens / min_target_tokens: random budgets (the reference's settings of these
            names): each sample uses a budget drawn uniformly in ``[min, budget]``; the batch is
            still padded to ``input_budget`` / ``target_budget``. ``None``: the fixed budget.

    Call it on a list of sample dicts (each with ``sample_index``); it returns the packed batch of
    ``notes/BATCH_FORMAT.md`` as int64 tensors, plus ``pixel_values`` (the 4M-7 layout) or
    ``continuous_inputs`` (several pixels inputs, sequence embeddings) for the dense inputs.
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
        min_input_tokens: int | None = None,
        min_target_tokens: int | None = None,
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
        self.min_input_tokens = self._minimum("min_input_tokens", min_input_tokens, self.input_budget, 1)
        self.min_target_tokens = self._minimum("min_target_tokens", min_target_tokens, self.target_budget, 0)
        self.seed = int(seed)
        self.epoch = 0
        self.allow_missing_modalities = bool(allow_missing_modalities)
        self.num_sentinels = int(num_sentinels)
        self.validate = bool(validate)

        self.layouts = modality_layouts(config)
        self.modality_names = [layout.name for layout in self.layouts]
        self.layout_by_name = {layout.name: layout for layout in self.layouts}
        self.kinds = [layout.kind for layout in self.layouts]
        self.is_input = np.array([layout.is_input for layout in self.layouts])
        self.has_targets = np.array([layout.can_be_target for layout in self.layouts])
        self.is_image = np.array([layout.is_grid for layout in self.layouts])
        self.cells = np.array([layout.num_positions if layout.is_grid else 0 for layout in self.layouts])
        self.image_ids = [i for i, layout in enumerate(self.layouts) if layout.is_grid]
        self.span_ids = [i for i, layout in enumerate(self.layouts) if layout.is_span_masked]
        self.continuous_names = [layout.name for layout in self.layouts if layout.kind in CONTINUOUS_KINDS]
        self.continuous_field = uses_continuous_inputs_field(config)

        self.components = self._resolve_strategy(strategy)
        weights = np.array([c.weight for c in self.components], dtype=np.float64)
        self.component_cdf = np.cumsum(weights / weights.sum())
        self.input_alphas = np.array([[c.input_alphas.get(n, 0.0) for n in self.modality_names] for c in self.components])
        self.target_alphas = np.array([[c.target_alphas.get(n, 0.0) for n in self.modality_names] for c in self.components])
        self.keep_modes = [[c.keep.get(n, "random") for n in self.modality_names] for c in self.components]
        self._check_sentinels()
        self._check_budgets_fit_config()

    # ---- construction checks -------------------------------------------------------------------
    @staticmethod
    def _minimum(name: str, value, budget: int, lowest: int) -> int | None:
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not lowest <= value <= budget:
            raise ValueError(f"{name} must be an int in [{lowest}, {budget}] (the budget), got {value!r}.")
        return int(value)

    def _resolve_strategy(self, strategy) -> list[DirichletMasking]:
        components = resolve_strategy(strategy, self.config)
        for component in components:
            for name, alpha in component.input_alphas.items():
                if alpha > 0 and name not in self.config.input_modalities:
                    raise ValueError(
                        f"Masking component {component.name!r}: input_alphas names {name!r}, which is not in "
                        f"config.input_modalities {self.config.input_modalities}."
                    )
            for name, alpha in component.target_alphas.items():
                if alpha > 0 and name in self.config.modality_specs and self.config.modality(name).is_continuous:
                    raise ValueError(
                        f"Masking component {component.name!r}: modality {name!r} is a "
                        f"{self.config.modality(name).kind} input (input only); its target alpha must be 0, got {alpha}."
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
        for i in self.span_ids:
            layout = self.layouts[i]
            if layout.kind == "sequence" and SENTINEL_OFFSET + self.num_sentinels > layout.vocab_size:
                raise ValueError(
                    f"Modality {layout.name!r}: vocab_size {layout.vocab_size} cannot hold {self.num_sentinels} "
                    f"sentinels starting at id {SENTINEL_OFFSET}; pass a smaller num_sentinels."
                )
        if self.span_ids and self.num_sentinels < 3:
            raise ValueError(f"num_sentinels must be >= 3 ([S_1] and [S_2] for one span), got {self.num_sentinels}.")

    def _capacity(self, name: str, side: str) -> int:
        layout = self.layout_by_name[name]
        if side == "target" and not layout.can_be_target:
            return 0
        return layout.num_positions + (1 if side == "target" and layout.kind == "sequence" else 0)

    def _check_budgets_fit_config(self):
        most_inputs = sum(self._capacity(n, "input") for n in self.config.input_modalities)
        most_targets = sum(self._capacity(n, "target") for n in self.config.output_modalities)
        if self.input_budget > most_inputs:
            raise ValueError(
                f"input_budget {self.input_budget} is larger than all the tokens the input modalities "
                f"{self.config.input_modalities} can hold ({most_inputs}): the model's maximum."
            )
        if self.target_budget > most_targets:
            raise ValueError(
                f"target_budget {self.target_budget} is larger than all the tokens the output modalities "
                f"{self.config.output_modalities} can hold ({most_targets}): the model's maximum."
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
        """Check one sample against the config; return its arrays by modality name.

        Raises ValueError / TypeError naming the modality and field for: a missing modality
        (unless ``allow_missing_modalities``), a non-integer or non-1-D token array, a token array
        of the wrong size for its grid, an empty or too long sequence, an id outside
        ``[0, vocab_size)``, pixels or a sequence embedding of the wrong shape, a missing or
        negative ``sample_index``, and a sample with fewer tokens than the budgets.
        """
        arrays = read_sample(sample, self.layouts, self.allow_missing_modalities)
        where = f"sample {sample_index_of(sample)}"
        for side, budget, chosen in (("input", self.input_budget, self.is_input),
                                     ("target", self.target_budget, self.has_targets)):
            names = sorted(n for n in arrays if chosen[self.modality_names.index(n)])
            available = sum(available_tokens(self.layout_by_name[n], arrays[n], side) for n in names)
            if available < budget:
                raise ValueError(
                    f"{where}: {side}_budget {budget} is larger than the {available} tokens its {side} modalities "
                    f"{names} hold."
                )
        return arrays

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
        present = np.array([name in arrays for name in self.modality_names])
        component = self._choose_component(rng, present, sample[SAMPLE_INDEX_FIELD], arrays)
        input_budget, target_budget = self._draw_budgets(rng)
        lengths = np.array([len(arrays[n]) if present[i] and i in self.span_ids else 0 for i, n in enumerate(self.modality_names)])
        is_image, cells = self.is_image, self.cells
        input_alpha = np.where(present & self.is_input, self.input_alphas[component], 0.0)
        target_alpha = np.where(present & self.has_targets, self.target_alphas[component], 0.0)
        input_share = self._dirichlet(rng, input_alpha)
        target_share = self._dirichlet(rng, target_alpha)

        # Step 1: shares -> counts. Image cells are split between inputs (first) and targets.
        input_capacity = np.where(input_alpha > 0, np.where(is_image, cells, lengths), 0)
        input_counts = distribute_budget(input_budget, input_share, input_capacity)
        target_capacity = np.where(target_alpha > 0, np.where(is_image, cells - input_counts, lengths + 1), 0)
        target_counts = distribute_budget(target_budget, target_share, target_capacity)

        # Step 2: span-mask the sequences and sequence embeddings; they may use less than their counts.
        span_parts = {}
        for i in self.span_ids:
            if not present[i] or input_counts[i] + target_counts[i] == 0:
                input_counts[i] = target_counts[i] = 0
                continue
            keep = self.keep_modes[component][i]
            if self.kinds[i] == "sequence_embedding":
                span_parts[i] = self._mask_sequence_embedding(rng, len(arrays[self.modality_names[i]]), input_counts[i], keep)
                target = span_parts[i][1]
            else:
                tokens = arrays[self.modality_names[i]]
                span_parts[i] = self._mask_sequence(rng, tokens, input_counts[i], target_counts[i], keep)
                target = span_parts[i][1]
            input_counts[i] = len(span_parts[i][0])
            target_counts[i] = max(len(target) - 1, 0)

        # Step 3: what the sequences left over goes to image modalities with free cells.
        image_input = is_image & (input_alpha > 0)
        spare_inputs = input_budget - int(input_counts.sum())
        if spare_inputs > 0:
            input_counts += distribute_budget(spare_inputs, input_share, np.where(image_input, cells - input_counts, 0))
        image_target = is_image & (target_alpha > 0)
        target_counts = np.where(image_target, np.minimum(target_counts, cells - input_counts), target_counts)
        spare_targets = target_budget - int(target_counts.sum())
        if spare_targets > 0:
            room = np.where(image_target, cells - input_counts - target_counts, 0)
            target_counts += distribute_budget(spare_targets, target_share, room)

        # Step 4: positions. Images: one random permutation of the modality's own grid (inputs, then targets).
        encoder_parts, decoder_parts, dense = [], [], {}
        image_rows = [i for i in self.image_ids if input_counts[i] + target_counts[i] > 0]
        for i in range(len(self.layouts)):
            name, kind = self.modality_names[i], self.kinds[i]
            if i in span_parts and kind == "sequence_embedding":
                rows, _, zeroed = span_parts[i]
                encoder_parts.append((rows, i, np.arange(len(rows))))
                dense[name] = (arrays[name], zeroed)
            elif i in span_parts:
                masked_input, target = span_parts[i]
                encoder_parts.append((masked_input, i, np.arange(len(masked_input))))
                if len(target) > 1:
                    decoder_parts.append((target[:-1], i, self._decoder_positions(i, len(target) - 1), target[1:]))
            elif i in image_rows:
                order = rng.random(cells[i]).argsort()
                n_in, n_target = int(input_counts[i]), int(target_counts[i])
                input_positions = np.sort(order[:n_in])
                target_positions = np.sort(order[n_in : n_in + n_target])
                if kind == "pixels":
                    encoder_parts.append((np.zeros(n_in, dtype=np.int64), i, input_positions))
                    if n_in:
                        dense[name] = (arrays[name], None)
                else:
                    tokens = arrays[name]
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
            dense_inputs=dense,
        )

    def _draw_budgets(self, rng: np.random.Generator) -> tuple[int, int]:
        """This sample's input and target budgets: fixed, or uniform in [min_*_tokens, budget]."""
        input_budget, target_budget = self.input_budget, self.target_budget
        if self.min_input_tokens is not None:
            input_budget = int(rng.integers(self.min_input_tokens, self.input_budget + 1))
        if self.min_target_tokens is not None:
            target_budget = int(rng.integers(self.min_target_tokens, self.target_budget + 1))
        return input_budget, target_budget

    def _decoder_positions(self, i: int, count: int) -> np.ndarray:
        """0..count-1, restarting at 0 from the modality's decoder position limit (the reference's tables)."""
        positions = np.arange(count)
        limit = self.config.modality(self.modality_names[i]).decoder_position_limit
        return np.where(positions >= limit, 0, positions)

    def _arrays_unchecked(self, sample: Mapping) -> dict[str, np.ndarray]:
        arrays = {}
        for layout in self.layouts:
            value = sample.get(layout.field)
            if value is not None:
                arrays[layout.name] = as_array(value)
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

    @staticmethod
    def _keep_probability(rng: np.random.Generator, keep: str) -> float:
        """The reference's keep modes: ``random`` ~ U(0, 1), ``all`` 1, ``binary`` 0 or 1."""
        draw = rng.random()
        if keep == "all":
            return 1.0
        if keep == "binary":
            return float(draw < 0.5)
        return draw

    def _dropped_within(self, rng, length: int, n_input: int, keep_probability: float) -> np.ndarray:
        """Drop each token with probability 1 - p; while the span-masked input exceeds ``n_input``, p *= 0.9."""
        dropped = rng.random(length) >= keep_probability
        max_spans = self.num_sentinels - 2
        for _ in range(MAX_KEEP_RETRIES):
            masked_length = int((~dropped).sum()) + min(_count_spans(dropped), max_spans)
            if masked_length <= n_input:
                return dropped
            keep_probability *= 0.9
            dropped = rng.random(length) >= keep_probability
        return np.ones(length, dtype=bool)

    def _mask_sequence(
        self, rng: np.random.Generator, tokens: np.ndarray, n_input: int, n_target: int, keep: str = "random"
    ) -> tuple[np.ndarray, np.ndarray]:
        """Span-mask one sequence for ``n_input`` encoder and ``n_target`` decoder tokens.

        No target budget: the encoder sees the sequence as is (its first ``n_input`` tokens). No
        input budget: the whole sequence is one span, i.e. ``[S_1] text [S_2]`` (caption
        generation). Otherwise each token is kept with the keep mode's probability p, lowered
        (p *= 0.9, redrawn) while the masked input is longer than ``n_input``, as the reference does.
        Returns ``(encoder_tokens, target)`` with ``len(encoder_tokens) <= n_input`` and
        ``len(target) - 1 <= n_target`` decoder tokens.
        """
        keep_probability = self._keep_probability(rng, keep)
        if n_target == 0:
            dropped = np.zeros(len(tokens), dtype=bool)
        elif n_input == 0:
            dropped = np.ones(len(tokens), dtype=bool)
        else:
            dropped = self._dropped_within(rng, len(tokens), n_input, keep_probability)
        # k spans use [S_1]..[S_{k+1}], so the last sentinel [S_{num_sentinels-1}] allows k = num_sentinels - 2.
        masked_input, target, sentinel_positions = span_mask_sequence(tokens, dropped, max_spans=self.num_sentinels - 2)
        target = cut_target_at_sentinel(target, sentinel_positions, n_target)
        return masked_input[:n_input], target

    def _mask_sequence_embedding(
        self, rng: np.random.Generator, length: int, n_input: int, keep: str
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Span-mask the rows of a sequence embedding (input only), as the reference masks ``t5_caption``.

        A dropped span becomes one visible all-zero row (the reference's sentinel for vectors) at
        the span's first row. Returns ``(rows, no_target, zeroed)``: the (n,) rows the encoder
        reads in order, an empty target, and the rows to zero.
        """
        dropped = self._dropped_within(rng, length, n_input, self._keep_probability(rng, keep))
        span_starts = dropped & ~np.concatenate(([False], dropped[:-1]))
        rows = np.flatnonzero(~dropped | span_starts)[:n_input]
        return rows.astype(np.int64), np.zeros(0, dtype=np.int64), np.flatnonzero(span_starts)

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
        (-100 on padding) of shape (B, target_budget); and every dense input of the model:
        ``pixel_values`` (B, C, H, W) float32 in the 4M-7 layout, else ``continuous_inputs``
        ``{name: (B, C, H, W) pixels or (B, max_length, C) vectors}`` (zeros where a sample does not
        use it; a sequence embedding's dropped spans are zero rows).
        """
        if len(samples) == 0:
            raise ValueError("Cannot collate an empty list of samples.")
        return self.pack([self.mask_sample(sample) for sample in samples])

    def pack(self, masked_samples: Sequence[MaskedSample]) -> dict[str, torch.Tensor]:
        """Pad masked samples (each within this collator's budgets) into the batch ``__call__`` returns."""
        batch_size, l_in, l_dec = len(masked_samples), self.input_budget, self.target_budget
        input_ids = np.zeros((batch_size, l_in), dtype=np.int64)
        input_modality_ids = np.zeros_like(input_ids)
        input_positions = np.zeros_like(input_ids)
        attention_mask = np.zeros_like(input_ids)
        decoder_input_ids = np.zeros((batch_size, l_dec), dtype=np.int64)
        decoder_modality_ids = np.zeros_like(decoder_input_ids)
        decoder_positions = np.zeros_like(decoder_input_ids)
        decoder_attention_mask = np.zeros_like(decoder_input_ids)
        labels = np.full((batch_size, l_dec), IGNORE_INDEX, dtype=np.int64)
        dense_rows = []

        for row, masked in enumerate(masked_samples):
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
            dense_rows.append(masked.dense_inputs)

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
        # Every continuous input in every batch, zeros where unused: each process of a sharded (FSDP2) run must
        # give every parameter a gradient in every step, and the batch keeps one structure for torch.compile.
        dense = {name: self._stack_dense(name, dense_rows) for name in self.continuous_names}
        if self.continuous_field:
            batch[CONTINUOUS_INPUTS_FIELD] = dense
        elif dense:
            batch[PIXEL_VALUES_FIELD] = next(iter(dense.values()))
        return batch

    def _stack_dense(self, name: str, dense_rows: Sequence[dict]) -> torch.Tensor:
        """(B, C, S, S) pixels or (B, max_length, C) vectors of one continuous modality; zeros where unused."""
        layout = self.layout_by_name[name]
        if layout.kind == "pixels":
            shape = (layout.num_channels, layout.image_size, layout.image_size)
        else:
            shape = (layout.num_positions, layout.num_channels)
        stacked = np.zeros((len(dense_rows), *shape), dtype=np.float32)
        for row, rows in enumerate(dense_rows):
            if name not in rows:
                continue
            value, zeroed = rows[name]
            stacked[row, : len(value)] = value
            if zeroed is not None:
                stacked[row, zeroed] = 0.0
        return torch.from_numpy(stacked)


def _count_spans(dropped: np.ndarray) -> int:
    return int((dropped & ~np.concatenate(([False], dropped[:-1]))).sum())
