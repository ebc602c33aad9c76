"""One-command GPU check of fourm-hf: bf16 training speed, generation speed, peak memory.

Sections (each timed on the GPU, peak memory measured per section):
  train      bf16 (autocast, fp32 master weights, fused AdamW) train step of the preset, SDPA and
             eager interleaved: step time, tokens/s, achieved TFLOP/s and MFU against the GPU's
             dense bf16 peak (table below; ``--peak-tflops`` for other GPUs)
  caption    rgb pixels -> a 32-token caption, the cached sampler against the naive path
             (``generate(..., naive=True)``: no KV cache, one forward per guidance pass; the
             algorithm of the reference sampler), same seed, tokens checked identical
  caption_x8 the same caption for a batch of 8 images (the issue's batch-8 goal; the KV cache is preallocated
             for the longest row and written in place)
  guided     rgb pixels -> tok_depth, MaskGIT 8 steps, classifier-free guidance 3.0, same comparison
  rgb_to_all rgb pixels -> every 4M-7 output modality (dense MaskGIT 8 steps, 32-token caption/boxes)
  formats    a greedy caption in fp32 and bf16: seconds, share of identical tokens (int8 is CPU-only)
  divae      released-size RGB DiVAE, one UNet call per image: fp32 plain, bf16, bf16 + NHWC + the batch of 4
             in one call: seconds per image-step, max abs difference from fp32
  offloading bf16 trunk on the GPU, three DiVAEs on the CPU placed only while each decodes: device peak;
             a failing decode leaves its tokenizer back on the CPU
Generation runs on a bf16 model (``from_pretrained``-style ``dtype=torch.bfloat16``), random weights.

Writes ``<out>/gpu_check.json`` and ``<out>/gpu_check.md`` (a markdown table) and prints the table.
Exits 2 with a message when no CUDA GPU is visible, 1 when a section failed (its error is in the
JSON and the table). ``--dry-run`` runs every section on the CPU with ``testing_utils.tiny_config()``
(32 px, small vocabularies), a few steps and fp32, to check the script itself (its numbers mean nothing).

    python benchmarks/gpu_check.py                       # base preset, about 3-5 minutes on one H100/H200
    python benchmarks/gpu_check.py --dry-run --out /tmp/gpu_check
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch

from fourm_hf import FourMConfig, FourMDiVAE, FourMDiVAEConfig, FourMModel
from fourm_hf.modeling.generation import build_generation_schedule, generate
from fourm_hf.processing.tokenizer_placement import placed
from fourm_hf.testing_utils import random_packed_batch, tiny_config

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_train_step import step_flops  # noqa: E402  (the same FLOP count as the CPU benchmark)

# Dense (no sparsity) bf16 tensor-core peaks from the vendors' data sheets, TFLOP/s; matched on the device name.
BF16_PEAK_TFLOPS = {"H200": 989.4, "H100 PCIe": 756.0, "H100": 989.4, "A100": 312.0, "L40S": 362.05, "L4": 121.0, "A10G": 70.0}
DENSE = ["tok_rgb", "tok_depth", "tok_normal", "tok_semseg", "tok_clip"]


def bf16_peak_tflops(device_name: str, override: float | None) -> float | None:
    if override:
        return override
    for key, value in BF16_PEAK_TFLOPS.items():  # "H100 PCIe" before "H100": dict order
        if key in device_name:
            return value
    return None


class Clock:
    """Wall time of a block on ``device`` (synchronising CUDA before and after)."""

    def __init__(self, device: torch.device):
        self.device = device

    def sync(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def time(self, function, *args, **kwargs):
        self.sync()
        start = time.perf_counter()
        result = function(*args, **kwargs)
        self.sync()
        return time.perf_counter() - start, result


def reset_peak(device):
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_gib(device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


# ---- training ------------------------------------------------------------------------------------
def train_section(config: FourMConfig, device, args, peak_tflops) -> dict:
    """bf16 train steps, SDPA and eager interleaved; medians after one warm-up step each."""
    batch = random_packed_batch(config, batch_size=args.batch_size, seed=0, full=True)
    flops = step_flops(config, batch)
    tokens = int(batch["attention_mask"].sum() + batch["decoder_attention_mask"].sum())
    batch = {key: value.to(device) for key, value in batch.items()}
    clock, runners = Clock(device), {}
    use_bf16 = not args.dry_run
    for implementation in ("sdpa", "eager"):
        torch.manual_seed(0)
        model = FourMModel._from_config(config, attn_implementation=implementation).to(device).train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)

        def step(model=model, optimizer=optimizer):
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
                loss = model(**batch).loss
            loss.backward()
            optimizer.step()
            return loss.detach()

        runners[implementation] = step
    reset_peak(device)
    times = {name: [] for name in runners}
    for index in range(args.train_steps + 1):
        for name, step in runners.items():
            seconds, loss = clock.time(step)
            if not torch.isfinite(loss):
                raise RuntimeError(f"{name}: non-finite loss {loss.item()} at step {index}")
            if index > 0:
                times[name].append(seconds)
    result = {"batch_size": args.batch_size, "tokens_per_step": tokens, "tflop_per_step": flops / 1e12,
              "peak_memory_gib": peak_gib(device)}
    for name, values in times.items():
        median = sorted(values)[len(values) // 2]
        achieved = flops / median / 1e12
        result[name] = {"step_s": median, "tokens_per_s": tokens / median, "tflops": achieved,
                        "mfu": achieved / peak_tflops if peak_tflops else None}
    result["eager_over_sdpa"] = result["eager"]["step_s"] / result["sdpa"]["step_s"]
    return result


# ---- generation ------------------------------------------------------------------------------------
def generation_schedules(config: FourMConfig, args) -> dict:
    caption = build_generation_schedule(config, ["rgb"], ["caption"], tokens_per_target=args.caption_tokens)
    guided = build_generation_schedule(config, ["rgb"], ["tok_depth"], decoding_steps=args.maskgit_steps, cfg_scales=3.0)
    everything = build_generation_schedule(
        config, ["rgb"], DENSE + ["caption", "det"], decoding_steps=args.maskgit_steps,
        tokens_per_target=[None] * len(DENSE) + [args.caption_tokens, args.caption_tokens],
    )
    return {"caption": caption, "guided": guided, "rgb_to_all": everything}


def make_generator(device, seed: int) -> torch.Generator:
    """A generator on the model's device where the sampler takes one, else a CPU generator."""
    try:
        return torch.Generator(device=device).manual_seed(seed)
    except RuntimeError:
        return torch.Generator().manual_seed(seed)


def generation_section(name: str, model, schedule, pixel_values, device, compare_naive: bool, repeats: int) -> dict:
    clock = Clock(device)
    run = lambda naive: generate(model, {}, schedule, make_generator(device, 0), pixel_values=pixel_values, naive=naive)  # noqa: E731
    run(False)  # warm-up (kernels, allocator)
    reset_peak(device)
    fast = [clock.time(run, False) for _ in range(repeats)]
    result = {"fast_s": sorted(t for t, _ in fast)[len(fast) // 2], "peak_memory_gib": peak_gib(device)}
    if compare_naive:
        naive_seconds, naive_tokens = clock.time(run, True)
        fast_tokens = fast[0][1]
        result["naive_s"] = naive_seconds
        result["speedup"] = naive_seconds / result["fast_s"]
        result["same_tokens"] = all(torch.equal(fast_tokens[key].cpu(), naive_tokens[key].cpu()) for key in fast_tokens)
    return result


# ---- formats, the DiVAE, tokenizer offloading (issue 27) ---------------------------------------------
def formats_section(config: FourMConfig, device, args) -> dict:
    """A greedy caption in fp32 and in bf16 on the device: seconds and the share of identical tokens.
    (int8 is torch's dynamic quantisation, a CPU-only path: benchmarks/bench_fast_decoding.py.)"""
    schedule = build_generation_schedule(config, ["rgb"], ["caption"], tokens_per_target=args.caption_tokens, greedy=True, temps=0.0)
    pixels = torch.randn(1, 3, config.image_size, config.image_size, generator=torch.Generator().manual_seed(0)).to(device)
    clock, result, tokens = Clock(device), {}, {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        torch.manual_seed(0)
        model = FourMModel._from_config(config, dtype=dtype).to(device).eval()
        run = lambda: generate(model, {}, schedule, make_generator(device, 0), pixel_values=pixels)  # noqa: E731
        run()
        seconds, out = clock.time(run)
        result[f"{name}_s"], tokens[name] = seconds, out["caption"].cpu()
        del model
    width = min(tokens["fp32"].shape[1], tokens["bf16"].shape[1])
    result["bf16_identical_share"] = float((tokens["fp32"][:, :width] == tokens["bf16"][:, :width]).float().mean())
    return result


def divae_for(args, dtype=torch.float32) -> FourMDiVAE:
    torch.manual_seed(0)
    options = (dict(enc_type="vit_tiny_d32_l1_h2_enc", dec_type="unet_patched_tiny_c32_r1", image_size=32, codebook_size=16,
                    latent_dim=8, unet_channel_mult=[1, 2], unet_attention_resolutions=[2]) if args.dry_run else dict(codebook_size=16384))
    model = FourMDiVAE(FourMDiVAEConfig(**options)).eval()
    with torch.no_grad():  # the zero-initialised output layers would make every decode 0
        for parameter in model.decoder.parameters():
            parameter.add_(0.02 * torch.randn_like(parameter))
    return model.to(dtype)


def divae_section(device, args) -> dict:
    """Plain (one image per UNet call, NCHW, fp32) against bf16 and bf16 + NHWC + the batch in one call."""
    base = divae_for(args).to(device)
    grid = base.config.image_size // base.config.patch_size
    ids = torch.randint(0, base.config.codebook_size, (4, grid, grid), generator=torch.Generator().manual_seed(1)).to(device)
    noise = torch.randn(4, base.config.n_channels, base.config.image_size, base.config.image_size,
                        generator=torch.Generator().manual_seed(2)).to(device)
    variants = {"fp32 plain": (base, True), "bf16 plain": (copy.deepcopy(base).to(torch.bfloat16), True),
                "bf16 fast": (copy.deepcopy(base).to(torch.bfloat16).to(memory_format=torch.channels_last), False)}
    clock, result, images = Clock(device), {}, {}

    def decode(model, one_by_one):
        parts = [(ids[i:i + 1], noise[i:i + 1]) for i in range(4)] if one_by_one else [(ids, noise)]
        return torch.cat([model.decode(i, num_steps=1, initial_noise=n, progress=False) for i, n in parts])

    for name, (model, one_by_one) in variants.items():
        decode(model, one_by_one)
        seconds, images[name] = clock.time(decode, model, one_by_one)
        result[f"{name} s_per_image_step"] = seconds / 4
    for name in variants:
        result[f"{name} max_abs_vs_fp32"] = float((images[name] - images["fp32 plain"]).abs().max())
    return result


def offloading_section(config: FourMConfig, device, args) -> dict:
    """bf16 trunk on the device, three DiVAEs resting on the CPU, each placed only while it decodes: the device
    peak; then a failing decode (bad ids) must leave the tokenizer back on the CPU."""
    reset_peak(device)
    trunk = FourMModel._from_config(config, dtype=torch.float32 if args.dry_run else torch.bfloat16).to(device).eval()
    tokenizers = [divae_for(args) for _ in range(3)]
    grid = tokenizers[0].config.image_size // tokenizers[0].config.patch_size
    for tokenizer in tokenizers:
        with placed(tokenizer, device):
            tokenizer.decode(torch.zeros(1, grid, grid, dtype=torch.long, device=device), num_steps=1, generator=0, progress=False)
    restored = False
    try:
        with placed(tokenizers[0], device):
            tokenizers[0].decode(torch.full((1, grid, grid), -1, device=device), num_steps=1, progress=False)
    except ValueError:
        restored = all(p.device.type == "cpu" for p in tokenizers[0].parameters())
    result = {"device_peak_gib": peak_gib(device), "restored_after_error": restored,
              "trunk_gib": sum(p.numel() * p.element_size() for p in trunk.parameters()) / 2**30}
    del trunk
    return result


# ---- report ------------------------------------------------------------------------------------------
def fmt(value, spec=".3f", none="-"):
    return none if value is None else format(value, spec)


def markdown(report: dict) -> str:
    lines = [f"GPU check: {report['device_name']}, preset {report['preset']}, torch {report['torch']}, "
             f"bf16 peak {fmt(report['bf16_peak_tflops'], '.0f')} TFLOP/s", "",
             "| section | variant | time (s) | tokens/s | TFLOP/s | MFU | vs naive | same tokens | peak mem (GiB) |",
             "|---|---|---|---|---|---|---|---|---|"]
    train = report["sections"].get("train", {})
    if "error" in train:
        lines.append(f"| train | - | error: {train['error']} | | | | | | |")
    elif train:
        for name in ("sdpa", "eager"):
            row = train[name]
            lines.append(f"| train (batch {train['batch_size']}) | {name} | {fmt(row['step_s'], '.4f')} | "
                         f"{fmt(row['tokens_per_s'], ',.0f')} | {fmt(row['tflops'], '.1f')} | {fmt(row['mfu'], '.1%')} | "
                         f"| | {fmt(train['peak_memory_gib'], '.2f')} |")
    for name in ("caption", "caption_x8", "guided", "rgb_to_all"):
        row = report["sections"].get(name)
        if row is None:
            continue
        if "error" in row:
            lines.append(f"| {name} | - | error: {row['error']} | | | | | | |")
            continue
        lines.append(f"| {name} | cached | {fmt(row['fast_s'], '.4f')} | | | | {fmt(row.get('speedup'), '.2f')}x | "
                     f"{row.get('same_tokens', '-')} | {fmt(row['peak_memory_gib'], '.2f')} |")
        if "naive_s" in row:
            lines.append(f"| {name} | naive | {fmt(row['naive_s'], '.4f')} | | | | 1.00x | | |")
    for name in ("formats", "divae", "offloading"):
        if name in report["sections"]:
            values = ", ".join(f"{key} {fmt(value, '.4g') if isinstance(value, float) else value}"
                               for key, value in report["sections"][name].items())
            lines.append(f"\n{name}: {values}")
    return "\n".join(lines) + "\n"


def write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = tempfile.NamedTemporaryFile("w", dir=path.parent, suffix=".tmp", delete=False, encoding="utf-8")
    with handle:
        handle.write(text)
    os.replace(handle.name, path)


def run_section(report: dict, name: str, function, *args) -> None:
    started = time.perf_counter()
    try:
        report["sections"][name] = function(*args)
    except Exception as error:  # record and go on: one failing section must not hide the others
        traceback.print_exc()
        report["sections"][name] = {"error": f"{type(error).__name__}: {error}"[:300]}
    print(f"[gpu_check] {name}: {time.perf_counter() - started:.1f} s", flush=True)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="base")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--train-steps", type=int, default=10)
    parser.add_argument("--caption-tokens", type=int, default=32)
    parser.add_argument("--maskgit-steps", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--peak-tflops", type=float, default=None, help="dense bf16 peak of a GPU not in the table")
    parser.add_argument("--out", default="benchmarks/gpu_check", help="folder for gpu_check.json and gpu_check.md")
    parser.add_argument("--dry-run", action="store_true", help="CPU, testing_utils.tiny_config(), fp32, few steps")
    args = parser.parse_args(argv)
    if args.dry_run:
        args.preset, args.batch_size, args.train_steps, args.repeats = "tiny_config (dry run)", 2, 1, 1
        args.caption_tokens, args.maskgit_steps = min(args.caption_tokens, 4), min(args.maskgit_steps, 2)
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.dry_run:
        device = torch.device("cpu")
        config = tiny_config()  # 64 wide, 2+2 layers, 32 px, small vocabularies: seconds on a CPU
        device_name = f"CPU ({platform.processor() or platform.machine()}), dry run"
    else:
        if not torch.cuda.is_available():
            print("gpu_check: no CUDA GPU is visible (torch.cuda.is_available() is False); run it on a GPU machine, "
                  "or pass --dry-run to check the script on the CPU.", file=sys.stderr)
            return 2
        device = torch.device("cuda")
        config = FourMConfig.from_preset(args.preset)  # 224 px, 16 px patches, budgets 128/128
        device_name = torch.cuda.get_device_name(device)
        torch.backends.cuda.matmul.allow_tf32 = True
    peak = bf16_peak_tflops(device_name, args.peak_tflops)
    report = {"device_name": device_name, "preset": args.preset, "torch": torch.__version__, "bf16_peak_tflops": peak,
              "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "args": vars(args), "sections": {}}
    run_section(report, "train", train_section, config, device, args, peak)

    dtype = torch.float32 if args.dry_run else torch.bfloat16
    torch.manual_seed(0)
    model = FourMModel._from_config(config, dtype=dtype).to(device).eval()
    pixel_values = torch.randn(1, 3, config.image_size, config.image_size, generator=torch.Generator().manual_seed(0))
    pixel_values = pixel_values.to(device, dtype)
    for name, schedule in generation_schedules(config, args).items():
        run_section(report, name, generation_section, name, model, schedule, pixel_values, device,
                    name != "rgb_to_all", args.repeats)
        if name == "caption":
            batch_pixels = torch.randn(8, 3, config.image_size, config.image_size, generator=torch.Generator().manual_seed(8))
            run_section(report, "caption_x8", generation_section, "caption_x8", model, schedule,
                        batch_pixels.to(device, dtype), device, True, args.repeats)
    del model
    run_section(report, "formats", formats_section, config, device, args)
    run_section(report, "divae", divae_section, device, args)
    run_section(report, "offloading", offloading_section, config, device, args)

    out = Path(args.out)
    table = markdown(report)
    write_atomic(out / "gpu_check.json", json.dumps(report, indent=2, default=str) + "\n")
    write_atomic(out / "gpu_check.md", table)
    print(table)
    print(f"wrote {out / 'gpu_check.json'} and {out / 'gpu_check.md'}")
    return 1 if any("error" in section for section in report["sections"].values()) else 0


if __name__ == "__main__":
    sys.exit(main())
