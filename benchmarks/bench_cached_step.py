"""One cached caption decoding step (base preset, random weights, one thread): before and after the step's clean-up.

"before": the KV cache grows by concatenation and the self-attention mask of the one new token is built every
step; "after" (what ``generate`` does now): the cache is preallocated for the longest row and written in place
and no mask is built for one new token. ``--eager-one-query`` makes "after" also compute the one-query
attentions eagerly (two matmuls) instead of with SDPA, an option that was measured and not kept. Both run the
same steps on the same encoder output (197 tokens), interleaved, median of ``--repeats``; the encoder pass is not timed. ``--attention`` times one attention call (SDPA against eager) at
the shapes of a cached step. ``--compile`` tries ``torch.compile(dynamic=True)`` on the cached step and reports
the compile time and the per-step time against eager (``--compile-limit`` seconds at most for the first run).

    python benchmarks/bench_cached_step.py --formats fp32 bf16 --batches 1 8 --repeats 3
    python benchmarks/bench_cached_step.py --attention
    python benchmarks/bench_cached_step.py --compile --formats fp32 --batches 1
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import time

import torch
import torch.nn.functional as F

import fourm_hf.modeling.layers as layers
from fourm_hf import FourMConfig, FourMModel
from fourm_hf.modeling.generation.packing import context_key_values, target_logits
from fourm_hf.modeling.layers import KVCache

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
CURRENT_ATTENTION = layers.attention
ENCODER_TOKENS = 197  # 196 rgb patches + the caption's [S_1]


def eager_one_query(query, key, value, bias, implementation, output_attentions=False):
    """The attention with one query computed eagerly (``q @ k^T``, softmax, ``@ v``) whatever the implementation."""
    if query.shape[-2] == 1:
        return CURRENT_ATTENTION(query, key, value, bias, "eager", output_attentions)
    return CURRENT_ATTENTION(query, key, value, bias, implementation, output_attentions)


def encoded_inputs(model, batch: int):
    config = model.config
    ids = dict(input_ids=torch.zeros(batch, ENCODER_TOKENS, dtype=torch.long),
               input_modality_ids=torch.full((batch, ENCODER_TOKENS), config.modality_id("tok_rgb")),
               input_positions=(torch.arange(ENCODER_TOKENS)[None] % 196).repeat(batch, 1))
    encoded = model.encode(**ids)
    return encoded, context_key_values(model, encoded)


def decode_steps(model, encoded, key_values, batch: int, steps: int, before: bool, step_function=None,
                 eager: bool = False) -> list[float]:
    """Seconds of each of ``steps`` cached caption steps (greedy), the "before" or the "after" way."""
    caption = model.config.modality_id("caption")
    caches = [KVCache() if before else KVCache(steps) for _ in model.decoder]
    layers.attention = eager_one_query if eager and not before else CURRENT_ATTENTION
    token, times = torch.full((batch, 1), 4), []
    try:
        for step in range(steps):
            start = time.perf_counter()
            extra = {"decoder_attention_mask": torch.ones_like(token)} if before else {}
            if step_function is not None:
                logits = step_function(token, torch.full_like(token, step), caches)
            else:
                states, _ = model.decode(encoded, token, torch.full_like(token, caption), torch.full_like(token, step),
                                         context_key_values=key_values, kv_caches=caches, **extra)
                logits = target_logits(model, "caption", states)
            token = logits.argmax(-1)
            times.append(time.perf_counter() - start)
    finally:
        layers.attention = CURRENT_ATTENTION
    return times


@torch.no_grad()
def bench_steps(args) -> list[dict]:
    config, rows = FourMConfig.from_preset(args.preset), []
    for fmt in args.formats:
        torch.manual_seed(0)
        model = FourMModel(config).eval().to(DTYPES[fmt])
        for batch in args.batches:
            encoded, key_values = encoded_inputs(model, batch)
            times = {True: [], False: []}
            for _ in range(args.repeats):
                for before in (True, False):
                    times[before].append(statistics.median(decode_steps(model, encoded, key_values, batch, args.steps, before,
                                                                        eager=args.eager_one_query)))
            old, new = statistics.median(times[True]), statistics.median(times[False])
            row = dict(format=fmt, batch=batch, before_ms_per_step=round(old * 1e3, 1), after_ms_per_step=round(new * 1e3, 1),
                       speedup=round(old / new, 2))
            print(json.dumps(row), flush=True)
            rows.append(row)
    return rows


@torch.no_grad()
def bench_attention(args) -> list[dict]:
    """One attention call of a cached step (12 heads of 64, one query) over S keys: SDPA against eager."""
    rows = []
    for fmt in args.formats:
        for batch in args.batches:
            for keys in (32, ENCODER_TOKENS):
                query, key, value = (torch.randn(batch, 12, length, 64).to(DTYPES[fmt]) for length in (1, keys, keys))
                bias = torch.zeros(batch, 1, 1, keys, dtype=DTYPES[fmt])
                calls = {"sdpa": lambda: F.scaled_dot_product_attention(query, key, value, attn_mask=bias),
                         "eager": lambda: CURRENT_ATTENTION(query, key, value, bias, "eager")}
                times = {name: [] for name in calls}
                for _ in range(args.repeats):
                    for name, call in calls.items():
                        call()
                        start = time.perf_counter()
                        for _ in range(100):
                            call()
                        times[name].append((time.perf_counter() - start) / 100)
                sdpa, eager = statistics.median(times["sdpa"]), statistics.median(times["eager"])
                row = dict(format=fmt, batch=batch, keys=keys, sdpa_us=round(sdpa * 1e6), eager_us=round(eager * 1e6),
                           eager_speedup=round(sdpa / eager, 2))
                print(json.dumps(row), flush=True)
                rows.append(row)
    return rows


@torch.no_grad()
def bench_compile(args) -> list[dict]:
    """torch.compile(dynamic=True) of the whole cached step (decode + head), against the same step in eager mode."""
    config, rows = FourMConfig.from_preset(args.preset), []
    for fmt in args.formats:
        torch.manual_seed(0)
        model = FourMModel(config).eval().to(DTYPES[fmt])
        for batch in args.batches:
            encoded, key_values = encoded_inputs(model, batch)
            caption = config.modality_id("caption")

            def step(token, position, caches):
                states, _ = model.decode(encoded, token, torch.full_like(token, caption), position,
                                         context_key_values=key_values, kv_caches=caches)
                return target_logits(model, "caption", states)

            compiled = torch.compile(step, dynamic=True)
            row = dict(format=fmt, batch=batch, compile_limit_s=args.compile_limit)
            signal.signal(signal.SIGALRM, lambda *_: (_ for _ in ()).throw(TimeoutError()))
            signal.alarm(args.compile_limit)
            start = time.perf_counter()
            try:
                decode_steps(model, encoded, key_values, batch, args.steps, False, compiled)
                row["first_run_s"] = round(time.perf_counter() - start, 1)
            except TimeoutError:
                row["first_run_s"] = f"> {args.compile_limit} (gave up)"
            finally:
                signal.alarm(0)
            if isinstance(row["first_run_s"], float):
                eager = statistics.median(decode_steps(model, encoded, key_values, batch, args.steps, False)[2:])
                fast = statistics.median(decode_steps(model, encoded, key_values, batch, args.steps, False, compiled)[2:])
                row.update(eager_ms_per_step=round(eager * 1e3, 1), compiled_ms_per_step=round(fast * 1e3, 1),
                           speedup=round(eager / fast, 2))
            print(json.dumps(row), flush=True)
            rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="base")
    parser.add_argument("--formats", nargs="+", default=["fp32", "bf16"], choices=list(DTYPES))
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--attention", action="store_true", help="time one attention call, SDPA against eager")
    parser.add_argument("--eager-one-query", action="store_true", help='"after" also computes one-query attention eagerly')
    parser.add_argument("--compile", action="store_true", help="try torch.compile on the cached step")
    parser.add_argument("--compile-limit", type=int, default=600, help="seconds allowed for the first compiled run")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s), load average {os.getloadavg()[0]:.1f}", flush=True)
    (bench_attention if args.attention else bench_compile if args.compile else bench_steps)(args)
    print(f"load average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
