"""Weighted dataset mixtures: one endless, seeded stream of samples drawn from several datasets.

Draw ``i`` of rank ``r`` comes from dataset ``k`` with probability ``w_k / sum(w)``: the choice is
made by ``numpy.random.default_rng((seed, r))``, an explicit generator (no global RNG), so the
sequence of datasets, and of samples, is a pure function of ``(seed, rank, world_size)``. Each
dataset is read in passes; pass ``p`` of dataset ``k`` on rank ``r`` visits that rank's part in an
order seeded by ``(seed, k, p)`` (Arrow: a permutation of the rank's rows; streamed shards:
``datasets``' shard shuffle and shuffle buffer, ``set_epoch(p)``). A dataset that runs out starts
its next pass while the others go on (the reference samples its datasets with replacement the same
way), so the stream never ends: the length of training is ``training.max_steps``.

Every sample gets ``sample_index = i * world_size + r`` (unique over ranks and draws: the key of its
masks) and ``dataset_index = k`` (which collator masks it: :class:`~fourm_hf.data.masking.mixture_collator.MixtureCollator`).

Ranks: each rank reads only its own part of every dataset (Arrow: a contiguous block of rows;
streamed shards: ``datasets.distributed.split_dataset_by_node``, whole shard files when their number
is a multiple of the world size). :func:`mixture_dataset` wraps the stream as a
``datasets.IterableDataset`` with one shard per rank, so ``accelerate`` (with
``dispatch_batches=False``) hands rank ``r`` exactly stream ``r``.

Resume: a resumed Trainer skips the batches already trained by iterating the stream again (the
stream is deterministic, so it continues at the same sample); with streamed sources this re-reads
the skipped rows.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from .masking.ids import SAMPLE_INDEX_FIELD
from .masking.mixture_collator import DATASET_INDEX_FIELD

DEFAULT_SHUFFLE_BUFFER = 1000


def _int_seed(*key: int) -> int:
    """A 32-bit seed derived from a tuple (for APIs that take one int)."""
    return int(np.random.SeedSequence([int(k) for k in key]).generate_state(1)[0])


class ArrowSource:
    """A map-style dataset (``datasets.Dataset`` or any ``__getitem__`` + ``__len__``) read in seeded passes."""

    def __init__(self, dataset):
        self.dataset = dataset

    def rows(self, rank: int, world_size: int) -> range:
        """This rank's contiguous block of rows (as ``split_dataset_by_node`` cuts a ``Dataset``)."""
        total = len(self.dataset)
        return range(total * rank // world_size, total * (rank + 1) // world_size)

    def iterate(self, rank: int, world_size: int, seed: int, pass_index: int) -> Iterator[dict]:
        rows = self.rows(rank, world_size)
        order = np.random.default_rng((seed, rank, pass_index)).permutation(len(rows))
        for position in order:
            yield self.dataset[rows[int(position)]]


class StreamSource:
    """A ``datasets.IterableDataset`` (streamed Parquet shards) read in seeded, shuffled passes."""

    def __init__(self, stream, shuffle_buffer: int = DEFAULT_SHUFFLE_BUFFER):
        self.stream = stream
        self.shuffle_buffer = int(shuffle_buffer)

    def iterate(self, rank: int, world_size: int, seed: int, pass_index: int) -> Iterator[dict]:
        from datasets.distributed import split_dataset_by_node

        part = split_dataset_by_node(self.stream, rank=rank, world_size=world_size) if world_size > 1 else self.stream
        if self.shuffle_buffer > 1:
            part = part.shuffle(seed=_int_seed(seed, rank), buffer_size=self.shuffle_buffer)
        part.set_epoch(pass_index)
        return iter(part)


@dataclass
class MixtureStream:
    """The endless weighted stream of one rank (see the module docstring).

    Args:
        sources: one :class:`ArrowSource` / :class:`StreamSource` per dataset.
        weights: sampling weights (> 0, finite), normalised to probabilities.
        names: dataset names for errors.
        seed: the mixture seed (``training.data_seed`` or ``training.seed``).
    """

    sources: Sequence
    weights: Sequence[float]
    names: Sequence[str]
    seed: int = 0

    def __post_init__(self):
        if not self.sources or len(self.sources) != len(self.weights) or len(self.sources) != len(self.names):
            raise ValueError("A mixture needs one weight and one name per dataset, and at least one dataset.")
        for name, weight in zip(self.names, self.weights):
            if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight) or weight <= 0:
                raise ValueError(f"dataset {name!r}: weight must be a finite number > 0, got {weight!r}.")
        weights = np.asarray(self.weights, dtype=np.float64)
        self.probabilities = weights / weights.sum()
        self.cdf = np.cumsum(self.probabilities)

    def iterate(self, rank: int = 0, world_size: int = 1) -> Iterator[dict]:
        """The samples of ``rank``, without end, each with ``sample_index`` and ``dataset_index``."""
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank}.")
        rng = np.random.default_rng((int(self.seed), int(rank)))
        iterators = [None] * len(self.sources)
        passes = [-1] * len(self.sources)
        for draw in itertools.count():
            k = min(int(np.searchsorted(self.cdf, rng.random(), side="right")), len(self.sources) - 1)
            sample = self._next_sample(k, iterators, passes, rank, world_size)
            yield {**sample, SAMPLE_INDEX_FIELD: draw * world_size + rank, DATASET_INDEX_FIELD: k}

    def _next_sample(self, k: int, iterators: list, passes: list, rank: int, world_size: int) -> dict:
        """The next sample of dataset ``k``, starting its next pass when the current one is over."""
        for _ in range(2):
            if iterators[k] is not None:
                sample = next(iterators[k], None)
                if sample is not None:
                    return dict(sample)
            passes[k] += 1
            iterators[k] = iter(self.sources[k].iterate(rank, world_size, _int_seed(self.seed, k), passes[k]))
        raise ValueError(f"dataset {self.names[k]!r}: rank {rank} of {world_size} got no rows (the dataset has fewer "
                         "rows, or shards, than processes).")


def _rank_streams(ranks: list[int], stream: MixtureStream, world_size: int):
    """``from_generator``'s generator: the streams of ``ranks`` (one after sharding by accelerate)."""
    for rank in ranks:
        yield from stream.iterate(rank, world_size)


def mixture_dataset(stream: MixtureStream, world_size: int = 1):
    """The stream as a ``datasets.IterableDataset`` with ``n_shards = world_size`` (shard ``r`` = rank ``r``'s stream).

    ``accelerate`` (``dispatch_batches=False``) and ``split_dataset_by_node`` give rank ``r`` shard ``r``.
    """
    import datasets

    return datasets.IterableDataset.from_generator(
        _rank_streams, gen_kwargs={"ranks": list(range(world_size)), "stream": stream, "world_size": world_size}
    )


__all__ = ["ArrowSource", "MixtureStream", "StreamSource", "mixture_dataset"]
