"""Generation in every numeric format offered on CPUs, our fast path against the naive path in the same format.

Formats: ``fp32``; ``bf16`` (``model.to(torch.bfloat16)``, what ``from_pretrained(dtype=torch.bfloat16)``
gives); ``int8`` (``quantize_int8``: decoder blocks and output heads dynamic int8, the rest float32);
``int8-all`` (the encoder too). The fast path is ``generate`` (one encoder pass per guidance view, cached
cross-attention keys/values, a self-attention KV cache, batched guidance); the naive path
(``naive=True``) is the reference's arithmetic: at every autoregressive step the whole prefix goes
through the decoder again with the cross-attention keys/values recomputed, one forward per guidance
pass. Scenarios as ``bench_generate.py`` (random weights, 224 px, real 4M-7 vocabularies, one thread).
Every variant of a scenario runs once per repeat, interleaved (fp32 fast, fp32 naive, bf16 fast, ...),
so machine-load drift hits all alike; the median is reported. Every format and path first runs an untimed
4-token caption (`--no-warmup` skips it).

Per variant: seconds, generated tokens per second, the peak resident memory *during* the call above the
resident memory before it (activations, caches; sampled every 2 ms), the model's weight bytes, and the
share of greedy tokens identical to fp32 fast (greedy runs only, ``--greedy``).

    python benchmarks/bench_fast_decoding.py --preset base --scenarios caption --repeats 2
    python benchmarks/bench_fast_decoding.py --kernels      # one linear layer in each format (and torchao if installed)
    python benchmarks/bench_fast_decoding.py --agreement    # greedy tokens vs fp32 on the bundled checkpoint
    python benchmarks/bench_fast_decoding.py --profile --formats fp32 --scenarios caption   # where the time goes
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import threading
import time
import warnings

import torch

from bench_generate import scenarios
from fourm_hf import FourMConfig, FourMModel
from fourm_hf.modeling.generation import build_generation_schedule, generate
from fourm_hf.modeling.quantization import quantize_int8
from fourm_hf.output_paths import write_atomic

FORMATS = ("fp32", "bf16", "int8", "int8-all")
PAGE = os.sysconf("SC_PAGE_SIZE")


def resident_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * PAGE


class PeakMemory:
    """Context: the peak resident bytes above the level at entry, sampled by a thread every 2 ms."""

    def __enter__(self):
        self.start = self.peak = resident_bytes()
        self.running = True
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        return self

    def _sample(self):
        while self.running:
            self.peak = max(self.peak, resident_bytes())
            time.sleep(0.002)

    def __exit__(self, *exc):
        self.running = False
        self.thread.join()
        self.peak = max(self.peak, resident_bytes())
        self.above_start = self.peak - self.start


def in_format(model: FourMModel, name: str) -> FourMModel:
    if name == "fp32":
        return model
    if name == "bf16":
        return copy.deepcopy(model).to(torch.bfloat16)
    parts = ("encoder", "decoder", "heads") if name == "int8-all" else ("decoder", "heads")
    return quantize_int8(copy.deepcopy(model), parts)


def weight_bytes(model) -> int:
    total = sum(t.numel() * t.element_size() for t in list(model.parameters()) + list(model.buffers()))
    for module in model.modules():  # dynamic int8 linears keep their packed weights outside parameters()
        if hasattr(module, "_packed_params") and callable(getattr(module, "weight", None)):
            weight = module.weight()
            total += weight.numel() * weight.element_size()
    return total


def run_once(model, schedule, pixel_values, naive: bool, seed: int):
    with PeakMemory() as memory:
        start = time.perf_counter()
        tokens = generate(model, {}, schedule, torch.Generator().manual_seed(seed), pixel_values=pixel_values, naive=naive)
        seconds = time.perf_counter() - start
    return seconds, memory.above_start, tokens


def warm_up(models: dict, config, args) -> None:
    """One untimed 4-token caption per format and path, so no timed variant pays first-call costs (kernel
    selection, allocator growth, lazy initialisation)."""
    schedule, batch = scenarios(config, 4, args.steps, args.cfg_scale, caption_batch=1)["caption"]
    pixel_values = torch.zeros(batch, 3, config.image_size, config.image_size)
    for model in models.values():
        for naive in (False, True):
            run_once(model, schedule, pixel_values, naive, args.seed)


def generated_count(tokens: dict, config) -> int:
    return sum(int((ids != 0).sum()) if config.modality(name).is_sequence else ids.numel()
               for name, ids in tokens.items() if name != "rgb")


def bench_scenario(name, schedule, batch, models, config, args) -> list[dict]:
    pixel_values = torch.randn(batch, 3, config.image_size, config.image_size, generator=torch.Generator().manual_seed(1))
    variants = [(fmt, naive) for fmt in models for naive in (False, True)]
    times = {v: [] for v in variants}
    memory, outputs = {}, {}
    for _ in range(args.repeats):
        for fmt, naive in variants:
            seconds, peak, tokens = run_once(models[fmt], schedule, pixel_values, naive, args.seed)
            times[(fmt, naive)].append(seconds)
            memory[(fmt, naive)] = max(memory.get((fmt, naive), 0), peak)
            outputs[(fmt, naive)] = tokens
    reference = outputs[(next(iter(models)), False)]
    rows = []
    for fmt, naive in variants:
        seconds = statistics.median(times[(fmt, naive)])
        tokens = outputs[(fmt, naive)]
        agreement = _agreement(reference, tokens, schedule)
        row = dict(scenario=name, batch=batch, format=fmt, path="naive" if naive else "fast", seconds=round(seconds, 3),
                   tokens_per_s=round(generated_count(tokens, config) / seconds, 1),
                   peak_mib_above_start=round(memory[(fmt, naive)] / 2**20, 1),
                   weights_mib=round(weight_bytes(models[fmt]) / 2**20, 1), identical_to_fp32_fast=agreement)
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def _agreement(reference: dict, tokens: dict, schedule) -> float:
    """Share of target tokens equal to the reference run's (position by position, common width)."""
    same = total = 0
    for plan in schedule.targets:
        a, b = reference[plan.modality], tokens[plan.modality]
        width = min(a.shape[1], b.shape[1])
        same += int((a[:, :width] == b[:, :width]).sum())
        total += a.shape[0] * max(a.shape[1], b.shape[1])
    return round(same / max(total, 1), 3)


def bench_kernels(args) -> list[dict]:
    """One bias-free linear layer (base MLP 768->2048 / 2048->768 and the 30000-way caption head) at
    1, 8 and 196 rows: fp32, bf16, torch dynamic int8 (per-channel), and torchao's int8 weight-only
    when torchao is importable. Median of ``--repeats`` x 20 calls, variants interleaved."""
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    rows = []
    for rows_in, (fan_in, fan_out) in [(r, s) for s in ((768, 2048), (2048, 768), (768, 30000)) for r in (1, 8, 196)]:
        layer = torch.nn.Sequential(torch.nn.Linear(fan_in, fan_out, bias=False)).eval()
        variants = {"fp32": (layer, torch.float32), "bf16": (copy.deepcopy(layer).to(torch.bfloat16), torch.bfloat16)}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            variants["int8 (torch dynamic)"] = (quantize_dynamic(copy.deepcopy(layer), {torch.nn.Linear: per_channel_dynamic_qconfig},
                                                                  dtype=torch.qint8), torch.float32)
            torchao_layer = _torchao_int8(layer)
        if torchao_layer is not None:
            variants["int8 (torchao weight-only)"] = (torchao_layer, torch.float32)
        x = torch.randn(rows_in, fan_in)
        times = {name: [] for name in variants}
        with torch.no_grad():
            for _ in range(args.repeats):
                for name, (module, dtype) in variants.items():
                    inputs = x.to(dtype)
                    module(inputs)
                    start = time.perf_counter()
                    for _ in range(20):
                        module(inputs)
                    times[name].append((time.perf_counter() - start) / 20 * 1e3)
        fp32 = statistics.median(times["fp32"])
        for name in variants:
            ms = statistics.median(times[name])
            row = dict(kernel=f"{fan_in}x{fan_out}", rows=rows_in, format=name, ms=round(ms, 3), speed_vs_fp32=round(fp32 / ms, 2))
            print(json.dumps(row), flush=True)
            rows.append(row)
    return rows


def _torchao_int8(layer):
    try:
        from torchao.quantization import Int8WeightOnlyConfig, quantize_
    except Exception:  # not installed (it is not a dependency): the row is left out
        return None
    module = copy.deepcopy(layer)
    quantize_(module, Int8WeightOnlyConfig())
    return module


def bundled_agreement(args) -> list[dict]:
    """Greedy rgb -> every target of a checkpoint folder (the bundled one by default) on rendered scenes, in
    each format: the share of tokens identical to fp32, per target."""
    from fourm_hf.data.scenes import render_scene
    from fourm_hf.processing.processing_fourm import FourMProcessor

    model = FourMModel.from_pretrained(args.checkpoint).eval()
    processor = FourMProcessor.from_pretrained(args.checkpoint)
    config = model.config
    images = [render_scene(seed, config.image_size)["rgb"] for seed in range(args.scenes)]
    processed = processor(images=images)
    tokens = {name: ids for name, ids in processed.items() if name in config.input_modalities and name != "tok_rgb"}
    targets = [name for name in ("tok_depth", "tok_normal", "tok_semseg", "caption", "det") if name in config.output_modalities]
    schedule = build_generation_schedule(config, ["rgb"], targets, greedy=True, temps=0.0)
    outputs = {fmt: generate(in_format(model, fmt), dict(tokens), schedule, torch.Generator().manual_seed(0),
                             pixel_values=processed["pixel_values"]) for fmt in args.formats}
    rows = []
    for fmt in args.formats:
        for target in targets:
            a, b = outputs["fp32"][target], outputs[fmt][target]
            width = min(a.shape[1], b.shape[1])
            share = float((a[:, :width] == b[:, :width]).float().mean())
            row = dict(checkpoint=str(args.checkpoint), scenes=args.scenes, format=fmt, target=target, identical_to_fp32=round(share, 3))
            print(json.dumps(row), flush=True)
            rows.append(row)
    return rows


def profile_fast_path(model, schedule, batch, config, args) -> None:
    """torch.profiler table (self CPU time, top 12 ops) of one fast ``generate`` after a warm-up run."""
    from torch.profiler import ProfilerActivity, profile

    pixel_values = torch.randn(batch, 3, config.image_size, config.image_size, generator=torch.Generator().manual_seed(1))
    run_once(model, schedule, pixel_values, False, args.seed)
    with profile(activities=[ProfilerActivity.CPU]) as profiler:
        run_once(model, schedule, pixel_values, False, args.seed)
    print(profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=12), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="base")
    parser.add_argument("--scenarios", nargs="+", default=["caption"], help="caption, caption_x8, guided_maskgit, rgb_to_all")
    parser.add_argument("--formats", nargs="+", default=list(FORMATS), choices=FORMATS)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--caption-tokens", type=int, default=32)
    parser.add_argument("--steps", type=int, default=8, help="MaskGIT steps per image target")
    parser.add_argument("--cfg-scale", type=float, default=3.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--kernels", action="store_true", help="time one linear layer per format instead")
    parser.add_argument("--profile", action="store_true", help="print a torch.profiler table of the fast path instead")
    parser.add_argument("--agreement", action="store_true", help="greedy agreement with fp32 on --checkpoint instead")
    parser.add_argument("--checkpoint", default="src/fourm_hf/checkpoints/fourm-scenes64")
    parser.add_argument("--scenes", type=int, default=8)
    parser.add_argument("--json", help="also write the rows to this file")
    parser.add_argument("--no-warmup", action="store_true",
                        help="skip the untimed 4-token caption that every format and path runs first")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s), CPU, load average {os.getloadavg()[0]:.1f}", flush=True)
    if args.kernels:
        rows = bench_kernels(args)
    elif args.agreement:
        rows = bundled_agreement(args)
    else:
        config = FourMConfig.from_preset(args.preset)
        torch.manual_seed(0)
        base = FourMModel(config).eval()
        models = {fmt: in_format(base, fmt) for fmt in args.formats}
        table = scenarios(config, args.caption_tokens, args.steps, args.cfg_scale, caption_batch=8)
        if not args.no_warmup:
            warm_up(models, config, args)
        rows = []
        for name in args.scenarios:
            schedule, batch = table[name]
            if args.profile:
                profile_fast_path(models[args.formats[0]], schedule, batch, config, args)
            else:
                rows += bench_scenario(name, schedule, batch, models, config, args)
        if rows:
            _print_table(rows)
    print(f"load average at the end {os.getloadavg()[0]:.1f}")
    if args.json:
        write_atomic(args.json, json.dumps(rows, indent=1))


def _print_table(rows: list[dict]) -> None:
    """Per scenario and format: fast vs naive speed-up, and every variant against fp32 naive."""
    print(f"\n{'scenario':<15} {'format':<9} {'fast s':>8} {'naive s':>8} {'fast/naive':>10} {'vs fp32 naive':>13} "
          f"{'fast tok/s':>10} {'fast peak MiB':>13} {'weights MiB':>11} {'same as fp32':>12}")
    by_key = {(r["scenario"], r["format"], r["path"]): r for r in rows}
    for scenario, fmt in dict.fromkeys((r["scenario"], r["format"]) for r in rows):
        fast, naive = by_key[(scenario, fmt, "fast")], by_key[(scenario, fmt, "naive")]
        fp32_naive = by_key.get((scenario, "fp32", "naive"))
        versus = f"{fp32_naive['seconds'] / fast['seconds']:.2f}x" if fp32_naive else "-"
        print(f"{scenario:<15} {fmt:<9} {fast['seconds']:>8.2f} {naive['seconds']:>8.2f} {naive['seconds'] / fast['seconds']:>9.2f}x "
              f"{versus:>13} {fast['tokens_per_s']:>10.1f} {fast['peak_mib_above_start']:>13.1f} {fast['weights_mib']:>11.1f} "
              f"{fast['identical_to_fp32_fast']:>12.3f}")


if __name__ == "__main__":
    main()
