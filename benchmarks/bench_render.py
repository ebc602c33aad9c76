"""Scene renderer speed: images/s on one core at 64 / 128 / 224 px.

    python benchmarks/bench_render.py [--num 40] [--sizes 64 128 224] [--repeats 3]

Renders seeds 0..num-1 at each size in one process with numpy/BLAS/torch limited to one thread
and prints ms per image and images/s (best of ``--repeats`` passes, to reduce noise from other
jobs on the machine). ``render_scene`` includes sampling the layout and its visibility check
at 64 px, shading with shadows, boxes and the caption.
"""

import os

for variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[variable] = "1"

import argparse
import time

from fourm_hf.data.scenes import render_scene


def time_size(size: int, num: int) -> float:
    """Seconds to render seeds 0..num-1 at ``size``."""
    start = time.perf_counter()
    for seed in range(num):
        render_scene(seed, size)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num", type=int, default=40, help="scenes per pass")
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 224])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass

    render_scene(0, 64)  # warm-up
    print(f"{'size':>6} {'ms/image':>10} {'images/s':>10}   ({args.num} scenes, best of {args.repeats})")
    for size in args.sizes:
        best = min(time_size(size, args.num) for _ in range(args.repeats))
        print(f"{size:>6} {1000.0 * best / args.num:>10.1f} {args.num / best:>10.1f}")


if __name__ == "__main__":
    main()
