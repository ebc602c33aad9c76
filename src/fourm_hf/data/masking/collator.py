"""``FourMMaskingCollator``: per-sample 4M masking (steps in ``fourm_hf.data.masking``), packed to fixed lengths."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from ...configuration_fourm import FourMConfig
from .budgets import distribute_budget
from .layout import check_trainable_layout
from .ids import (
    DEFAULT_NUM_SENTINELS,
    IGNORE_INDEX,
    PIXEL_VALUES_FIELD,
    SAMPLE_INDEX_FIELD,
    SENTINEL_OFFSET,
)
from .spans import cut_target_at_sentinel, span_mask_sequence
from .strategies import DirichletMasking, masking_preset


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
        config: the model's :class:`FourMConfig` (modality ids, grid size, vocab sizes). Every image
            modality must be on the model's one patch grid, with sin-cos positions, and at most one
            input may be pixels (the 4M-7 layout); other layouts (4M-21, SR) are a ValueError
            (``layout.check_trainable_layout``).
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
        check_trainable_layout(config, "FourMMaskingCollator")  # one grid, sin-cos positions, one pixels input
        pixel_names = [name for name, kind in zip(self.modality_names, self.kinds) if kind == "pixels"]
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
