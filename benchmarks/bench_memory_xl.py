"""Memory of 4M-21 XL with its RGB, depth and normal DiVAEs: the 12 GB GPU recipe and the 24 GB CPU recipe.

Measured on the CPU, with random weights (memory does not depend on them):

1. sizes from the meta device (nothing allocated): the XL trunk in the 4M-21 layout (dim 2048, 24 + 24
   blocks, the 4M-21 modalities) and three released-size DiVAEs (rgb 16k, depth 8k, normal 8k codes);
2. one real bf16 instantiation of the XL trunk (about 6 GB), then the peak resident memory above its weights
   during one guided MaskGIT step (rgb pixels -> tok_depth, classifier-free guidance) and an 8-token caption:
   the activations and caches that would sit on the device beside the weights;
3. one real released-size DiVAE in bf16 and in fp32: the peak above its weights during one UNet call on one
   224-px image.

The 12 GB recipe is: bf16 trunk on the device, tokenizers offloaded (on the CPU, each moved to the device only
while it decodes): device peak = trunk weights + max(trunk activations, largest DiVAE weights + its activations).
The CPU recipe keeps everything resident: bf16 trunk + three fp32 DiVAEs + the larger activation peak.

    python benchmarks/bench_memory_xl.py
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time

import torch

from fourm_hf import FourMDiVAE, FourMDiVAEConfig, FourMModel
from fourm_hf.ml4m.conversion import config_from_reference
from fourm_hf.modeling.generation import build_generation_schedule, generate
from fourm_hf.output_paths import write_atomic

from bench_convert import released_config

GIB = 2**30
DIVAES = {"rgb": dict(codebook_size=16384, n_channels=3), "depth": dict(codebook_size=8192, n_channels=1),
          "normal": dict(codebook_size=8192, n_channels=3)}


def resident_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_during(function) -> tuple[int, object]:
    """(peak resident bytes above the level before, result) of ``function()``, sampled every 2 ms."""
    start, peak, running = resident_bytes(), [0], [True]

    def sample():
        while running[0]:
            peak[0] = max(peak[0], resident_bytes())
            time.sleep(0.002)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        result = function()
    finally:
        running[0] = False
        thread.join()
    return max(peak[0], resident_bytes()) - start, result


def parameter_bytes(model, dtype: torch.dtype) -> int:
    return sum(p.numel() for p in model.parameters()) * torch.empty(0, dtype=dtype).element_size()


def materialise(model, std: float = 0.02):
    """Meta-device model -> real CPU tensors filled with small random numbers (no initialiser pass)."""
    model.to_empty(device="cpu")
    with torch.no_grad():
        for tensor in list(model.parameters()) + list(model.buffers()):
            if tensor.is_floating_point():
                tensor.normal_(0.0, std)
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="XL", help="trunk size of bench_convert.py (B, L, XL)")
    parser.add_argument("--caption-tokens", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = config_from_reference(released_config(args.size, "4m21"), {})
    with torch.device("meta"):
        trunk = FourMModel(config)
        divaes = {name: FourMDiVAE(FourMDiVAEConfig(**options)) for name, options in DIVAES.items()}
    sizes = {"trunk_params_M": round(sum(p.numel() for p in trunk.parameters()) / 1e6, 1),
             "trunk_bf16_GiB": parameter_bytes(trunk, torch.bfloat16) / GIB,
             **{f"divae_{n}_fp32_GiB": parameter_bytes(m, torch.float32) / GIB for n, m in divaes.items()},
             **{f"divae_{n}_bf16_GiB": parameter_bytes(m, torch.bfloat16) / GIB for n, m in divaes.items()}}
    print(json.dumps({k: round(v, 3) for k, v in sizes.items()}), flush=True)

    torch.set_default_dtype(torch.bfloat16)
    with torch.device("meta"):
        trunk = FourMModel(config)
    torch.set_default_dtype(torch.float32)
    trunk = materialise(trunk).eval()
    pixels = torch.randn(1, 3, 224, 224)
    guided = build_generation_schedule(config, ["rgb"], ["tok_depth"], decoding_steps=1, cfg_scales=3.0)
    caption = build_generation_schedule(config, ["rgb"], ["caption"], tokens_per_target=args.caption_tokens)
    run = lambda schedule: generate(trunk, {}, schedule, torch.Generator().manual_seed(0), pixel_values=pixels)  # noqa: E731
    trunk_guided, _ = peak_during(lambda: run(guided))
    trunk_caption, _ = peak_during(lambda: run(caption))
    print(json.dumps({"trunk_guided_step_peak_GiB": round(trunk_guided / GIB, 3),
                      "trunk_caption_peak_GiB": round(trunk_caption / GIB, 3)}), flush=True)
    del trunk

    divae_peaks = {}
    for dtype in (torch.bfloat16, torch.float32):
        torch.set_default_dtype(dtype)  # built in its dtype: no float32 copy freed beforehand
        with torch.device("meta"):
            divae = FourMDiVAE(FourMDiVAEConfig(**DIVAES["rgb"]))
        torch.set_default_dtype(torch.float32)
        divae = materialise(divae).eval()
        ids = torch.randint(0, 16384, (1, 14, 14))
        peak, _ = peak_during(lambda: divae.decode(ids, num_steps=1, generator=0, progress=False))
        divae_peaks[str(dtype).split(".")[-1]] = peak / GIB
        del divae
    print(json.dumps({f"divae_rgb_{k}_call_peak_GiB": round(v, 3) for k, v in divae_peaks.items()}), flush=True)

    largest_bf16 = max(sizes[f"divae_{n}_bf16_GiB"] for n in DIVAES)
    largest_fp32 = max(sizes[f"divae_{n}_fp32_GiB"] for n in DIVAES)
    trunk_activations = max(trunk_guided, trunk_caption) / GIB
    recipes = {
        "gpu_12GB_bf16_tokenizers": sizes["trunk_bf16_GiB"] + max(trunk_activations, largest_bf16 + divae_peaks["bfloat16"]),
        "gpu_12GB_fp32_tokenizers": sizes["trunk_bf16_GiB"] + max(trunk_activations, largest_fp32 + divae_peaks["float32"]),
        "cpu_24GB_resident": sizes["trunk_bf16_GiB"] + sum(sizes[f"divae_{n}_fp32_GiB"] for n in DIVAES)
        + max(trunk_activations, divae_peaks["float32"]),
    }
    rows = {**sizes, "trunk_activation_peak_GiB": trunk_activations,
            **{f"divae_rgb_{k}_call_peak_GiB": v for k, v in divae_peaks.items()}, **recipes}
    rows = {k: round(v, 3) for k, v in rows.items()}
    print("\n" + "\n".join(f"{k:<45} {v:>8.3f}" for k, v in rows.items()))
    if args.json:
        write_atomic(args.json, json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
