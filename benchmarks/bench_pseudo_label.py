"""Throughput of each pseudo-labeller with TINY random models: the pipeline overhead.

The models are the tiny randomly initialised DPT, SegFormer, YOLOS, CLIP-vision and BLIP of
``tests/test_pseudo_label.py`` (32 px model inputs, a few hundred thousand parameters), so the
numbers measure what the labelling machinery costs around a model (PIL conversion, the
transformers pipeline's pre/post-processing, our conversion to the dataset schema), not the cost of
real models. Per labeller it prints images/s over ``--images`` images at ``--size`` px (median of
``--repeats`` passes after a warm-up), then the end-to-end rate of ``pseudo_label_dataset`` with all
labellers (folder of PNGs -> saved dataset, shard writing and merge included).

    python benchmarks/bench_pseudo_label.py [--threads 1] [--images 32] [--size 64] [--batch-size 8] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from test_pseudo_label import build_tiny_models, write_images  # noqa: E402

from fourm_hf.data import pseudo_label as pl  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")
    from datasets.utils import disable_progress_bars
    from transformers.utils import logging as hf_logging

    disable_progress_bars()
    hf_logging.set_verbosity_error()

    with tempfile.TemporaryDirectory() as root:
        models = build_tiny_models(os.path.join(root, "models"))
        labellers = pl.build_labellers(
            depth_model=models["depth"], segmentation_model=models["segmentation"], detection_model=models["detection"],
            feature_model=models["features"], caption_model=models["caption"], batch_size=args.batch_size,
            detection_threshold=0.0, caption_max_new_tokens=10,
        )
        rng = np.random.default_rng(0)
        images = [Image.fromarray(rng.integers(0, 256, (args.size, args.size, 3), dtype=np.uint8)) for _ in range(args.images)]

        print(f"torch {torch.__version__}, {args.threads} thread(s), {args.images} images of {args.size}x{args.size}, batch size {args.batch_size}")
        print("| labeller | model (tiny, random) | images/s |")
        print("|---|---|---|")
        names = {"DepthLabeller": "DPT", "NormalsFromDepthLabeller": "(from depth)", "SegmentationLabeller": "SegFormer",
                 "DetectionLabeller": "YOLOS", "FeatureLabeller": "CLIP vision", "CaptionLabeller": "BLIP (10 new tokens)"}
        labels = {}
        for labeller in labellers:
            labeller.label(images[: args.batch_size], {k: v[: args.batch_size] for k, v in labels.items()})  # warm-up
            times = []
            for _ in range(args.repeats):
                start = time.perf_counter()
                produced = labeller.label(images, labels)
                times.append(time.perf_counter() - start)
            labels.update(produced)
            print(f"| {type(labeller).__name__} | {names[type(labeller).__name__]} | {args.images / statistics.median(times):.1f} |")

        folder = os.path.join(root, "images")
        write_images(folder, count=args.images)
        start = time.perf_counter()
        pl.pseudo_label_dataset(folder, os.path.join(root, "out"), labellers, size=args.size, batch_size=args.batch_size, shard_size=16)
        elapsed = time.perf_counter() - start
        print(f"| end to end (all labellers, shards of 16, save + merge) | all of the above | {args.images / elapsed:.1f} |")


if __name__ == "__main__":
    main()
