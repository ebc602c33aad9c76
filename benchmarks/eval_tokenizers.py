"""Reconstruction quality of trained VQ-VAE tokenizers on held-out scenes (encode, then decode).

    python benchmarks/eval_tokenizers.py --dataset DIR --tokenizers runs/tok_rgb runs/tok_depth \\
        runs/tok_normal runs/tok_semseg [--eval-size 200] [--max-depth 99] [--json out.json]

Each tokenizer folder (``save_pretrained`` of a ``FourMVQVAE``) is scored on its own column
(``config.target``) of the held-out rows that ``train-tokenizer`` held out (same
``split_dataset`` rule: the ``test``/``validation`` split, else the last ``--eval-size`` rows),
resized to the tokenizer's ``image_size`` the way training resized them. Metrics:

- rgb: PSNR in dB on the uint8 images (per image, then averaged).
- depth: AbsRel = mean |d - d*| / d*, delta<1.25 = fraction of pixels with
  max(d / d*, d* / d) < 1.25, over all pixels, and also over pixels with d* < ``--max-depth``
  when given (e.g. to leave out the renderer's sky at 100 m).
- normal: mean and median angle between decoded and true unit normals, in degrees.
- semseg: pixel accuracy and mIoU (mean over classes present in the truth or the prediction)
  from one confusion matrix over the whole held-out set.
- feature: mean cosine similarity and MSE.
- every tokenizer: fraction of the vocabulary used on the held-out set and the perplexity of the
  id histogram.

The metric math lives here for now (the package's ``evaluate`` metrics are written elsewhere).
"""

from __future__ import annotations

import argparse
import json
import time

import datasets
import numpy as np
import torch
from transformers import AutoModel

import fourm_hf  # noqa: F401  (registers FourMVQVAE with AutoModel)
from fourm_hf.tokenizers.train_vqvae import load_batch, split_dataset
from fourm_hf.tokenizers.vqvae import codebook_usage_stats


class ReconstructionScores:
    """Accumulates per-kind reconstruction metrics over batches of (truth, reconstruction)."""

    def __init__(self, input_kind: str, num_classes: int | None = None, max_depth: float | None = None):
        self.kind, self.max_depth = input_kind, max_depth
        self.sums: dict[str, float] = {}
        self.counts: dict[str, int] = {}
        self.angles: list[np.ndarray] = []
        self.confusion = np.zeros((num_classes, num_classes), np.int64) if input_kind == "semseg" else None

    def _add(self, name: str, total: float, count: int) -> None:
        self.sums[name] = self.sums.get(name, 0.0) + float(total)
        self.counts[name] = self.counts.get(name, 0) + int(count)

    def update(self, truth: torch.Tensor, reconstruction: torch.Tensor) -> None:
        """truth / reconstruction in natural units, as ``encode`` takes and ``decode`` returns."""
        truth, reconstruction = truth.double(), reconstruction.double()
        if self.kind == "rgb":  # both to the uint8 grid, then PSNR per image
            truth_255 = torch.round((truth + 1) * 127.5)
            recon_255 = torch.round((reconstruction + 1) * 127.5).clamp(0, 255)
            mse = ((truth_255 - recon_255) ** 2).flatten(1).mean(1).clamp_min(1e-10)
            self._add("psnr_db", (10 * torch.log10(255.0**2 / mse)).sum(), len(mse))
        elif self.kind == "depth":
            self._add_depth("", truth, reconstruction, torch.ones_like(truth, dtype=torch.bool))
            if self.max_depth is not None:
                self._add_depth(f"_below_{self.max_depth:g}m", truth, reconstruction, truth < self.max_depth)
        elif self.kind == "normal":
            cosine = (truth * reconstruction).sum(1).clamp(-1, 1)
            self.angles.append(torch.rad2deg(torch.acos(cosine)).flatten().numpy())
        elif self.kind == "semseg":
            num_classes = self.confusion.shape[0]
            pairs = truth.long().flatten() * num_classes + reconstruction.long().flatten()
            self.confusion += torch.bincount(pairs, minlength=num_classes**2).view(num_classes, num_classes).numpy()
        else:
            cosine = torch.nn.functional.cosine_similarity(truth, reconstruction, dim=1)
            self._add("cosine", cosine.sum(), cosine.numel())
            self._add("mse", ((truth - reconstruction) ** 2).sum(), truth.numel())

    def _add_depth(self, suffix: str, truth, reconstruction, valid) -> None:
        truth, reconstruction = truth[valid], reconstruction[valid]
        ratio = torch.maximum(reconstruction / truth, truth / reconstruction)
        self._add("abs_rel" + suffix, ((reconstruction - truth).abs() / truth).sum(), truth.numel())
        self._add("delta1" + suffix, (ratio < 1.25).sum(), truth.numel())

    def result(self) -> dict[str, float]:
        scores = {name: self.sums[name] / max(1, self.counts[name]) for name in self.sums}
        if self.kind == "normal":
            angles = np.concatenate(self.angles)
            scores.update(mean_angle_deg=float(angles.mean()), median_angle_deg=float(np.median(angles)))
        if self.kind == "semseg":
            true_positive = np.diag(self.confusion).astype(np.float64)
            union = self.confusion.sum(0) + self.confusion.sum(1) - true_positive
            present = union > 0
            scores.update(
                pixel_accuracy=float(true_positive.sum() / self.confusion.sum()),
                miou=float((true_positive[present] / union[present]).mean()),
            )
        return scores


@torch.no_grad()
def evaluate_tokenizer(folder: str, dataset, eval_size: int, batch_size: int, max_depth: float | None) -> dict:
    model = AutoModel.from_pretrained(folder).eval()
    config = model.config
    _, held_out = split_dataset(dataset, eval_size)
    held_out = held_out.select_columns([config.target]).with_format("numpy")
    scores = ReconstructionScores(config.input_kind, config.num_classes, max_depth)
    all_ids = []
    start_time = time.perf_counter()
    for start in range(0, len(held_out), batch_size):
        indices = range(start, min(start + batch_size, len(held_out)))
        truth = load_batch(held_out, config.target, indices, config.input_kind, config.image_size)
        ids = model.encode(truth)
        scores.update(truth, model.decode(ids))
        all_ids.append(ids)
    seconds = time.perf_counter() - start_time
    fraction_used, perplexity = codebook_usage_stats(torch.cat(all_ids), config.vocab_size)
    return {
        "tokenizer": folder,
        "modality": config.modality,
        "image_size": config.image_size,
        "patch_size": config.patch_size,
        "vocab_size": config.vocab_size,
        "num_samples": len(held_out),
        **scores.result(),
        "codebook_usage": float(fraction_used),
        "perplexity": float(perplexity),
        "seconds_encode_decode": seconds,
    }


def format_row(result: dict) -> str:
    skip = {"tokenizer", "modality", "image_size", "patch_size", "vocab_size", "num_samples", "seconds_encode_decode"}
    metrics = ", ".join(f"{k} {v:.4g}" for k, v in result.items() if k not in skip)
    return (
        f"| {result['modality']} | {result['image_size']} px / patch {result['patch_size']} | {result['vocab_size']} "
        f"| {result['num_samples']} | {metrics} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", required=True, help="scene dataset folder (save_to_disk)")
    parser.add_argument("--tokenizers", nargs="+", required=True, help="FourMVQVAE folders")
    parser.add_argument("--eval-size", type=int, default=200, help="held-out rows (the last ones) when there is no test split")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-depth", type=float, default=None, help="also score depth on pixels with true depth below this")
    parser.add_argument("--json", default=None, help="also write the results here")
    parser.add_argument("--num-threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.num_threads)

    dataset = datasets.load_from_disk(args.dataset)
    results = [evaluate_tokenizer(folder, dataset, args.eval_size, args.batch_size, args.max_depth) for folder in args.tokenizers]
    print("| modality | resolution | vocab | held-out | metrics |")
    print("|---|---|---|---|---|")
    for result in results:
        print(format_row(result))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=2)


if __name__ == "__main__":
    main()
