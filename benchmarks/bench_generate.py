"""Latency of generation: the cached/batched sampler against the naive path, in the same run.

Scenarios (224 px images, 14x14 token grids, random weights, fp32, CPU, one thread):
  (a) caption:  rgb pixels -> a 32-token caption (autoregressive); caption_x8: 8 images at once
  (b) guided:   rgb pixels -> tok_depth, MaskGIT 8 steps, classifier-free guidance 3.0
  (c) chained:  rgb pixels -> tok_rgb, tok_depth, tok_normal, tok_semseg, tok_clip (MaskGIT 8 steps
                each), then a 32-token caption and 32 tokens of boxes, each target an input of the next
The naive path recomputes the decoder prefix and its cross-attention keys/values at every
autoregressive step and runs one forward per guidance pass (the encoder runs once per sequence in
both paths, as in the reference sampler). Both use the same seed; the script checks that they
produce identical tokens.

``--compare-schedules`` also times guided MaskGIT (rgb pixels -> tok_depth, CFG) with our ``cosine``
token schedule against the reference's (``ml4m_cosine``), interleaved, and counts the decoder
queries each decodes (every still-unknown position of every guidance pass at every step).

    python benchmarks/bench_generate.py                      # tiny preset
    python benchmarks/bench_generate.py --compare-schedules --scenarios none
    python benchmarks/bench_generate.py --presets base --repeats 1 --scenarios caption guided_maskgit caption_x8
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch

from fourm_hf import FourMConfig, FourMModel
from fourm_hf.modeling.generation import build_generation_schedule, generate, reveal_counts
from fourm_hf.output_paths import write_atomic

DENSE = ["tok_rgb", "tok_depth", "tok_normal", "tok_semseg", "tok_clip"]


def scenarios(config: FourMConfig, caption_tokens: int, steps: int, cfg_scale: float, caption_batch: int) -> dict:
    """name -> (schedule, batch size)."""
    caption = build_generation_schedule(config, ["rgb"], ["caption"], tokens_per_target=caption_tokens)
    rows = {
        "caption": (caption, 1),
        "guided_maskgit": (build_generation_schedule(config, ["rgb"], ["tok_depth"], decoding_steps=steps, cfg_scales=cfg_scale), 1),
        "rgb_to_all": (build_generation_schedule(
            config, ["rgb"], DENSE + ["caption", "det"], decoding_steps=steps,
            tokens_per_target=[None] * len(DENSE) + [caption_tokens, caption_tokens],
        ), 1),
    }
    if caption_batch > 1:
        rows[f"caption_x{caption_batch}"] = (caption, caption_batch)
    return rows


def timed(model, schedule, pixel_values, seed: int, naive: bool):
    start = time.perf_counter()
    out = generate(model, {}, schedule, torch.Generator().manual_seed(seed), pixel_values=pixel_values, naive=naive)
    return time.perf_counter() - start, out


def bench_preset(preset: str, args) -> list[dict]:
    config = FourMConfig.from_preset(preset)  # 224 px, 16 px patches: 14x14 grids
    torch.manual_seed(0)
    model = FourMModel(config).eval()
    rows = []
    for name, (schedule, batch) in scenarios(config, args.caption_tokens, args.steps, args.cfg_scale, args.caption_batch).items():
        if args.scenarios and name not in args.scenarios:
            continue
        pixel_values = torch.randn(batch, 3, config.image_size, config.image_size, generator=torch.Generator().manual_seed(1))
        fast_times, naive_times, identical = [], [], True
        for repeat in range(args.repeats):  # interleaved, so machine-load drift hits both alike
            fast_time, fast_out = timed(model, schedule, pixel_values, args.seed, naive=False)
            naive_time, naive_out = timed(model, schedule, pixel_values, args.seed, naive=True)
            fast_times.append(fast_time)
            naive_times.append(naive_time)
            identical &= fast_out.keys() == naive_out.keys() and all(torch.equal(fast_out[k], naive_out[k]) for k in fast_out)
        fast, naive = statistics.median(fast_times), statistics.median(naive_times)
        lengths = {k: int((v != 0).sum()) for k, v in fast_out.items() if config.modality(k).is_sequence}
        row = dict(preset=preset, scenario=name, fast_s=round(fast, 3), naive_s=round(naive, 3),
                   speedup=round(naive / fast, 2), identical_tokens=identical, sequence_lengths=lengths)
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def decoder_queries(num_tokens: int, steps: int, schedule: str, passes: int) -> int:
    """Positions the decoder predicts over a MaskGIT run: the unknown ones at every step, per pass."""
    counts = reveal_counts(num_tokens, steps, schedule)
    return passes * sum(num_tokens - sum(counts[:step]) for step in range(steps) if counts[step])


def compare_schedules(preset: str, args) -> list[dict]:
    """Guided MaskGIT with our cosine against the reference's cosine: decoder queries and seconds."""
    config = FourMConfig.from_preset(preset)
    torch.manual_seed(0)
    model = FourMModel(config).eval()
    pixel_values = torch.randn(1, 3, config.image_size, config.image_size, generator=torch.Generator().manual_seed(1))
    names = ("cosine", "ml4m_cosine")
    plans = {name: build_generation_schedule(config, ["rgb"], ["tok_depth"], decoding_steps=args.steps,
                                             cfg_scales=args.cfg_scale, token_decoding_schedules=name) for name in names}
    times = {name: [] for name in names}
    for _ in range(args.repeats):  # interleaved
        for name in names:
            times[name].append(timed(model, plans[name], pixel_values, args.seed, naive=False)[0])
    rows = []
    for name in names:
        row = dict(preset=preset, token_schedule=name, counts=reveal_counts(config.grid_size**2, args.steps, name),
                   decoder_queries=decoder_queries(config.grid_size**2, args.steps, name, passes=2),
                   seconds=round(statistics.median(times[name]), 3))
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=["tiny"], help="size presets (tiny, base, ...)")
    parser.add_argument("--scenarios", nargs="+", help="only these (caption, guided_maskgit, rgb_to_all, caption_x8)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per path; the median is reported")
    parser.add_argument("--caption-tokens", type=int, default=32)
    parser.add_argument("--steps", type=int, default=8, help="MaskGIT steps per image target")
    parser.add_argument("--cfg-scale", type=float, default=3.0)
    parser.add_argument("--caption-batch", type=int, default=8, help="also time a batch of this many captions (1 = skip)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (others share the machine)")
    parser.add_argument("--json", help="also write the rows to this file")
    parser.add_argument("--compare-schedules", action="store_true",
                        help="also compare our cosine token schedule with the reference's (guided MaskGIT)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s), fp32 CPU, load average {os.getloadavg()[0]:.1f}")
    rows = [row for preset in args.presets for row in bench_preset(preset, args)]
    print(f"\n{'preset':<6} {'scenario':<15} {'cached/batched s':>16} {'naive s':>9} {'speedup':>8}  identical")
    for row in rows:
        print(f"{row['preset']:<6} {row['scenario']:<15} {row['fast_s']:>16.3f} {row['naive_s']:>9.3f} "
              f"{row['speedup']:>7.2f}x  {row['identical_tokens']}")
    if args.compare_schedules:
        comparison = [row for preset in args.presets for row in compare_schedules(preset, args)]
        print(f"\n{'preset':<6} {'token schedule':<14} {'decoder queries':>15} {'seconds':>8}")
        for row in comparison:
            print(f"{row['preset']:<6} {row['token_schedule']:<14} {row['decoder_queries']:>15} {row['seconds']:>8.3f}")
        rows += comparison
    if args.json:
        write_atomic(args.json, json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
