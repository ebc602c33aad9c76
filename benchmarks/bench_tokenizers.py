"""Encode / decode time and peak memory of the released 4M tokenizer architectures, at released sizes.

Random weights (the architecture, not the weights, sets the cost), fp32, CPU. Each family runs in
its own child process so its peak resident memory (``ru_maxrss``) is its own.

* DiVAE (``rgb_16k_224-448`` layout: ViT-B encoder, ``unet_patched`` decoder, 16k codes): encode a
  batch at 224 px; decode it with DDIM, timing every UNet call (= one diffusion step). Because a
  full decode at batch 8 takes minutes on a small CPU, ``--divae-steps`` (default 2) steps are run
  and the time of a ``--extrapolate-steps``-step decode (default 25, the package default) is
  extrapolated from the measured per-step time (the steps cost the same: one UNet call each).
* ViT VQ-VAE, semseg (``semseg_4k_224-448``: 134 classes, 64-wide class embedding, ViT-B / ViT-B)
  and feature map (``CLIP-B16_8k_224-448``: a 512 x 14 x 14 grid, no patch projection).
* MLP (``DINOv2-B14-global_8k_16_224``: BottleneckMLP B_6-Wi_1024, memcodes 16 x 8192).

Usage::

    python benchmarks/bench_tokenizers.py                       # batch 8, 224 px, 1 thread
    python benchmarks/bench_tokenizers.py --families divae --batch-size 2 --divae-steps 3
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

FAMILIES = ("divae", "vit_vqvae_semseg", "vit_vqvae_clip", "mlp_dinov2_global")


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _timed(function, repeats: int) -> tuple[float, object]:
    """Median wall time of ``repeats`` calls (after one warm-up call) and the last result."""
    result = function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def build(family: str):
    """(model, encoder input) of one family at its released size, random weights."""
    import torch

    from fourm_hf import FourMDiVAE, FourMDiVAEConfig, FourMMLPVQVAE, FourMMLPVQVAEConfig, FourMViTVQVAE, FourMViTVQVAEConfig

    def make(model_class, config):
        model = model_class(config).eval()
        with torch.no_grad():  # zero-initialised output layers would make some paths trivially cheap to check; perturb
            for parameter in model.parameters():
                if parameter.requires_grad and parameter.dim() > 0 and not parameter.any():
                    parameter.normal_(0, 0.01)
        return model

    if family == "divae":
        model = make(FourMDiVAE, FourMDiVAEConfig(codebook_size=16384, image_size=448))
        return model, lambda batch, size: torch.rand(batch, 3, size, size) * 2 - 1
    if family == "vit_vqvae_semseg":
        model = make(FourMViTVQVAE, FourMViTVQVAEConfig(codebook_size=4096, image_size=448, n_labels=134, n_channels=64))
        return model, lambda batch, size: torch.randint(0, 134, (batch, size, size))
    if family == "vit_vqvae_clip":
        config = FourMViTVQVAEConfig(codebook_size=8192, image_size=448, n_channels=512, patch_proj=False)
        return make(FourMViTVQVAE, config), lambda batch, size: torch.randn(batch, 512, size // 16, size // 16)
    if family == "mlp_dinov2_global":
        config = FourMMLPVQVAEConfig(codebook_size=8192, num_codebooks=16, n_channels=768, latent_dim=1024)
        return make(FourMMLPVQVAE, config), lambda batch, size: torch.randn(batch, 768)
    raise ValueError(f"unknown family {family!r}; expected one of {FAMILIES}")


def run_family(args) -> dict:
    import torch

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model, make_input = build(args.family)
    inputs = make_input(args.batch_size, args.image_size)
    result = {
        "family": args.family, "batch_size": args.batch_size, "image_size": args.image_size, "threads": args.threads,
        "parameters_M": round(sum(p.numel() for p in model.parameters()) / 1e6, 2),
    }
    with torch.inference_mode():
        encode_s, ids = _timed(lambda: model.encode(inputs), args.repeats)
        result["encode_s"] = round(encode_s, 4)
        result["ids_shape"] = list(ids.shape)
        if args.family == "divae":
            step_times = []
            original = model.denoise

            def timed_denoise(*call_args, **call_kwargs):
                start = time.perf_counter()
                output = original(*call_args, **call_kwargs)
                step_times.append(time.perf_counter() - start)
                return output

            model.denoise = timed_denoise
            start = time.perf_counter()
            images = model.decode(ids, num_steps=args.divae_steps, generator=0, progress=False)
            decode_s = time.perf_counter() - start
            per_step = statistics.median(step_times)
            overhead = decode_s - sum(step_times)
            result.update(
                decode_steps_run=len(step_times), decode_s=round(decode_s, 3), step_times_s=[round(t, 3) for t in step_times],
                per_step_s=round(per_step, 3),
                extrapolated_steps=args.extrapolate_steps,
                extrapolated_decode_s=round(per_step * args.extrapolate_steps + overhead, 1),
                output_shape=list(images.shape),
            )
        else:
            decode_s, output = _timed(lambda: model.decode(ids), args.repeats)
            result.update(decode_s=round(decode_s, 4), output_shape=list(output.shape))
    result["peak_rss_MiB"] = round(_peak_rss_mib(), 0)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--families", nargs="+", default=list(FAMILIES), choices=FAMILIES)
    parser.add_argument("--family", choices=FAMILIES, help=argparse.SUPPRESS)  # child-process mode
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3, help="timed calls (after a warm-up) for encode / one-shot decode")
    parser.add_argument("--divae-steps", type=int, default=2, help="DDIM steps actually run for the DiVAE decode")
    parser.add_argument("--extrapolate-steps", type=int, default=25, help="steps of the extrapolated full DiVAE decode")
    args = parser.parse_args()
    if args.family:
        print(json.dumps(run_family(args)))
        return
    src = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")
    env = dict(os.environ, PYTHONPATH=src + os.pathsep + os.environ.get("PYTHONPATH", ""), OMP_NUM_THREADS=str(args.threads))
    results = []
    for family in args.families:
        command = [sys.executable, os.path.abspath(__file__), "--family", family] + [
            f"--{key.replace('_', '-')}={value}" for key, value in vars(args).items() if key not in ("families", "family")
        ]
        completed = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
        result = json.loads(completed.stdout.strip().splitlines()[-1])
        results.append(result)
        print(json.dumps(result), flush=True)
    print("\n| family | params (M) | batch x px | ids | encode s | decode s | per DDIM step s | peak RSS MiB |")
    print("|---|---:|---|---|---:|---:|---:|---:|")
    for r in results:
        decode = r["decode_s"]
        per_step = r.get("per_step_s", "–")
        if "extrapolated_decode_s" in r:
            decode = f"{r['decode_s']} ({r['decode_steps_run']} calls); {r['extrapolated_steps']} steps ≈ {r['extrapolated_decode_s']}"
        ids = "x".join(str(d) for d in r["ids_shape"])
        print(f"| {r['family']} | {r['parameters_M']} | {r['batch_size']} x {r['image_size']} | {ids} | {r['encode_s']} | {decode} | {per_step} | {r['peak_rss_MiB']:.0f} |")


if __name__ == "__main__":
    main()
