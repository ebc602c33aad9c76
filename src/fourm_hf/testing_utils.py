"""Random but well-formed inputs for tests and benchmarks (random weights are fine for speed)."""

from __future__ import annotations

import torch

from .configuration_fourm import FourMConfig
from .data.masking.layout import check_trainable_layout
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

    Inputs and targets of an image modality are disjoint; sequence targets are contiguous and in
    order. With ``full=False`` every sample leaves a few random padding slots at the end. The
    config must have the 4M-7 layout (``data.masking.layout.check_trainable_layout``).
    """
    check_trainable_layout(config, "random_packed_batch")  # one grid, one (3, S, S) pixel_values input
    generator = torch.Generator().manual_seed(seed)
    input_budget = input_budget or config.input_budget
    target_budget = target_budget or config.target_budget
    batch = {key: torch.zeros(batch_size, input_budget, dtype=torch.long) for key in
             ("input_ids", "input_modality_ids", "input_positions", "attention_mask")}
    batch.update({key: torch.zeros(batch_size, target_budget, dtype=torch.long) for key in
                  ("decoder_input_ids", "decoder_modality_ids", "decoder_positions", "decoder_attention_mask")})
    batch["labels"] = torch.full((batch_size, target_budget), -100, dtype=torch.long)
    if any(config.modality(n).kind == "pixels" for n in config.input_modalities):
        batch["pixel_values"] = torch.randn(batch_size, 3, config.image_size, config.image_size, generator=generator)
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
        positions = torch.arange(count) if spec.is_sequence else torch.randperm(config.num_positions(name), generator=generator)[:count]
        taken[name] = set(positions.tolist())
        ids = torch.zeros(count, dtype=torch.long) if spec.kind == "pixels" else torch.randint(spec.vocab_size, (count,), generator=generator)
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
            positions = torch.arange(count)
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
