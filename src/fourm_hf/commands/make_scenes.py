"""``fourm-hf make-scenes``: render the embedded scene corpus as a ``datasets`` dataset (``fourm_hf.data.scenes``)."""

from __future__ import annotations

import argparse

from ..data.scenes import make_scene_dataset


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--num", type=int, required=True, help="number of scenes")
    parser.add_argument("--size", type=int, default=64, help="image side in pixels (multiple of 8, >= 32)")
    parser.add_argument("--out", required=True, help="output directory (datasets.save_to_disk format)")
    parser.add_argument("--seed", type=int, default=0, help="dataset seed (scene i uses scene_seed(seed, i))")
    parser.add_argument("--num-proc", type=int, default=1, help="worker processes")
    parser.add_argument("--shard-size", type=int, default=500, help="scenes per resumable shard")


def main(args: argparse.Namespace) -> int:
    dataset = make_scene_dataset(
        num=args.num, size=args.size, out_dir=args.out, seed=args.seed, shard_size=args.shard_size, num_proc=args.num_proc
    )
    print(f"wrote {len(dataset)} scenes of {args.size}x{args.size} to {args.out}")
    return 0
