"""Throughput of the 4M masking collator, against the step time of a tiny FourMModel.

Synthetic 4M-7 samples (rgb pixels, 5 image-token modalities with the real vocab sizes, a caption
of 10-60 tokens and a det sequence of 5-150 tokens), the ``"4m7"`` masking mixture, budgets
128 / 128. For each grid (8x8 = 128 px, 14x14 = 224 px) and batch size it prints the collator's
samples/s (one process, median of several batches) and, when the model is importable, the
forward+backward time of the ``tiny`` preset on that very batch (fp32, CPU).

    python benchmarks/bench_collator.py [--threads 1] [--repeats 5] [--no-model]

``--layouts``: instead, the collator alone (one process, one worker) on the released layouts, variants
interleaved batch by batch: 4M-7 (8 modalities, 14x14 grids, the reference's 4M-7 mixture) beside 4M-21
(19 modalities: own grids, global embeddings, T5 caption vectors, the reference's 4M-21 mixture), at
budgets 128/128 and 256/256, on ``random_corpus`` samples of each layout (real vocabulary sizes).

    python benchmarks/bench_collator.py --layouts [--repeats 20] [--batch-size 32]
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


def layout_collators(batch_size: int, repeats: int) -> dict[str, tuple]:
    """name -> (collator, samples) for the 4M-7 and 4M-21 layouts at both budgets."""
    from fourm_hf.configuration_fourm import FOURM7_INPUTS, FOURM7_OUTPUTS
    from fourm_hf.data.masking import with_sample_index
    from fourm_hf.data.synthetic_corpus import random_corpus
    from fourm_hf.modalities import FOURM21_MODALITIES

    fourm21_extra = [spec.name for spec in FOURM21_MODALITIES]
    layouts = {
        "4M-7": (FourMConfig.from_preset("tiny", input_modalities=FOURM7_INPUTS, output_modalities=FOURM7_OUTPUTS),
                 "mix_mod7_all2allmix_rgb2all_capbias"),
        "4M-21": (FourMConfig.from_preset("tiny", input_modalities=FOURM7_INPUTS + fourm21_extra,
                                          output_modalities=FOURM7_OUTPUTS + [n for n in fourm21_extra if n != "t5_caption"]),
                  "mix_mod21_all2allmix_rgb2all_capT5bias"),
    }
    collators = {}
    for name, (config, mixture) in layouts.items():
        corpus = with_sample_index(random_corpus(config, batch_size * 4, seed=0, caption_length=(10, 60)).with_format("numpy"))
        samples = [corpus[i] for i in range(len(corpus))]
        for budget in (128, 256):
            collators[f"{name} {budget}/{budget}"] = (FourMMaskingCollator(config, budget, budget, strategy=mixture), samples)
    return collators


def bench_layouts(batch_size: int, repeats: int) -> None:
    collators = layout_collators(batch_size, repeats)
    times = {name: [] for name in collators}
    for r in range(repeats + 1):  # interleaved: every variant sees the same machine load
        for name, (collator, samples) in collators.items():
            start = time.perf_counter()
            collator([{**s, "sample_index": r * batch_size + i} for i, s in enumerate(samples[(r % 4) * batch_size:][:batch_size])])
            if r > 0:
                times[name].append(time.perf_counter() - start)
    base = statistics.median(times["4M-7 128/128"])
    print(f"collator alone, one process, batch {batch_size}, median of {repeats} batches per variant (interleaved)")
    print(f"{'layout budgets':>16} {'ms/batch':>9} {'samples/s':>10} {'time vs 4M-7 128/128':>21}")
    for name, values in times.items():
        seconds = statistics.median(values)
        print(f"{name:>16} {seconds * 1000:9.1f} {batch_size / seconds:10.0f} {seconds / base:20.2f}x")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1, help="torch threads for the model step")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-model", action="store_true", help="only time the collator")
    parser.add_argument("--layouts", action="store_true", help="the collator on the 4M-7 and 4M-21 layouts")
    parser.add_argument("--batch-size", type=int, default=32, help="batch size of --layouts")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.layouts:
        bench_layouts(args.batch_size, args.repeats)
        return
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
