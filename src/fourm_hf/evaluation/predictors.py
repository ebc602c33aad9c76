"""Predictors: a batch of scenes -> one prediction per scene for one target.

Every predictor has a ``name``, the ``targets`` it predicts and ``predict(scenes, target)``. A scene
is a ``render_scene`` dict; the 4M predictors only look at its ``rgb``, the references (tokenizer
ceiling, truth) at the true maps. Predictions are in the form the scoring metrics read:

- ``depth``:   float32 (S, S) metres
- ``normal``:  float32 (S, S, 3) camera-frame normals (any length)
- ``semseg``:  int64 (S, S) ids into ``SCENE_CLASSES``
- ``det``:     ``[{"label": "red cube", "score": float, "box": [xmin, ymin, xmax, ymax]}]`` normalised
- ``caption``: str

Predictors:

- :class:`PipelinePredictor`: the any-to-any pipeline, RGB -> one target at a time with the
  pipeline's default decoding schedule (also used for single-task specialists).
- :class:`TokenizerCeiling`: encode the TRUE map with the processor's VQ-VAE and decode it (caption
  and boxes: tokenize and detokenize the truth): the best any 4M model with these tokenizers can do.
- :class:`TrivialBaseline`: training statistics only (per-pixel mean depth and normal, per-pixel most
  frequent class), an empty caption and no boxes.
- :class:`TruthPredictor`: the truth itself (perfect scores; checks that the scoring is wired right).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm
from transformers import pipeline

from ..data.scenes import SCENE_CLASSES
from ..modalities import token_modality
from ..processing.image_processing_fourm import FourMImageProcessor
from .heldout import check_not_heldout

TARGETS = ("depth", "normal", "semseg", "det", "caption")
MODEL_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
"""The numeric formats a pipeline predictor can load its model in (``--dtype``)."""
"""Targets scored from RGB, in table order."""

DENSE_TARGETS = ("depth", "normal", "semseg")
TARGET_MODALITIES = {target: token_modality(target) for target in TARGETS}
"""Public target name -> the 4M modality that carries it (from the modality registry)."""

DEFAULT_BOX_SCORE = 1.0  # boxes decoded without a score (tokenized truth, a pipeline without scores) rank equally


def check_targets(targets) -> tuple[str, ...]:
    """Validate a list of target names; returns them as a tuple in the order given."""
    if isinstance(targets, str):
        targets = [targets]
    targets = tuple(targets)
    if not targets:
        raise ValueError(f"targets: empty; expected some of {list(TARGETS)}")
    unknown = [target for target in targets if target not in TARGETS]
    if unknown:
        raise ValueError(f"targets: unknown target(s) {unknown}; expected some of {list(TARGETS)}")
    if len(set(targets)) != len(targets):
        raise ValueError(f"targets: {list(targets)} names a target twice")
    return targets


def _with_scores(boxes: list[dict]) -> list[dict]:
    """Boxes as the detection metric reads them; a missing (None) score becomes DEFAULT_BOX_SCORE."""
    return [{"label": str(box["label"]), "box": [float(v) for v in box["box"]],
             "score": DEFAULT_BOX_SCORE if box.get("score") is None else float(box["score"])} for box in boxes]


def _check_target(predictor, target: str) -> None:
    if target not in predictor.targets:
        raise ValueError(f"{predictor.name}: cannot predict target {target!r}; it predicts {list(predictor.targets)}")


# ----------------------------------------------------------------------------------------------------
# 4M through the pipeline
# ----------------------------------------------------------------------------------------------------


class PipelinePredictor:
    """RGB -> each target with ``pipeline("any-to-any")``, one target at a time, default schedules.

    Args:
        checkpoint: a folder holding a FourM model and its FourMProcessor side by side, or an
            already built pipeline.
        targets: the targets to predict (default: all of ``TARGETS``).
        name: row name in the table.
        seed: generation seed, the same for every call (results do not depend on batching order).
        batch_size: the pipeline's batch size.
        device: passed to ``pipeline`` when building it from a folder.
        generate_kwargs: extra decoding options for every call (``num_steps``, ``temperature``, ...).
        processor: a FourMProcessor (or its folder) when ``checkpoint`` is a folder holding only the model.
        dtype: ``"float32"`` (default) or ``"bfloat16"``: the model's weights, KV cache and activations
            (``pipeline(..., dtype=...)``; the processor's tokenizers keep their own dtype).
        int8: quantise the float32 model's decoder, heads and encoder to dynamic int8 (CPU only;
            ``fourm_hf.modeling.quantization.quantize_int8``).
    """

    def __init__(self, checkpoint, targets=TARGETS, name: str = "4M", seed: int = 0, batch_size: int = 16,
                 device=None, generate_kwargs: dict | None = None, processor=None, dtype: str = "float32",
                 int8: bool = False):
        self.name = name
        self.targets = check_targets(targets)
        self.seed = int(seed)
        self.batch_size = int(batch_size)
        self.generate_kwargs = dict(generate_kwargs or {})
        check_model_format(dtype, int8)
        if isinstance(checkpoint, (str, Path)):
            options = {} if device is None else {"device": device}
            if processor is not None:
                options["processor"] = processor
            if dtype != "float32":
                options["dtype"] = MODEL_DTYPES[dtype]
            self.pipe = pipeline("any-to-any", model=str(checkpoint), **options)
        else:
            self.pipe = checkpoint
        if int8:
            from ..modeling.quantization import QUANTIZABLE_PARTS, quantize_int8

            quantize_int8(self.pipe.model, parts=QUANTIZABLE_PARTS)

    def predict(self, scenes: list[dict], target: str) -> list:
        _check_target(self, target)
        images = [Image.fromarray(scene["rgb"]) for scene in scenes]
        outputs = self.pipe(images, target_modalities=[target], seed=self.seed, batch_size=self.batch_size,
                            **self.generate_kwargs)
        if len(outputs) != len(scenes):
            raise ValueError(f"{self.name}: the pipeline returned {len(outputs)} outputs for {len(scenes)} images")
        return [pipeline_prediction(output, target) for output in outputs]


def check_model_format(dtype: str, int8: bool) -> None:
    """``dtype`` names one of :data:`MODEL_DTYPES`; ``int8`` starts from float32 weights."""
    if dtype not in MODEL_DTYPES:
        raise ValueError(f"--dtype must be one of {sorted(MODEL_DTYPES)}, got {dtype!r}")
    if int8 and dtype != "float32":
        raise ValueError(f"--int8 quantises float32 weights; it cannot be combined with --dtype {dtype}")


def pipeline_prediction(output: dict, target: str):
    """One pipeline output dict -> the prediction for ``target`` in scoring form (module docstring)."""
    if not isinstance(output, dict) or target not in output:
        keys = sorted(output) if isinstance(output, dict) else type(output).__name__
        raise ValueError(f"pipeline output: no {target!r} entry (got {keys})")
    value = output[target]
    if target == "caption":
        if not isinstance(value, str):
            raise TypeError(f"pipeline output[{target!r}]: expected a str, got {type(value).__name__}")
        return value
    if target == "det":
        boxes = value["boxes"] if isinstance(value, dict) else value
        return _with_scores(boxes)
    array = value["array"] if isinstance(value, dict) else value
    array = np.asarray(array)
    if target == "semseg":
        return array.astype(np.int64)
    return array.astype(np.float32)


# ----------------------------------------------------------------------------------------------------
# References: tokenizer ceiling, truth, trivial baseline
# ----------------------------------------------------------------------------------------------------


class TokenizerCeiling:
    """The true map encoded by the processor's VQ-VAE and decoded again; caption and boxes tokenized
    and detokenized. Scenes must be rendered at the processor's ``image_size`` (no crop, no resize).

    Args:
        processor: a :class:`FourMProcessor`.
        targets: default: every target the processor can round-trip (dense maps need a VQ-VAE).
    """

    def __init__(self, processor, targets=None, name: str = "tokenizer ceiling"):
        self.name = name
        self.processor = processor
        available = tuple(t for t in TARGETS if t not in DENSE_TARGETS or self._vqvae_name(t) is not None)
        self.targets = available if targets is None else check_targets(targets)
        missing = [t for t in self.targets if t not in available]
        if missing:
            raise ValueError(
                f"{name}: the processor has no VQ-VAE for {missing} (loaded: {sorted(processor.vqvaes)}); "
                "cannot compute the tokenizer ceiling of those targets"
            )

    def _vqvae_name(self, target: str) -> str | None:
        names = sorted(self.processor.vqvaes_for(target))
        if TARGET_MODALITIES[target] in names:
            return TARGET_MODALITIES[target]
        return names[0] if names else None

    def predict(self, scenes: list[dict], target: str) -> list:
        _check_target(self, target)
        processor = self.processor
        if target == "caption":
            ids = [processor.tokenizer.encode_for_model(scene["caption"], "caption") for scene in scenes]
            return processor.decode({"caption": _pad_rows(ids)})["caption"]
        if target == "det":
            ids = [processor.tokenizer.encode_boxes(scene["boxes"], "det") for scene in scenes]
            return [_with_scores(boxes) for boxes in processor.decode({"det": _pad_rows(ids)})["det"]["boxes"]]
        size = processor.image_size
        for scene in scenes:
            if scene[target].shape[:2] != (size, size):
                raise ValueError(
                    f"{self.name}: {target} maps are {scene[target].shape[:2]}, expected {size}x{size} "
                    "(render the scenes at the processor's image_size)"
                )
        maps = [scene[target] for scene in scenes]
        tokens = processor(**{target: maps}, crop="center", flip=False)
        name = self._vqvae_name(target)
        arrays = processor.decode_image_tokens(name, tokens[name])["array"]
        return [pipeline_prediction({target: array}, target) for array in arrays]


def _pad_rows(rows: list[list[int]]) -> torch.Tensor:
    """Right-pad id lists with [PAD] = 0 into a (B, L) int64 tensor."""
    length = max(len(row) for row in rows)
    return torch.tensor([row + [0] * (length - len(row)) for row in rows], dtype=torch.long)


class TruthPredictor:
    """Returns the true maps, boxes (score 1) and caption: perfect scores by construction."""

    def __init__(self, targets=TARGETS, name: str = "truth"):
        self.name = name
        self.targets = check_targets(targets)

    def predict(self, scenes: list[dict], target: str) -> list:
        _check_target(self, target)
        if target == "det":
            return [_with_scores(scene["boxes"]) for scene in scenes]
        if target == "caption":
            return [scene["caption"] for scene in scenes]
        return [pipeline_prediction({target: scene[target]}, target) for scene in scenes]


@dataclass
class TrainStatistics:
    """Per-pixel statistics of a set of training scenes at one size S.

    Attributes:
        mean_depth: float32 (S, S) metres (sky counts as ``SKY_DEPTH``).
        mean_normal: float32 (S, S, 3), the mean of unit normals (not re-normalised).
        class_counts: int64 (S, S, C) how often each class covers each pixel.
        num_scenes: how many scenes were averaged.
    """

    mean_depth: np.ndarray
    mean_normal: np.ndarray
    class_counts: np.ndarray
    num_scenes: int

    @property
    def most_frequent_class(self) -> np.ndarray:
        """int64 (S, S): the most frequent class per pixel (the lowest id on ties)."""
        return np.argmax(self.class_counts, axis=-1).astype(np.int64)

    @classmethod
    def from_maps(cls, depths, normals, semsegs) -> "TrainStatistics":
        """From iterables of (S, S) depth, (S, S, 3) normal and (S, S) class-id maps of equal length."""
        depth_sum = normal_sum = class_counts = None
        count = 0
        for index, (depth, normal, semseg) in enumerate(zip(depths, normals, semsegs, strict=True)):
            depth = np.asarray(depth, dtype=np.float64)
            normal = np.asarray(normal, dtype=np.float64)
            semseg = np.asarray(semseg, dtype=np.int64)
            if depth_sum is None:
                size = depth.shape
                depth_sum, normal_sum = np.zeros(size), np.zeros(size + (3,))
                class_counts = np.zeros(size + (len(SCENE_CLASSES),), dtype=np.int64)
            if depth.shape != depth_sum.shape or normal.shape != normal_sum.shape or semseg.shape != depth_sum.shape:
                raise ValueError(
                    f"training scene {index}: depth {depth.shape}, normal {normal.shape}, semseg {semseg.shape}; "
                    f"expected {depth_sum.shape}, {normal_sum.shape}, {depth_sum.shape} like the first scene"
                )
            if semseg.min() < 0 or semseg.max() >= len(SCENE_CLASSES):
                raise ValueError(f"training scene {index}: semseg ids outside [0, {len(SCENE_CLASSES)})")
            depth_sum += depth
            normal_sum += normal
            for class_id in range(len(SCENE_CLASSES)):
                class_counts[..., class_id] += semseg == class_id
            count += 1
        if count == 0:
            raise ValueError("training statistics: no scenes given")
        return cls((depth_sum / count).astype(np.float32), (normal_sum / count).astype(np.float32), class_counts, count)

    @classmethod
    def from_scenes(cls, scenes: list[dict]) -> "TrainStatistics":
        """From ``render_scene`` dicts."""
        return cls.from_maps((s["depth"] for s in scenes), (s["normal"] for s in scenes), (s["semseg"] for s in scenes))

    @classmethod
    def from_dataset(cls, dataset_dir, size: int, max_rows: int | None = 2000, batch_size: int = 64) -> "TrainStatistics":
        """From a scene dataset folder (``make-scenes`` output): its first ``max_rows`` rows, every map
        centre-cropped and resized to ``size`` x ``size`` the way the model's image processor does."""
        import datasets


        check_not_heldout(dataset_dir)
        dataset = datasets.load_from_disk(str(dataset_dir))
        if isinstance(dataset, datasets.DatasetDict):
            split = "train" if "train" in dataset else next(iter(dataset))
            dataset = dataset[split]
        missing = [column for column in ("depth", "normal", "semseg") if column not in dataset.column_names]
        if missing:
            raise ValueError(f"--train-stats {dataset_dir}: the dataset has no column(s) {missing}; expected a scene dataset")
        num_rows = len(dataset) if max_rows is None else min(len(dataset), int(max_rows))
        dataset = dataset.select(range(num_rows)).select_columns(["depth", "normal", "semseg"]).with_format("numpy")
        image_processor = FourMImageProcessor(image_size=size, num_semseg_classes=len(SCENE_CLASSES))

        def batches():
            for start in tqdm(range(0, num_rows, batch_size), desc="training statistics", unit="batch"):
                rows = dataset[start:start + batch_size]
                processed = image_processor(depth=list(rows["depth"]), normal=list(rows["normal"]),
                                            semseg=list(rows["semseg"]), crop="center", flip=False)
                for depth, normal, semseg in zip(processed["depth"], processed["normal"], processed["semseg"]):
                    yield depth[0], np.moveaxis(normal, 0, -1), semseg

        depths, normals, semsegs = [], [], []
        for depth, normal, semseg in batches():
            depths.append(depth)
            normals.append(normal)
            semsegs.append(semseg)
        return cls.from_maps(depths, normals, semsegs)


class TrivialBaseline:
    """The same prediction for every image: training mean depth and normal per pixel, the most
    frequent class per pixel, an empty caption and no boxes."""

    def __init__(self, statistics: TrainStatistics, targets=TARGETS, name: str = "trivial baseline"):
        self.name = name
        self.statistics = statistics
        self.targets = check_targets(targets)

    def predict(self, scenes: list[dict], target: str) -> list:
        _check_target(self, target)
        if target == "caption":
            return ["" for _ in scenes]
        if target == "det":
            return [[] for _ in scenes]
        constant = {"depth": self.statistics.mean_depth, "normal": self.statistics.mean_normal,
                    "semseg": self.statistics.most_frequent_class}[target]
        for scene in scenes:
            if scene[target].shape != constant.shape:
                raise ValueError(
                    f"{self.name}: {target} maps are {scene[target].shape} but the training statistics are "
                    f"{constant.shape}; compute them at the evaluation size"
                )
        return [constant.copy() for _ in scenes]
