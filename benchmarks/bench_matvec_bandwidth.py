"""How fast one core can stream the weights of a cached decoding step, against how fast it reads memory.

A cached caption step of the base model multiplies one new token (or one per row) by every decoder weight
and the caption head: 122M weights, read from memory once per step since they do not fit any cache. This
script measures, on one thread:

- the core's read bandwidth (``tensor.sum()`` over 256 MiB) and copy bandwidth;
- one pass over the linear layers of the base decoder (12 blocks: fused q|k|v 768->2304, self-attention
  output, cross-attention query and output 768->768, SwiGLU MLP 2 x 768->2048 and 2048->768) and the 30000-way caption
  head, at 1 and 8 rows, in each format: fp32 ``F.linear``, fp32 with MKL's pre-packed weights
  (``torch.ops.mkl._mkl_linear``, what inductor uses after freezing), bf16 ``F.linear`` and torch's dynamic
  int8. Reported: ms per pass, the weights' bytes per second, and the floor that the read bandwidth allows
  for those bytes.

The ratio of the two says how close a cached step is to the hardware's limit, and so how much faster a
batch-1 step can get in each format without reading fewer bytes. Median of ``--repeats`` passes, formats
interleaved.

    python benchmarks/bench_matvec_bandwidth.py
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
import warnings

import torch
import torch.nn.functional as F

from fourm_hf.output_paths import write_atomic

# (out, in) per decoder block: fused q|k|v, self-attention output, cross-attention query and output (its keys and
# values are computed once per sequence), SwiGLU fc1, fc3 and fc2
BLOCK_SHAPES = [(2304, 768), (768, 768), (768, 768), (768, 768), (2048, 768), (2048, 768), (768, 2048)]
CAPTION_HEAD = (30000, 768)


def decoder_shapes(blocks: int) -> list[tuple[int, int]]:
    return BLOCK_SHAPES * blocks + [CAPTION_HEAD]


def median_seconds(function, repeats: int) -> float:
    function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def memory_bandwidth(repeats: int) -> dict:
    """GB/s of reading (``sum``) and copying a 256 MiB float32 tensor."""
    source = torch.randn(64 * 2**20)
    target = torch.empty_like(source)
    read = median_seconds(lambda: source.sum(), repeats)
    copy = median_seconds(lambda: target.copy_(source), repeats)
    nbytes = source.numel() * 4
    return dict(read_gb_s=round(nbytes / read / 1e9, 1), copy_gb_s=round(2 * nbytes / copy / 1e9, 1))


def format_passes(shapes: list[tuple[int, int]], rows: int) -> dict:
    """Per format: (a function running one pass over every layer at ``rows`` rows, the bytes of its weights)."""
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    weights = [torch.randn(out, inp) * 0.02 for out, inp in shapes]
    inputs = {width: torch.randn(rows, width) for width in {inp for _, inp in shapes}}
    passes = {"fp32": (lambda: [F.linear(inputs[w.shape[1]], w) for w in weights], 4)}
    if torch.backends.mkl.is_available() and hasattr(torch.ops.mkl, "_mkl_linear"):
        packed = [torch.ops.mkl._mkl_reorder_linear_weight(w, rows) for w in weights]
        passes["fp32 MKL packed"] = (
            lambda: [torch.ops.mkl._mkl_linear(inputs[w.shape[1]], p, w, None, rows) for w, p in zip(weights, packed)], 4)
    bf16_weights = [w.to(torch.bfloat16) for w in weights]
    bf16_inputs = {width: x.to(torch.bfloat16) for width, x in inputs.items()}
    passes["bf16"] = (lambda: [F.linear(bf16_inputs[w.shape[1]], w) for w in bf16_weights], 2)
    layers = torch.nn.ModuleList(torch.nn.Linear(inp, out, bias=False) for out, inp in shapes)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao's deprecation notice
        int8 = quantize_dynamic(layers, {torch.nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8)
    passes["int8 (torch dynamic)"] = (lambda: [layer(inputs[inp]) for layer, (_, inp) in zip(int8, shapes)], 1)
    count = sum(out * inp for out, inp in shapes)
    return {name: (function, count * bytes_per_weight) for name, (function, bytes_per_weight) in passes.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--blocks", type=int, default=12, help="decoder blocks (base: 12)")
    parser.add_argument("--rows", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", help="also write the rows to this file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s), load average {os.getloadavg()[0]:.1f}", flush=True)
    bandwidth = memory_bandwidth(5)
    print(json.dumps(bandwidth), flush=True)
    shapes = decoder_shapes(args.blocks)
    results = [dict(measure="memory", **bandwidth)]
    with torch.no_grad():
        for rows in args.rows:
            passes = format_passes(shapes, rows)
            times = {name: [] for name in passes}
            for _ in range(args.repeats):  # interleaved: one pass of each format per round
                for name, (function, _) in passes.items():
                    times[name].append(median_seconds(function, 1))
            for name, (_, nbytes) in passes.items():
                seconds = statistics.median(times[name])
                row = dict(rows=rows, format=name, ms_per_pass=round(seconds * 1e3, 2), weight_mb=round(nbytes / 1e6, 1),
                           gb_s=round(nbytes / seconds / 1e9, 1),
                           floor_ms=round(nbytes / (bandwidth["read_gb_s"] * 1e9) * 1e3, 2),
                           share_of_read_bandwidth=round(nbytes / seconds / 1e9 / bandwidth["read_gb_s"], 2))
                print(json.dumps(row), flush=True)
                results.append(row)
    print(f"load average at the end {os.getloadavg()[0]:.1f}")
    if args.json:
        write_atomic(args.json, json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
