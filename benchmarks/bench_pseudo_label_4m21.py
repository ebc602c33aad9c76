"""Throughput (images/s) of the simple 4M-21 pseudo-labellers at released sizes, one thread.

* ``canny_edge``, ``color_palette`` (7 colours and the per-image ``random`` size) and ``metadata`` (from the
  image alone, and with depth, normals, segmentation and boxes present) on scikit-image's photographs resized to
  ``--size`` (224 in 4M-21). They use no model, so these are their real costs.
* ``t5_caption`` with randomly initialised T5 encoders of the released shapes, through the labeller (tokenizer,
  padding, float16 rows): the T5-v1.1-large encoder in full (d 1024, 24 layers, gated GELU), and ONE layer of the
  T5-v1.1-XXL encoder (d 4096, d_ff 10240, 64 heads; the full encoder, 24 layers and 4.7 B parameters, needs
  19 GB in float32: too big for this machine). The XXL figure is extrapolated as 24 x the one-layer time (the
  embedding lookup and final norm are negligible). Captions are ``--caption-words`` words of the test
  tokenizer's vocabulary, one T5 token each (+ ``</s>``), ``--batch-size`` per call.

    python benchmarks/bench_pseudo_label_4m21.py [--threads 1] [--images 16] [--size 224] [--batch-size 8]
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
from test_pseudo_label_4m21_simple import PHOTOS, WORDS, build_tiny_t5  # noqa: E402

from fourm_hf.data import pseudo_label as pl  # noqa: E402

T5_SHAPES = {  # name -> T5Config overrides of the released encoders (google/t5-v1_1-*)
    "T5-v1.1-large encoder (24 layers, full)": dict(d_model=1024, d_ff=2816, num_heads=16, d_kv=64, num_layers=24),
    "T5-v1.1-XXL encoder, 1 of 24 layers": dict(d_model=4096, d_ff=10240, num_heads=64, d_kv=64, num_layers=1),
}


def _rate(function, count: int, repeats: int) -> float:
    function()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return count / statistics.median(times)


def _photos(count: int, size: int) -> list:
    import skimage.data

    images = [Image.fromarray(getattr(skimage.data, name)()) for name in PHOTOS]
    return [pl.resize_and_center_crop(images[i % len(images)], size) for i in range(count)]


def _context(size: int, count: int) -> dict:
    """Synthetic depth, normals, semseg (COCO-like names) and boxes for the metadata labeller."""
    rng = np.random.default_rng(0)
    depth = [np.exp(rng.normal(size=(size, size))).astype(np.float32) for _ in range(count)]
    return {"depth": depth, "normal": [pl.normals_from_depth(d) for d in depth],
            "semseg": [rng.integers(0, 5, (size, size), dtype=np.uint8) for _ in range(count)],
            "boxes": [[{"label": "person", "box": [0.1, 0.1, 0.5, 0.9]}] * 3 for _ in range(count)],
            "caption": ["a photo of a cat on the table"] * count, "original_size": [(640, 480)] * count}


def _t5_folder(root: str, shape: dict) -> str:
    from transformers import AutoTokenizer, T5Config, T5EncoderModel

    tokenizer = AutoTokenizer.from_pretrained(build_tiny_t5(os.path.join(root, "tokenizer")))
    torch.manual_seed(0)
    config = T5Config(vocab_size=len(tokenizer), feed_forward_proj="gated-gelu", **shape)
    folder = os.path.join(root, "t5")
    T5EncoderModel(config).eval().save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--caption-words", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")
    from datasets.utils import disable_progress_bars
    from transformers.utils import logging as hf_logging

    disable_progress_bars()
    hf_logging.set_verbosity_error()

    images = _photos(args.images, args.size)
    context = _context(args.size, args.images)
    print(f"torch {torch.__version__}, {args.threads} thread(s), {args.images} photographs at {args.size}x{args.size}")
    print("| labeller | setting | images/s |")
    print("|---|---|---|")
    rows = [
        ("canny_edge", "sigma 1, thresholds (0.1, 0.2)", pl.CannyEdgeLabeller(), {}),
        ("color_palette", "7 colours", pl.ColorPaletteLabeller(7), {}),
        ("color_palette", "random size 1..7", pl.ColorPaletteLabeller("random"), {}),
        ("metadata", "image only", pl.MetadataLabeller(), {"original_size": context["original_size"]}),
        ("metadata", "+ caption, depth, normals, semseg, boxes", pl.MetadataLabeller(["person", "road", "sky", "cat", "grass"]), context),
    ]
    for column, setting, labeller, labels in rows:
        rate = _rate(lambda: labeller.label(images, labels), args.images, args.repeats)
        print(f"| {column} | {setting} | {rate:.1f} |")

    caption = " ".join(WORDS[i % len(WORDS)] for i in range(args.caption_words))
    captions = {"caption": [caption] * args.images}
    for name, shape in T5_SHAPES.items():
        with tempfile.TemporaryDirectory() as root:
            labeller = pl.T5CaptionLabeller(_t5_folder(root, shape), batch_size=args.batch_size)
            rate = _rate(lambda: labeller.label(images, captions), args.images, args.repeats)
        tokens = args.caption_words + 1
        print(f"| t5_caption | {name}, batch {args.batch_size}, {tokens} tokens | {rate:.2f} |")
        if shape["num_layers"] == 1:
            print(f"| t5_caption | T5-v1.1-XXL encoder, 24 layers: extrapolated (1-layer time x 24) | {rate / 24:.3f} |")


if __name__ == "__main__":
    main()
