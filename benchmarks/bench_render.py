"""Scene renderer speed: images/s on one core at 64 / 128 / 224 px.

    python benchmarks/bench_render.py [--num 40] [--sizes 64 128 224] [--repeats 3]

Renders seeds 0..num-1 at each size in one process with numpy/BLAS/torch limited to one thread
and prints ms per image and images/s, by wall clock and by this process's CPU time (best of
``--repeats`` passes, to reduce noise from other jobs on the machine). ``render_scene`` includes sampling the layout and its visibility check
at 64 px, shading with shadows, boxes and the caption.
"""

import os

for variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[variable] = "1"

import argparse
import time

from fourm_hf.data.scenes import render_scene


def time_size(size: int, num: int) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) to render seeds 0..num-1 at ``size``."""
    wall, cpu = time.perf_counter(), time.process_time()
    for seed in range(num):
        render_scene(seed, size)
    return time.perf_counter() - wall, time.process_time() - cpu


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
    print(f"({args.num} scenes per pass, best of {args.repeats}; CPU = this process's CPU time, less affected by other jobs)")
    print(f"{'size':>6} {'wall ms/img':>12} {'wall img/s':>11} {'CPU ms/img':>11} {'CPU img/s':>10}")
    for size in args.sizes:
        timings = [time_size(size, args.num) for _ in range(args.repeats)]
        wall, cpu = min(t[0] for t in timings), min(t[1] for t in timings)
        print(f"{size:>6} {1000.0 * wall / args.num:>12.1f} {args.num / wall:>11.1f} {1000.0 * cpu / args.num:>11.1f} {args.num / cpu:>10.1f}")


if __name__ == "__main__":
    main()
