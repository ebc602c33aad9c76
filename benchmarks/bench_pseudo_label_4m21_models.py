"""Throughput (images/s) of the model-backed 4M-21 labellers at released sizes, random weights.

* ``sam_instance``: ``SamModel(SamConfig())``, the ViT-B SAM (SamConfig's defaults: 768 wide, 12 layers, 1024 px
  input; 4M-21 used ViT-H, 636M, about 7x the encoder FLOPs), ``--points-per-side`` point prompts (SAM's 32) with
  SAM's default thresholds. Random weights predict low IoUs, so most masks are filtered before the upsampling:
  the time is the image encoder plus the prompt/mask decoder over all prompts, the part that real weights share.
* ``sam_edge``: the edges of the instance masks (numpy), timed on the masks SAM returned.
* ``dinov2`` + ``dinov2_global``: ``Dinov2Model(Dinov2Config())``, DINOv2-B/14, 224 px crop (16 x 16 grid).

Images are scikit-image photographs centre-cropped to ``--size`` (224, as 4M-21). Per labeller: median of
``--repeats`` passes over ``--images`` images after a one-image warm-up.

    python benchmarks/bench_pseudo_label_4m21_models.py [--threads 1] [--images 2] [--size 224] [--points-per-side 32] [--repeats 1]
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

import torch  # noqa: E402
from PIL import Image  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from test_pseudo_label import _processor  # noqa: E402

from fourm_hf.data import pseudo_label as pl  # noqa: E402


def _save_models(root: str) -> dict:
    import transformers as T

    torch.manual_seed(0)
    paths = {"sam": os.path.join(root, "sam"), "dinov2": os.path.join(root, "dinov2")}
    T.SamModel(T.SamConfig()).save_pretrained(paths["sam"])
    _processor("SamImageProcessor").save_pretrained(paths["sam"])
    T.Dinov2Model(T.Dinov2Config()).save_pretrained(paths["dinov2"])
    _processor("BitImageProcessor", size={"shortest_edge": 256}, crop_size={"height": 224, "width": 224}).save_pretrained(paths["dinov2"])
    return paths


def _photos(count: int, size: int) -> list:
    from skimage import data

    names = ["astronaut", "coffee", "chelsea", "rocket", "camera", "cat"]
    return [pl.resize_and_center_crop(Image.fromarray(getattr(data, names[i % len(names)])()).convert("RGB"), size) for i in range(count)]


def _rate(labeller, images, labels, repeats: int) -> tuple[float, float, dict]:
    """(images/s of wall time, images/s of this process's CPU time, the labels): with one thread on a shared
    core the CPU-time rate is what the machine would give to this process alone."""
    labeller.label(images[:1], {k: v[:1] for k, v in labels.items()})  # warm-up
    walls, cpus = [], []
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        produced = labeller.label(images, labels)
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return len(images) / statistics.median(walls), len(images) / statistics.median(cpus), produced


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--images", type=int, default=2)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--points-per-side", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    images = _photos(args.images, args.size)
    with tempfile.TemporaryDirectory() as root:
        paths = _save_models(root)
        labellers = pl.build_labellers(sam_model=paths["sam"], sam_points_per_side=args.points_per_side,
                                       dinov2_model=paths["dinov2"], batch_size=args.images, device=args.device)
        print(f"torch {torch.__version__}, device {args.device}, {args.threads} thread(s), {args.images} photographs of "
              f"{args.size}x{args.size}, SAM {args.points_per_side}x{args.points_per_side} point prompts")
        print("| labeller | model (random weights) | images/s (wall) | images/s (CPU time) |")
        print("|---|---|---|---|")
        names = {"SamInstanceLabeller": "SAM ViT-B (SamConfig defaults), 1024 px input", "SamEdgeLabeller": "(from the SAM masks)",
                 "Dinov2Labeller": "DINOv2-B/14, 224 px (dinov2 + dinov2_global, one call)"}
        labels = {}
        for labeller in labellers:
            wall_rate, cpu_rate, produced = _rate(labeller, images, labels, args.repeats)
            labels.update(produced)
            print(f"| {type(labeller).__name__} | {names[type(labeller).__name__]} | {wall_rate:.3g} | {cpu_rate:.3g} |", flush=True)
        counts = [len(masks) for masks in labels["_sam_instance_masks"]]
        print(f"SAM masks kept per image (random weights): {counts}")


if __name__ == "__main__":
    main()
