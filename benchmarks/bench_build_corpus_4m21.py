"""build-corpus throughput (images/s) over a 4M-21 pseudo-labelled dataset with released-size tokenizers.

Every released tokenizer family at its released size with random weights (the cost does not depend on
the weights): DiVAEs for RGB (16k), depth, normals and edges (8k; one edge tokenizer serves
``tok_canny_edge`` and ``tok_sam_edge``), ViT VQ-VAEs for semseg (134 classes) and the CLIP-B16 (512 x 14
x 14) and DINOv2-B14 (768 x 16 x 16) feature maps, the DINOv2-global MLP (16 x 8k), the human-pose MLP
(8 x 1k) and the SAM-instance ViT VQ-VAE (64 x 64 masks). The processor crops to 224 px. The dataset has
every column of the pseudo-label contract, with random values of the right shapes (``--points`` SAM query
points with one mask each, one person per image).

Printed: the images/s of ``build_corpus`` (one shard, ``--batch-size`` images per tokenizer call, fp32,
CPU, ``--threads`` torch threads), then each tokenizer's encode throughput alone (images/s; masks/s for
SAM instances, people/s for poses) on the same batch size, after one warm-up call. Usage::

    python benchmarks/bench_build_corpus_4m21.py --images 4 --batch-size 4 --threads 1
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import numpy as np
import torch

SIZE, SOURCE = 224, 256


def _random(model):
    with torch.no_grad():  # zero-initialised layers would make some paths trivially cheap; perturb them
        for parameter in model.parameters():
            if parameter.dim() > 0 and not parameter.any():
                parameter.normal_(0, 0.01)
    return model.eval()


def released_processor():
    """A FourMProcessor holding every released family at released size (random weights)."""
    from fourm_hf import (FourMDiVAE, FourMDiVAEConfig, FourMMLPVQVAE, FourMMLPVQVAEConfig, FourMViTVQVAE,
                          FourMViTVQVAEConfig)
    from fourm_hf.processing.image_processing_fourm import FourMImageProcessor
    from fourm_hf.processing.processing_fourm import FourMProcessor
    from fourm_hf.processing.sequence_tokens import SequenceTokenizers
    from fourm_hf.text.tokenization_fourm import train_text_tokenizer
    from fourm_hf.tokenizers.released_modalities import ReleasedModalityTokenizer as Wrap

    torch.manual_seed(0)
    divae = lambda codes, channels: _random(FourMDiVAE(FourMDiVAEConfig(codebook_size=codes, image_size=448,  # noqa: E731
                                                                       n_channels=channels)))
    edge = divae(8192, 1)
    vqvaes = {
        "tok_rgb": Wrap(divae(16384, 3), "tok_rgb", image_size=SIZE),
        "tok_depth": Wrap(divae(8192, 1), "tok_depth", image_size=SIZE),
        "tok_normal": Wrap(divae(8192, 3), "tok_normal", image_size=SIZE),
        "tok_canny_edge": Wrap(edge, "tok_canny_edge", image_size=SIZE),
        "tok_sam_edge": Wrap(edge, "tok_sam_edge", image_size=SIZE),
        "tok_semseg": Wrap(_random(FourMViTVQVAE(FourMViTVQVAEConfig(codebook_size=4096, image_size=448, n_labels=134,
                                                                      n_channels=64))), "tok_semseg", image_size=SIZE),
        "tok_clip": Wrap(_random(FourMViTVQVAE(FourMViTVQVAEConfig(codebook_size=8192, image_size=448, n_channels=512,
                                                                    patch_proj=False))), "tok_clip", image_size=SIZE,
                         grid_size=14),
        "tok_dinov2": Wrap(_random(FourMViTVQVAE(FourMViTVQVAEConfig(codebook_size=8192, image_size=448, n_channels=768,
                                                                      patch_proj=False))), "tok_dinov2", image_size=SIZE,
                           grid_size=16),
        "tok_dinov2_global": Wrap(_random(FourMMLPVQVAE(FourMMLPVQVAEConfig(codebook_size=8192, num_codebooks=16,
                                                                             n_channels=768, latent_dim=1024))),
                                  "tok_dinov2_global", image_size=SIZE),
    }
    sequence = SequenceTokenizers(
        human_poses=Wrap(_random(FourMMLPVQVAE(FourMMLPVQVAEConfig(codebook_size=1024, num_codebooks=8, n_channels=207,
                                                                    latent_dim=1024))), "human_poses", "pose", image_size=1),
        sam_instance=Wrap(_random(FourMViTVQVAE(FourMViTVQVAEConfig(codebook_size=1024, image_size=64, n_channels=1,
                                                                     latent_dim=1024, out_conv=True))),
                          "sam_instance", "instance", image_size=64))
    words = ["a photograph of a scene", "point none polygon human global pose camera shape"]
    text = train_text_tokenizer(words, vocab_size=4600, class_names=["person"], num_sentinels=8, coord_bins=1000)
    processor = FourMProcessor(FourMImageProcessor(image_size=SIZE, num_semseg_classes=134), text, vqvaes=vqvaes)
    processor.sequence_tokenizers = sequence
    return processor


def labelled_dataset(count: int, points: int):
    """Random rows with every column of the pseudo-label contract at SOURCE px."""
    from datasets import Dataset

    rng = np.random.default_rng(0)
    mask = np.packbits(rng.random((64, 64)) > 0.5).tobytes()
    rows = []
    for index in range(count):
        rows.append({
            "rgb": rng.integers(0, 256, (SOURCE, SOURCE, 3), dtype=np.uint8),
            "depth": rng.uniform(1, 5, (SOURCE, SOURCE)).astype(np.float32),
            "normal": np.dstack([np.zeros((SOURCE, SOURCE)), np.zeros((SOURCE, SOURCE)), -np.ones((SOURCE, SOURCE))]).astype(np.float32),
            "semseg": rng.integers(0, 134, (SOURCE, SOURCE), dtype=np.uint8), "caption": f"a photograph of a scene {index}",
            "canny_edge": (rng.random((SOURCE, SOURCE)) > 0.9).astype(np.uint8),
            "sam_edge": (rng.random((SOURCE, SOURCE)) > 0.9).astype(np.uint8),
            "clip": rng.normal(size=(16, 16, 512)).astype(np.float16), "dinov2": rng.normal(size=(18, 18, 768)).astype(np.float16),
            "dinov2_global": rng.normal(size=(1, 768)).astype(np.float16),
            "t5_caption": rng.normal(size=(12, 4096)).astype(np.float16),
            "sam_instance": [{"point": [float(x), 0.5], "masks": [{"box": [0.1, 0.1, 0.9, 0.9], "mask": mask}]}
                             for x in np.linspace(0.05, 0.95, points)],
            "human_poses": [{"box": [0.2, 0.2, 0.8, 0.9], "global_orientation": np.eye(3).ravel().tolist(),
                             "body_pose": np.tile(np.eye(3).ravel(), 23).tolist(), "camera": [0.5, 0.0, 8.0],
                             "shape": [0.0] * 10}],
            "color_palette": [[10, 20, 30], [200, 100, 0]], "metadata": json.dumps({"original_width": 8, "brightness": 20}),
        })
    return Dataset.from_list(rows)


def encode_throughput(processor, batch_size: int, points: int) -> dict:
    """Each tokenizer's encode throughput alone (items/s), after one warm-up call."""
    rng = np.random.default_rng(1)
    inputs = {
        "tok_rgb": torch.rand(batch_size, 3, SIZE, SIZE) * 2 - 1, "tok_depth": torch.rand(batch_size, 1, SIZE, SIZE) + 1,
        "tok_normal": torch.nn.functional.normalize(torch.randn(batch_size, 3, SIZE, SIZE), dim=1),
        "tok_canny_edge": torch.rand(batch_size, 1, SIZE, SIZE).round(), "tok_semseg": torch.randint(0, 134, (batch_size, SIZE, SIZE)),
    }
    results = {}
    for name, batch in inputs.items():
        results[name] = _rate(lambda: processor.encode_map(name, batch), batch_size)
    for name, shape in (("tok_clip", (512, 14, 14)), ("tok_dinov2", (768, 16, 16))):
        model, features = processor.vqvaes[name].tokenizer, torch.randn(batch_size, *shape)
        results[name] = _rate(lambda: model.encode(features), batch_size)
    vectors = rng.normal(size=(batch_size, 768)).astype(np.float32)
    results["tok_dinov2_global"] = _rate(lambda: processor.encode_vectors({"tok_dinov2_global": vectors}), batch_size)
    sam, masks = processor.sequence_tokenizers["sam_instance"], torch.rand(batch_size * points, 1, 64, 64).round()
    results["sam_instance (masks/s)"] = _rate(lambda: sam.encode(masks), batch_size * points)
    pose, bodies = processor.sequence_tokenizers["human_poses"], torch.randn(batch_size, 207)
    results["human_poses (people/s)"] = _rate(lambda: pose.encode(bodies), batch_size)
    return results


def _rate(function, items: int) -> float:
    with torch.inference_mode():
        function()
        start = time.perf_counter()
        function()
    return items / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--points", type=int, default=7, help="SAM query points (one mask each) per image")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from fourm_hf.data.corpus import build_corpus

    processor = released_processor()
    dataset = labelled_dataset(args.images, args.points)
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        corpus = build_corpus(dataset, processor, f"{folder}/corpus", batch_size=args.batch_size, shard_size=args.images,
                              crop="random", progress=False)
        elapsed = time.perf_counter() - start
    print(f"build-corpus: {args.images} images, batch {args.batch_size}, {args.threads} thread(s): {elapsed:.1f} s, "
          f"{args.images / elapsed:.3f} images/s; columns {sorted(corpus.column_names)}")
    for name, rate in encode_throughput(processor, args.batch_size, args.points).items():
        print(f"encode {name}: {rate:.2f} /s")


if __name__ == "__main__":
    main()
