"""A synthetic corpus in the training format of any model layout (random ids), for smoke tests and examples."""

from __future__ import annotations

import numpy as np

from ..configuration_fourm import FourMConfig
from .masking.layout import sample_field


def random_corpus(config: FourMConfig, num_samples: int, seed: int = 0, caption_length: tuple[int, int] = (4, 12)):
    """A synthetic corpus in the training format of ``config``'s layout (random ids; smoke tests, examples).

    Every column has the shape its modality needs (:mod:`fourm_hf.data.masking.layout`): a full
    grid of ids per image modality (its own grid), text ids ending with [EOS] = 3, pixels at each
    pixels input's own size, (N, C) vectors for a sequence embedding. Ids depend on a per-sample
    "scene" value so there is structure to learn (a sample's tokens correlate across modalities).
    """
    import datasets

    rng = np.random.default_rng(seed)
    columns = {name: sample_field(config, name) for name in config.modality_names}
    rows = {column: [] for column in columns.values()}
    for _ in range(num_samples):
        scene = rng.integers(0, 4)
        for name, column in columns.items():
            rows[column].append(_random_column_value(config, name, scene, rng, caption_length))
    features = datasets.Features({column: _column_feature(config, name) for name, column in columns.items()})
    return datasets.Dataset.from_dict(rows, features=features)


def _random_column_value(config: FourMConfig, name: str, scene: int, rng: np.random.Generator, caption_length) -> np.ndarray:
    spec = config.modality(name)
    if spec.kind == "pixels":
        size = config.modality_image_size(name)
        return rng.normal(scene - 1.5, 0.5, (spec.num_channels, size, size)).astype(np.float32)
    if spec.kind == "image_tokens":
        base = (scene * spec.vocab_size) // 4
        return (base + rng.integers(0, max(1, spec.vocab_size // 8), config.num_positions(name))).astype(np.int32)
    length = int(rng.integers(caption_length[0], min(caption_length[1], spec.max_length - 1) + 1))
    if spec.kind == "sequence_embedding":
        return rng.normal(scene - 1.5, 1.0, (length + 1, spec.num_channels)).astype(np.float32)
    words = 10 + scene * 4 + rng.integers(0, 4, length)
    return np.append(np.minimum(words, spec.vocab_size - 1), 3).astype(np.int32)


def _column_feature(config: FourMConfig, name: str):
    import datasets

    spec = config.modality(name)
    if spec.kind == "pixels":
        size = config.modality_image_size(name)
        return datasets.Array3D((spec.num_channels, size, size), "float32")
    if spec.kind == "image_tokens":
        return datasets.List(datasets.Value("int32"), length=config.num_positions(name))
    if spec.kind == "sequence_embedding":
        return datasets.Array2D((None, spec.num_channels), "float32")
    return datasets.List(datasets.Value("int32"))


__all__ = ["random_corpus"]
