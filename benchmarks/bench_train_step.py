"""Training-step speed of FourMModel: forward + backward + AdamW, SDPA against eager in one run.

For each size it prints the step time, tokens/s, the matmul FLOPs a step needs (counted from the
architecture) and the achieved FLOP/s as a fraction of the fp32 matmul peak measured on this
machine at the start of the same run, with the same thread count.

    python benchmarks/bench_train_step.py                      # tiny-256 and base, 1 thread
    python benchmarks/bench_train_step.py --sizes tiny-256 --steps 5 --threads 2

"tiny-256" is the 256-dim 4+4 model of the issue; "base" the 768-dim 12+12 preset. Batch 8 with
128 input / 128 target tokens at 224 px (14x14 grids), 4M-7 modalities with their real vocab sizes.
"""

from __future__ import annotations

import argparse
import time

import torch

from fourm_hf import FourMConfig, FourMModel
from fourm_hf.testing_utils import random_packed_batch

SIZES = {
    "tiny-256": dict(hidden_size=256, num_encoder_layers=4, num_decoder_layers=4, num_attention_heads=4),
    "tiny": dict(hidden_size=384, num_encoder_layers=6, num_decoder_layers=6, num_attention_heads=6),
    "base": dict(hidden_size=768, num_encoder_layers=12, num_decoder_layers=12, num_attention_heads=12),
}


def matmul_peak_flops(threads: int, size: int = 1024, repeats: int = 20) -> float:
    """Best fp32 FLOP/s of a square matmul over a few repeats."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    for _ in range(3):
        a @ b
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


def step_flops(config: FourMConfig, batch: dict[str, torch.Tensor]) -> float:
    """Matmul FLOPs of one forward + backward (backward = 2x forward) for the real tokens of ``batch``."""
    dim, hidden = config.hidden_size, config.intermediate_size
    batch_size, enc_len = batch["attention_mask"].shape
    dec_len = batch["decoder_attention_mask"].shape[1]
    mlp = 3 * dim * hidden
    # Attention blocks run over padded lengths; linear layers over all slots as well.
    encoder = config.num_encoder_layers * batch_size * enc_len * (4 * dim * dim + mlp + 2 * enc_len * dim)
    decoder_per_token = 4 * dim * dim + 2 * dim * dim + mlp + 2 * dec_len * dim + 2 * enc_len * dim
    decoder = config.num_decoder_layers * batch_size * (dec_len * decoder_per_token + enc_len * 2 * dim * dim)
    context = batch_size * enc_len * dim * dim
    patches = batch_size * config.grid_size**2 * dim * 3 * config.patch_size**2 if "pixel_values" in batch else 0
    logits = 0
    for name in config.output_modalities:
        count = ((batch["decoder_modality_ids"] == config.modality_id(name)) & (batch["decoder_attention_mask"] == 1)).sum().item()
        logits += count * dim * config.modality(name).vocab_size
    forward = 2 * (encoder + decoder + context + patches + logits)
    return 3 * forward


def build_runner(config: FourMConfig, implementation: str):
    """A model + fused AdamW with the given attention backend; returns a function doing one timed step."""
    config = FourMConfig(**config.to_dict())
    config._attn_implementation = implementation
    torch.manual_seed(0)
    model = FourMModel(config).train()
    # fused AdamW: what TrainingArguments(optim="adamw_torch_fused") uses; the per-tensor loop is
    # several times slower on CPU for the large 4M vocabulary tables
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)

    def step(batch) -> float:
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        model(**batch).loss.backward()
        optimizer.step()
        return time.perf_counter() - start

    return model, step


def time_backends(config: FourMConfig, batch, steps: int) -> dict[str, float]:
    """Median step time per attention backend, steps interleaved (sdpa, eager, sdpa, ...) so machine
    load drifts hit both alike; the first step of each warms up allocators and is not counted."""
    runners = {name: build_runner(config, name)[1] for name in ("sdpa", "eager")}
    times = {name: [] for name in runners}
    for index in range(steps + 1):
        for name, step in runners.items():
            seconds = step(batch)
            if index > 0:
                times[name].append(seconds)
    return {name: sorted(values)[len(values) // 2] for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=["tiny-256", "base"], choices=sorted(SIZES))
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    peak = matmul_peak_flops(args.threads)
    print(f"threads={args.threads} fp32 matmul peak (1024^3): {peak / 1e9:.1f} GFLOP/s")
    print(f"{'size':>9} {'attn':>5} {'params':>8} {'step s':>8} {'tokens/s':>9} {'GFLOP/step':>11} {'GFLOP/s':>8} {'of peak':>8}")
    for size in args.sizes:
        config = FourMConfig(**SIZES[size], image_size=224, patch_size=16, input_budget=128, target_budget=128)
        batch = random_packed_batch(config, batch_size=args.batch_size, seed=0, full=True)
        flops = step_flops(config, batch)
        tokens = batch["attention_mask"].sum().item() + batch["decoder_attention_mask"].sum().item()
        params = sum(p.numel() for p in FourMModel(config).parameters()) / 1e6
        results = time_backends(config, batch, args.steps)
        for implementation, seconds in results.items():
            print(f"{size:>9} {implementation:>5} {params:7.1f}M {seconds:8.3f} {tokens / seconds:9.0f} "
                  f"{flops / 1e9:11.1f} {flops / seconds / 1e9:8.1f} {flops / seconds / peak:7.0%}")
        print(f"{size:>9} eager/sdpa step-time ratio: {results['eager'] / results['sdpa']:.3f} (>1 means SDPA is faster)")


if __name__ == "__main__":
    main()
