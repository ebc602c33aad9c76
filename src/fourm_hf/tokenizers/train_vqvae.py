"""Train a VQ-VAE tokenizer on one column of a scene dataset: ``fourm-hf train-tokenizer``.

::

    fourm-hf train-tokenizer --modality depth --dataset data/scenes --out runs/tok_depth \\
        --steps 2000 --batch-size 32 --lr 1e-3 --image-size 64 --patch-size 8 [--resume]

The dataset is a ``datasets`` folder written by ``save_to_disk`` with the scene schema (``rgb``
Image, ``depth`` (H, W) float32 metres, ``normal`` (H, W, 3) float32, ``semseg`` (H, W) int ids; any
other column is ignored). Held-out split: the ``test`` (or ``validation``) split of a DatasetDict,
otherwise the last ``--eval-size`` rows; :func:`split_dataset` is shared with
``benchmarks/eval_tokenizers.py`` so both score the same rows.

Plain torch loop: AdamW, linear warmup then cosine decay to 10% of ``--lr``, gradient clipping,
optional horizontal flips. Every ``--checkpoint-every`` steps ``<out>/checkpoint.pt`` is replaced
atomically (model, optimizer, scheduler, step, the flip generator's state, eval history); the batch
order of epoch ``e`` is ``randperm`` from a generator seeded with ``seed + e``, so ``--resume``
continues exactly where an uninterrupted run would be. At the end the last model is written with
``save_pretrained`` into ``<out>`` (config.json + model.safetensors) with ``eval_results.json``.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path

import datasets
import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..modalities import get_modality
from ..output_paths import check_output_dir, write_atomic
from .vqvae import INPUT_KINDS, FourMVQVAE, FourMVQVAEConfig, arrays_to_batch, codebook_usage_stats

# Model sizes: "tiny" for tests, "small" for 64-128 px training on CPU (~1M parameters).
PRESETS = {
    "tiny": dict(base_channels=8, max_channels=16, num_res_blocks=1),
    "small": dict(base_channels=16, max_channels=128, num_res_blocks=1),
    "base": dict(base_channels=32, max_channels=256, num_res_blocks=2),
}
CHECKPOINT_NAME = "checkpoint.pt"
MIN_LR_RATIO = 0.1


# ---- data ----------------------------------------------------------------------------------------
def split_dataset(dataset, eval_size: int) -> tuple[datasets.Dataset, datasets.Dataset]:
    """(train, held-out) from a Dataset (the last ``eval_size`` rows are held out) or a
    DatasetDict (its ``train`` and ``test``/``validation`` splits)."""
    if isinstance(dataset, datasets.DatasetDict):
        eval_name = next((name for name in ("test", "validation") if name in dataset), None)
        if "train" not in dataset or eval_name is None:
            raise ValueError(f"A DatasetDict needs a 'train' and a 'test' or 'validation' split, got {list(dataset)}.")
        return dataset["train"], dataset[eval_name]
    if not 0 < eval_size < len(dataset):
        raise ValueError(f"eval_size must be in [1, {len(dataset) - 1}] for a dataset of {len(dataset)} rows, got {eval_size}.")
    split_at = len(dataset) - eval_size
    return dataset.select(range(split_at)), dataset.select(range(split_at, len(dataset)))


def resize_batch(batch: torch.Tensor, size: int, input_kind: str) -> torch.Tensor:
    """Resize a batch (B, C, H, W) (semseg (B, H, W)) to ``size`` x ``size``: nearest for class
    ids, antialiased bilinear otherwise (normals re-normalised). No-op at the right size."""
    if tuple(batch.shape[-2:]) == (size, size):
        return batch
    if input_kind == "semseg":
        return F.interpolate(batch[:, None].float(), size=(size, size), mode="nearest")[:, 0].long()
    resized = F.interpolate(batch, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return F.normalize(resized, dim=1) if input_kind == "normal" else resized


def load_batch(rows: datasets.Dataset, column: str, indices, input_kind: str, image_size: int) -> torch.Tensor:
    """Rows ``indices`` of ``column`` as an ``encode``-ready batch at ``image_size``."""
    arrays = rows[[int(i) for i in indices]][column]
    return resize_batch(arrays_to_batch(arrays, input_kind, name=column), image_size, input_kind)


def horizontal_flip(batch: torch.Tensor, flip: torch.Tensor, input_kind: str) -> torch.Tensor:
    """Mirror the samples where ``flip`` (B,) is True. Normals also negate their x component
    (channel 0 = the image's horizontal axis, as in the OpenCV and OpenGL camera conventions)."""
    mirrored = batch.flip(-1)
    if input_kind == "normal":
        mirrored = mirrored * torch.tensor([-1.0, 1.0, 1.0]).view(1, 3, 1, 1)
    mask = flip.view(-1, *([1] * (batch.dim() - 1)))
    return torch.where(mask, mirrored, batch)


def depth_log_stats(rows: datasets.Dataset, column: str, max_rows: int = 256) -> tuple[float, float]:
    """Mean and std of log-depth over the first ``max_rows`` rows."""
    depth = np.asarray(rows[: min(max_rows, len(rows))][column], dtype=np.float64)
    if not np.isfinite(depth).all() or (depth <= 0).any():
        raise ValueError(f"Column {column!r}: depth must be finite and > 0 metres to compute log-depth statistics.")
    log_depth = np.log(depth)
    return float(log_depth.mean()), float(max(log_depth.std(), 1e-3))


def count_classes(rows: datasets.Dataset, column: str) -> int:
    """1 + the largest class id found in ``column`` (used when --num-classes is not given)."""
    largest = 0
    for start in range(0, len(rows), 512):
        largest = max(largest, int(np.asarray(rows[start : start + 512][column]).max()))
    return largest + 1


# ---- schedule, checkpoints -----------------------------------------------------------------------
def lr_factor(step: int, total_steps: int, warmup_steps: int) -> float:
    """Linear warmup to 1, then cosine decay to ``MIN_LR_RATIO`` at ``total_steps``."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return MIN_LR_RATIO + (1 - MIN_LR_RATIO) * 0.5 * (1 + math.cos(math.pi * progress))


def atomic_torch_save(obj, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def atomic_write_json(obj, path: Path) -> None:
    write_atomic(path, json.dumps(obj, indent=2, sort_keys=True))


def save_pretrained_atomic(model: FourMVQVAE, out_dir: Path) -> None:
    """``save_pretrained`` into a temporary folder, then move each file into ``out_dir``."""
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=".save_") as tmp:
        model.save_pretrained(tmp)
        for name in os.listdir(tmp):
            os.replace(os.path.join(tmp, name), out_dir / name)


@torch.no_grad()
def evaluate_model(model: FourMVQVAE, rows, column: str, batch_size: int) -> dict:
    """Mean loss, codebook usage (fraction of ids used) and perplexity over ``rows``."""
    model.eval()
    total_loss, all_ids = 0.0, []
    for start in range(0, len(rows), batch_size):
        indices = range(start, min(start + batch_size, len(rows)))
        batch = load_batch(rows, column, indices, model.config.input_kind, model.config.image_size)
        output = model(batch)
        total_loss += float(output.loss) * len(indices)
        all_ids.append(output.ids)
    model.train()
    fraction_used, perplexity = codebook_usage_stats(torch.cat(all_ids), model.config.vocab_size)
    return {"loss": total_loss / len(rows), "codebook_usage": float(fraction_used), "perplexity": float(perplexity)}


# ---- the loop ------------------------------------------------------------------------------------
def train_tokenizer(
    modality: str,
    dataset: str | os.PathLike,
    out: str | os.PathLike,
    steps: int,
    batch_size: int = 32,
    lr: float = 1e-3,
    image_size: int | None = None,
    patch_size: int = 8,
    vocab_size: int | None = None,
    input_kind: str | None = None,
    num_classes: int | None = None,
    preset: str = "small",
    warmup_steps: int = 100,
    weight_decay: float = 0.0,
    eval_size: int = 64,
    eval_every: int = 500,
    checkpoint_every: int = 200,
    flip: bool = True,
    seed: int = 0,
    resume: bool = False,
    stop_after: int | None = None,
    progress: bool = True,
) -> dict:
    """Train (or resume) a VQ-VAE on column ``modality`` of the dataset at ``dataset``.

    ``stop_after`` ends the run after that many total steps (checkpoint written) without
    finishing, as an interruption would; ``resume=True`` continues from ``<out>/checkpoint.pt``.
    Returns a summary dict (final step, last eval metrics, output folder).
    """
    out_dir = check_output_dir(out, "train-tokenizer: --out")
    out_dir.mkdir(parents=True, exist_ok=True)
    checkpoint_path = out_dir / CHECKPOINT_NAME
    if checkpoint_path.exists() and not resume:
        raise ValueError(f"{checkpoint_path} exists: pass --resume to continue that run or choose another --out.")

    train_rows, eval_rows = split_dataset(datasets.load_from_disk(str(dataset)), eval_size)
    if modality not in train_rows.column_names:
        raise ValueError(f"--modality {modality!r} is not a column of {dataset}; columns are {train_rows.column_names}.")
    train_rows = train_rows.select_columns([modality]).with_format("numpy")
    eval_rows = eval_rows.select_columns([modality]).with_format("numpy")
    if len(train_rows) < batch_size:
        raise ValueError(f"batch_size ({batch_size}) is larger than the {len(train_rows)} training rows.")

    checkpoint = torch.load(checkpoint_path, weights_only=True) if resume and checkpoint_path.exists() else None
    if checkpoint is not None:
        config = FourMVQVAEConfig(**checkpoint["config"])
    else:
        config = build_config(modality, train_rows, image_size, patch_size, vocab_size, input_kind, num_classes, preset)
    kind = config.input_kind

    with torch.random.fork_rng(devices=[]):  # seeded init without touching the caller's global RNG
        torch.manual_seed(seed)
        model = FourMVQVAE(config)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    warmup_steps = min(warmup_steps, max(1, steps // 5))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, steps, warmup_steps))
    flip_generator = torch.Generator().manual_seed(seed)
    step, history = 0, []
    if checkpoint is not None:
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        scheduler.load_state_dict(checkpoint["scheduler"])
        flip_generator.set_state(checkpoint["flip_generator_state"])
        step, history = checkpoint["step"], checkpoint["history"]

    def save_checkpoint():
        atomic_torch_save(
            {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "flip_generator_state": flip_generator.get_state(),
                "step": step,
                "seed": seed,
                "config": config.to_dict(),
                "history": history,
            },
            checkpoint_path,
        )
        atomic_write_json({"step": step, "history": history}, out_dir / "trainer_state.json")

    steps_per_epoch = len(train_rows) // batch_size
    last_step = steps if stop_after is None else min(steps, stop_after)
    epoch_order, order_epoch = None, -1
    bar = tqdm(total=steps, initial=step, desc=f"train {config.modality}", disable=not progress)
    while step < last_step:
        epoch, position = divmod(step, steps_per_epoch)
        if epoch != order_epoch:
            epoch_order = torch.randperm(len(train_rows), generator=torch.Generator().manual_seed(seed + epoch))
            order_epoch = epoch
        indices = epoch_order[position * batch_size : (position + 1) * batch_size]
        batch = load_batch(train_rows, modality, indices, kind, config.image_size)
        flips = torch.rand(batch_size, generator=flip_generator) < 0.5
        if flip:
            batch = horizontal_flip(batch, flips, kind)

        output = model(batch)
        optimizer.zero_grad(set_to_none=True)
        output.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        step += 1
        bar.update(1)
        bar.set_postfix(loss=f"{output.loss.item():.4f}", usage=f"{float(output.codebook_usage):.3f}")

        if step % eval_every == 0 or step == steps:
            metrics = evaluate_model(model, eval_rows, modality, batch_size)
            history.append({"step": step, "train_loss": output.loss.item(), **metrics})
            bar.write(f"step {step}: " + ", ".join(f"{k} {v:.4g}" for k, v in history[-1].items() if k != "step"))
        if step % checkpoint_every == 0 or step == last_step:
            save_checkpoint()
    bar.close()

    if step >= steps:
        save_pretrained_atomic(model, out_dir)
        atomic_write_json(history[-1] if history else {}, out_dir / "eval_results.json")
    return {"step": step, "finished": step >= steps, "eval": history[-1] if history else None, "out": str(out_dir)}


def build_config(modality, train_rows, image_size, patch_size, vocab_size, input_kind, num_classes, preset) -> FourMVQVAEConfig:
    """Config for a fresh run; sizes, class count and depth statistics read from the data when not given."""
    if preset not in PRESETS:
        raise ValueError(f"Unknown preset {preset!r}; expected one of {sorted(PRESETS)}.")
    kind = input_kind or (modality if modality in INPUT_KINDS else "feature")
    first = arrays_to_batch(train_rows[:1][modality], kind, name=modality)
    options = dict(PRESETS[preset])
    if kind == "semseg":
        options["num_classes"] = num_classes or count_classes(train_rows, modality)
    if kind == "feature":
        options["num_channels"] = first.shape[1]
    if kind == "depth":
        options["depth_log_mean"], options["depth_log_std"] = depth_log_stats(train_rows, modality)
    if vocab_size is None:
        try:
            vocab_size = get_modality(f"tok_{modality}").vocab_size
        except ValueError:
            vocab_size = 1024
    return FourMVQVAEConfig(
        input_kind=kind,
        target=modality,
        image_size=image_size or first.shape[-1],
        patch_size=patch_size,
        vocab_size=vocab_size,
        **options,
    )
