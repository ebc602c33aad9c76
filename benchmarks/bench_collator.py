"""Throughput of the 4M masking collator, against the step time of a tiny FourMModel.

Synthetic 4M-7 samples (rgb pixels, 5 image-token modalities with the real vocab sizes, a caption
of 10-60 tokens and a det sequence of 5-150 tokens), the ``"4m7"`` masking mixture, budgets
128 / 128. For each grid (8x8 = 128 px, 14x14 = 224 px) and batch size it prints the collator's
samples/s (one process, median of several batches) and, when the model is importable, the
forward+backward time of the ``tiny`` preset on that very batch (fp32, CPU).

    python benchmarks/bench_collator.py [--threads 1] [--repeats 5] [--no-model]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from fourm_hf.configuration_fourm import FourMConfig
from fourm_hf.data.masking import EOS_ID, FourMMaskingCollator


def synthetic_samples(config: FourMConfig, count: int, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    cells = config.grid_size**2
    samples = []
    for index in range(count):
        sample = {"sample_index": index}
        for name in config.modality_names:
            spec = config.modality(name)
            if spec.kind == "image_tokens":
                sample[name] = rng.integers(0, spec.vocab_size, cells)
            elif spec.kind == "pixels":
                sample["pixel_values"] = rng.standard_normal((3, config.image_size, config.image_size), dtype=np.float32)
            else:
                length = int(rng.integers(10, 61) if name == "caption" else rng.integers(5, 151))
                sample[name] = np.append(rng.integers(300, spec.vocab_size, length - 1), EOS_ID)
        samples.append(sample)
    return samples


def time_collator(collator, samples, batch_size, repeats):
    """Median seconds per batch over ``repeats`` distinct batches (after one warm-up)."""
    times = []
    for r in range(repeats + 1):
        batch_samples = samples[(r * batch_size) % len(samples) :][:batch_size]
        start = time.perf_counter()
        batch = collator(batch_samples)
        if r > 0:
            times.append(time.perf_counter() - start)
    return statistics.median(times), batch


def time_model_step(config, batch, repeats):
    """Median seconds of one forward+backward of FourMModel on ``batch``; None if no model."""
    try:
        from fourm_hf.modeling.modeling_fourm import FourMModel
    except ImportError as error:
        print(f"  (model not importable: {error})")
        return None
    torch.manual_seed(0)
    model = FourMModel(config)
    model.train()
    times = []
    for r in range(repeats + 1):
        model.zero_grad(set_to_none=True)
        start = time.perf_counter()
        loss = model(**batch).loss
        loss.backward()
        if r > 0:
            times.append(time.perf_counter() - start)
    assert torch.isfinite(loss), "model loss is not finite on the collated batch"
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1, help="torch threads for the model step")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-model", action="store_true", help="only time the collator")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s), masking preset 4m7, budgets 128/128")
    print(f"{'grid':>6} {'batch':>5} {'collator ms/batch':>18} {'collator samples/s':>19} {'tiny fwd+bwd ms':>16} {'model samples/s':>16}")
    for image_size in (128, 224):
        config = FourMConfig.from_preset("tiny", image_size=image_size, patch_size=16)
        collator = FourMMaskingCollator(config, input_budget=128, target_budget=128, strategy="4m7", seed=0)
        samples = synthetic_samples(config, 64 * (args.repeats + 1))
        for batch_size in (8, 64):
            seconds, batch = time_collator(collator, samples, batch_size, args.repeats)
            step = None if args.no_model else time_model_step(config, batch, max(1, args.repeats // 2))
            grid = f"{config.grid_size}x{config.grid_size}"
            model_cols = f"{step * 1000:16.1f} {batch_size / step:16.1f}" if step else f"{'-':>16} {'-':>16}"
            print(f"{grid:>6} {batch_size:5d} {seconds * 1000:18.2f} {batch_size / seconds:19.0f} {model_cols}")


if __name__ == "__main__":
    main()
