"""The released-size RGB DiVAE decoder (random weights): plain decode against the fast decode, per format.

Plain: one image per UNet call, NCHW. Fast: the images of a batch in one UNet call, NHWC
(``.to(memory_format=torch.channels_last)``; in bf16 the GroupNorms take bf16 directly instead of a
float32 copy in and out). Formats: fp32 and bf16 (``.to(torch.bfloat16)``; the DDIM loop stays float32).
Every variant decodes the same ids from the same initial noise with ``--steps`` requested DDIM steps
(trailing spacing; 1 step = 1 UNet call), variants interleaved, median of ``--repeats``. Reported:
seconds per image-step (one image through one UNet call), the max abs difference of the fast decode from
the plain decode in the same format, and of each decode from the fp32 plain decode. The random
weights are perturbed by N(0, 0.02) so the zero-initialised output layers do not make every image 0.

    python benchmarks/bench_divae_decode.py --images 2 --steps 1 --repeats 1
    python benchmarks/bench_divae_decode.py --images 1 --steps 1 --islands   # bf16 with float32 islands

``--islands`` adds two bf16 variants of the plain path: ``bf16 autocast`` (float32 weights under
``torch.autocast("cpu", dtype=torch.bfloat16)``) and ``bf16 fp32-head`` (the bf16 UNet with its output head,
GroupNorm -> SiLU -> conv, in float32 with float32 weights): how close float32 islands bring bf16 to fp32.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import time

import torch

from fourm_hf import FourMDiVAE, FourMDiVAEConfig
from fourm_hf.output_paths import write_atomic


def released_rgb_divae() -> FourMDiVAE:
    torch.manual_seed(0)
    model = FourMDiVAE(FourMDiVAEConfig(codebook_size=16384)).eval()  # the released rgb_16k_224-448 preset
    with torch.no_grad():
        for parameter in model.decoder.parameters():
            parameter.add_(0.02 * torch.randn_like(parameter))
    return model


class Float32Head(torch.nn.Module):
    """A float32 copy of the UNet's output head, fed the bf16 activations cast to float32."""

    def __init__(self, head: torch.nn.Module):
        super().__init__()
        self.head = copy.deepcopy(head).float()

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.head(hidden.float())


def decode(model, ids, noise, steps: int, per_image: bool, autocast: bool = False) -> tuple[float, torch.Tensor]:
    start = time.perf_counter()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        images = _decode(model, ids, noise, steps, per_image)
    return time.perf_counter() - start, images.float()


def _decode(model, ids, noise, steps: int, per_image: bool) -> torch.Tensor:
    if per_image:
        images = [model.decode(ids[i:i + 1], num_steps=steps, initial_noise=noise[i:i + 1], progress=False) for i in range(len(ids))]
        images = torch.cat(images)
    else:
        images = model.decode(ids, num_steps=steps, initial_noise=noise, progress=False)
    return images


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=2)
    parser.add_argument("--steps", type=int, default=1, help="requested DDIM steps (trailing: 1 -> 1 UNet call, 3 -> 4)")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--formats", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--islands", action="store_true", help="also bf16 under autocast and bf16 with a float32 head")
    parser.add_argument("--json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s), load average {os.getloadavg()[0]:.1f}", flush=True)
    base = released_rgb_divae()
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 16384, (args.images, 14, 14), generator=generator)
    noise = torch.randn(args.images, 3, 224, 224, generator=generator)
    models = {}
    for fmt in args.formats:
        plain = base if fmt == "fp32" else copy.deepcopy(base).to(torch.bfloat16)
        models[(fmt, "plain")] = plain
        models[(fmt, "fast")] = copy.deepcopy(plain).to(memory_format=torch.channels_last)
    if args.islands and "bf16" in args.formats:
        models[("bf16", "autocast")] = base
        models[("bf16", "fp32-head")] = copy.deepcopy(models[("bf16", "plain")])
        models[("bf16", "fp32-head")].decoder.out = Float32Head(base.decoder.out)
    times, images = {key: [] for key in models}, {}
    for _ in range(args.repeats):
        for (fmt, path), model in models.items():
            seconds, decoded = decode(model, ids, noise, args.steps, per_image=path != "fast", autocast=path == "autocast")
            times[(fmt, path)].append(seconds)
            images[(fmt, path)] = decoded
    calls = len(base.noise_scheduler.timesteps)
    reference = images[("fp32", "plain")] if "fp32" in args.formats else None
    rows = []
    for (fmt, path) in models:
        seconds = statistics.median(times[(fmt, path)])
        row = dict(format=fmt, path=path, unet_calls=calls, images=args.images,
                   s_per_image_step=round(seconds / (args.images * calls), 3),
                   max_abs_vs_plain_same_format=round((images[(fmt, path)] - images[(fmt, "plain")]).abs().max().item(), 6),
                   max_abs_vs_fp32_plain=None if reference is None else round((images[(fmt, path)] - reference).abs().max().item(), 6),
                   output_abs_max=round(images[(fmt, path)].abs().max().item(), 3))
        print(json.dumps(row), flush=True)
        rows.append(row)
    print(f"\n{'format':<6} {'path':<6} {'s / image-step':>14} {'speed-up':>9} {'max |fast - plain|':>18} {'max |x - fp32 plain|':>20}")
    for row in rows:
        plain = next(r for r in rows if r["format"] == row["format"] and r["path"] == "plain")
        print(f"{row['format']:<6} {row['path']:<6} {row['s_per_image_step']:>14.3f} "
              f"{plain['s_per_image_step'] / row['s_per_image_step']:>8.2f}x {row['max_abs_vs_plain_same_format']:>18.2e} "
              f"{row['max_abs_vs_fp32_plain'] if row['max_abs_vs_fp32_plain'] is not None else float('nan'):>20.2e}")
    print(f"load average at the end {os.getloadavg()[0]:.1f}")
    if args.json:
        write_atomic(args.json, json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
