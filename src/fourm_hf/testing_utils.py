"""Random but well-formed inputs for tests and benchmarks (random weights are fine for speed)."""

from __future__ import annotations

import torch

from .configuration_fourm import FourMConfig
from .data.masking.layout import CONTINUOUS_INPUTS_FIELD, check_trainable_layout, uses_continuous_inputs_field
from .data.scenes import SCENE_CLASSES
from .modalities import get_modality
from .tokenizers.vqvae import FourMVQVAE, FourMVQVAEConfig


def _split_budget(budget: int, capacities: list[int], generator: torch.Generator) -> list[int]:
    """Split ``budget`` tokens over modalities at random, never exceeding a modality's capacity."""
    counts = [0] * len(capacities)
    for _ in range(min(budget, sum(capacities))):
        open_slots = [i for i, (c, cap) in enumerate(zip(counts, capacities)) if c < cap]
        counts[open_slots[int(torch.randint(len(open_slots), (1,), generator=generator))]] += 1
    return counts


def random_packed_batch(
    config: FourMConfig,
    batch_size: int = 2,
    input_budget: int | None = None,
    target_budget: int | None = None,
    seed: int = 0,
    full: bool = False,
) -> dict[str, torch.Tensor]:
    """A packed batch in FourMModel's format with random modalities, positions and ids.

    Inputs and targets of an image modality are disjoint and lie on its own grid; sequence targets
    are contiguous and in order. With ``full=False`` every sample leaves a few random padding slots
    at the end. Dense inputs come as ``pixel_values`` in the 4M-7 layout, else as
    ``continuous_inputs`` (every pixels input at its own size, sequence embeddings
    (B, max_length, C)), as :class:`~fourm_hf.data.masking.FourMMaskingCollator` makes them.
    """
    check_trainable_layout(config, "random_packed_batch")
    generator = torch.Generator().manual_seed(seed)
    input_budget = input_budget or config.input_budget
    target_budget = target_budget or config.target_budget
    batch = {key: torch.zeros(batch_size, input_budget, dtype=torch.long) for key in
             ("input_ids", "input_modality_ids", "input_positions", "attention_mask")}
    batch.update({key: torch.zeros(batch_size, target_budget, dtype=torch.long) for key in
                  ("decoder_input_ids", "decoder_modality_ids", "decoder_positions", "decoder_attention_mask")})
    batch["labels"] = torch.full((batch_size, target_budget), -100, dtype=torch.long)
    dense = {}
    for name in config.input_modalities:
        spec = config.modality(name)
        if spec.kind == "pixels":
            size = config.modality_image_size(name)
            dense[name] = torch.randn(batch_size, spec.num_channels, size, size, generator=generator)
        elif spec.kind == "sequence_embedding":
            dense[name] = torch.randn(batch_size, spec.max_length, spec.num_channels, generator=generator)
    if dense and uses_continuous_inputs_field(config):
        batch[CONTINUOUS_INPUTS_FIELD] = dense
    elif dense:
        batch["pixel_values"] = next(iter(dense.values()))
    for row in range(batch_size):
        used_in = input_budget if full else input_budget - int(torch.randint(0, max(1, input_budget // 4), (1,), generator=generator))
        used_out = target_budget if full else target_budget - int(torch.randint(0, max(1, target_budget // 4), (1,), generator=generator))
        taken = _fill_inputs(config, batch, row, used_in, generator)
        _fill_targets(config, batch, row, used_out, taken, generator)
    return batch


def _fill_inputs(config, batch, row, budget, generator) -> dict[str, set]:
    names = config.input_modalities
    counts = _split_budget(budget, [config.num_positions(n) // 2 for n in names], generator)
    slot, taken = 0, {}
    for name, count in zip(names, counts):
        spec = config.modality(name)
        positions = torch.arange(count) if spec.has_1d_positions else torch.randperm(config.num_positions(name), generator=generator)[:count]
        taken[name] = set(positions.tolist())
        if spec.kind == "pixels":
            ids = torch.zeros(count, dtype=torch.long)
        elif spec.kind == "sequence_embedding":
            ids = positions.clone()  # the rows of the embedding the tokens read
        else:
            ids = torch.randint(spec.vocab_size, (count,), generator=generator)
        batch["input_ids"][row, slot:slot + count] = ids
        batch["input_modality_ids"][row, slot:slot + count] = config.modality_id(name)
        batch["input_positions"][row, slot:slot + count] = positions
        batch["attention_mask"][row, slot:slot + count] = 1
        slot += count
    return taken


def _fill_targets(config, batch, row, budget, taken, generator) -> None:
    names = config.output_modalities
    capacities = [config.num_positions(n) - len(taken.get(n, ())) if not config.modality(n).is_sequence
                  else config.num_positions(n) // 2 for n in names]
    counts = _split_budget(budget, capacities, generator)
    slot = 0
    for name, count in zip(names, counts):
        spec = config.modality(name)
        if spec.is_sequence:
            positions = torch.arange(count).masked_fill(torch.arange(count) >= spec.decoder_position_limit, 0)
            tokens = torch.randint(spec.vocab_size, (count + 1,), generator=generator)
            inputs, labels = tokens[:-1], tokens[1:]
        else:
            free = torch.tensor(sorted(set(range(config.num_positions(name))) - taken.get(name, set())), dtype=torch.long)
            positions = free[torch.randperm(len(free), generator=generator)[:count]]
            inputs, labels = torch.zeros(count, dtype=torch.long), torch.randint(spec.vocab_size, (count,), generator=generator)
        batch["decoder_input_ids"][row, slot:slot + count] = inputs
        batch["decoder_modality_ids"][row, slot:slot + count] = config.modality_id(name)
        batch["decoder_positions"][row, slot:slot + count] = positions
        batch["decoder_attention_mask"][row, slot:slot + count] = 1
        batch["labels"][row, slot:slot + count] = labels
        slot += count


def tiny_config(**overrides) -> FourMConfig:
    """A 4M-7 config small enough for unit tests: 32 px images, 4x4 grid, small vocabularies."""
    vocab = {"tok_rgb": 64, "tok_depth": 32, "tok_normal": 32, "tok_semseg": 16, "tok_clip": 32, "caption": 96, "det": 96}
    specs = {name: get_modality(name).replace(vocab_size=size, **({"max_length": 24} if name in ("caption", "det") else {})).to_dict()
             for name, size in vocab.items()}
    specs["rgb"] = get_modality("rgb").to_dict()
    settings = dict(hidden_size=64, num_encoder_layers=2, num_decoder_layers=2, num_attention_heads=2, image_size=32,
                    patch_size=8, modality_specs=specs, input_budget=24, target_budget=24)
    settings.update(overrides)
    return FourMConfig(**settings)


def tiny_vqvae(kind: str, image_size: int = 32, patch_size: int = 8, seed: int = 0, vocab_size: int = 256):
    """An untrained, very small FourMVQVAE for ``kind`` (rgb/depth/normal/semseg), deterministic per seed.

    Semantic segmentation uses the scene corpus's class count.
    """
    options = dict(input_kind=kind, image_size=image_size, patch_size=patch_size, vocab_size=vocab_size,
                   base_channels=8, max_channels=16)
    if kind == "semseg":
        options["num_classes"] = len(SCENE_CLASSES)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return FourMVQVAE(FourMVQVAEConfig(**options))
