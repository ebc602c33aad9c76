"""Score predictors against the exact truth of rendered scenes with the package's ``evaluate`` metrics.

One row per predictor, one group of columns per target:

=========  =====================================================================================
depth      AbsRel (lower is better), RMSE in metres (lower), delta < 1.25 (higher); all pixels,
           sky included (its true depth is ``SKY_DEPTH`` = 100 m)
normal     mean and median angular error in degrees (lower), % of pixels under 11.25 degrees (higher)
semseg     pixel accuracy, mean IoU over the classes present in truth or prediction (higher)
det        COCO AP at IoU 0.5 (pycocotools' AP50) over the "colour shape" labels in the truth (higher)
caption    corpus BLEU-4 by sacreBLEU, default signature, 0-1 scale (higher); F1 of the (colour,
           shape) objects mentioned (higher)
=========  =====================================================================================
"""

from __future__ import annotations

import time

from tqdm.auto import tqdm

from ..data.scenes import COLORS, SCENE_CLASSES, SHAPES
from .predictors import check_targets

# target -> [(column key, header, result key of the metric)]
COLUMNS = {
    "depth": [("depth_abs_rel", "depth AbsRel ↓", "abs_rel"), ("depth_rmse", "depth RMSE ↓", "rmse"),
              ("depth_delta1", "depth δ<1.25 ↑", "delta1")],
    "normal": [("normal_mean_angle", "normal mean° ↓", "mean_angle"), ("normal_median_angle", "normal median° ↓", "median_angle"),
               ("normal_pct_11_25", "normal %<11.25° ↑", "pct_within_11_25")],
    "semseg": [("semseg_pixel_accuracy", "semseg pixel acc ↑", "pixel_accuracy"), ("semseg_miou", "semseg mIoU ↑", "mean_iou")],
    "det": [("det_map50", "det mAP@0.5 ↑", "map")],
    "caption": [("caption_bleu4", "caption BLEU-4 ↑", "bleu"), ("caption_object_f1", "caption object F1 ↑", "f1")],
}


def new_metric(target: str):
    """A fresh in-memory ``evaluate`` metric for ``target``."""
    from ..training.metrics import (CaptionBLEU, CaptionObjectF1, DepthMetric, DetectionMAP, SegmentationMetric,
                                    SurfaceNormalMetric)

    if target == "depth":
        return DepthMetric(keep_in_memory=True)
    if target == "normal":
        return SurfaceNormalMetric(keep_in_memory=True)
    if target == "semseg":
        return SegmentationMetric(num_classes=len(SCENE_CLASSES), keep_in_memory=True)
    if target == "det":
        return DetectionMAP(iou_threshold=0.5, keep_in_memory=True)
    return {"bleu": CaptionBLEU(max_order=4, keep_in_memory=True),
            "object_f1": CaptionObjectF1(colours=list(COLORS), shapes=list(SHAPES), keep_in_memory=True)}


def references(scenes: list[dict], target: str) -> list:
    """The truth of ``target`` per scene, as the metric reads it."""
    if target == "det":
        return [[{"label": box["label"], "box": box["box"]} for box in scene["boxes"]] for scene in scenes]
    if target == "semseg":
        return [scene["semseg"].astype("int64") for scene in scenes]
    return [scene[target] for scene in scenes]


def score_predictions(predictions_by_target: dict[str, list], scenes: list[dict]) -> dict[str, float]:
    """``{target: one prediction per scene}`` -> ``{column key: value}`` (keys of ``COLUMNS``)."""
    scores = {}
    for target, predictions in predictions_by_target.items():
        metric = new_metric(target)
        truth = references(scenes, target)
        if target == "caption":
            result = {**metric["bleu"].compute(predictions=predictions, references=truth),
                      **metric["object_f1"].compute(predictions=predictions, references=truth)}
        else:
            result = metric.compute(predictions=predictions, references=truth)
        for key, _, result_key in COLUMNS[target]:
            scores[key] = float(result[result_key])
    return scores


def evaluate_predictor(predictor, scenes: list[dict], targets=None, batch_size: int = 16) -> dict:
    """Run ``predictor`` on ``scenes`` in batches for each target and score it.

    Returns ``{"name", "targets", "scores": {column key: value}, "seconds": {target: wall time}}``.
    """
    targets = check_targets(predictor.targets if targets is None else targets)
    if not scenes:
        raise ValueError("evaluate_predictor: no scenes")
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    predictions, seconds = {}, {}
    for target in targets:
        start = time.perf_counter()
        predictions[target] = []
        for first in tqdm(range(0, len(scenes), batch_size), desc=f"{predictor.name}: {target}", unit="batch"):
            batch = scenes[first:first + batch_size]
            batch_predictions = predictor.predict(batch, target)
            if len(batch_predictions) != len(batch):
                raise ValueError(f"{predictor.name}: {len(batch_predictions)} {target} predictions for {len(batch)} scenes")
            predictions[target].extend(batch_predictions)
        seconds[target] = time.perf_counter() - start
    return {"name": predictor.name, "targets": list(targets), "scores": score_predictions(predictions, scenes),
            "seconds": seconds}


def markdown_table(rows: list[dict], targets) -> str:
    """A markdown table: one line per row, the columns of ``targets``; "–" where a row lacks a target."""
    targets = check_targets(targets)
    columns = [(key, header) for target in targets for key, header, _ in COLUMNS[target]]
    lines = ["| model | " + " | ".join(header for _, header in columns) + " |",
             "|---|" + "---:|" * len(columns)]
    for row in rows:
        cells = []
        for key, _ in columns:
            value = row["scores"].get(key)
            cells.append("–" if value is None else format_score(key, value))
        lines.append(f"| {row['name']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def format_score(key: str, value: float) -> str:
    """One table cell: normal angles in degrees with one decimal, every other score with three."""
    if key.startswith("normal_"):
        return f"{value:.1f}"
    return f"{value:.3f}"
