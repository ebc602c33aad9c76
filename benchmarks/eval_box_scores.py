"""Detection AP of the bundled checkpoint with real box confidences against a constant score, same boxes.

The pipeline scores each generated box by the mean probability of its tokens
(``text/box_scores.py``). COCO AP ranks detections by score, so this scores the very same
generated boxes twice in one run: with those confidences, and with every score set to 1.0 (what the
pipeline returned before boxes had confidences).

    python benchmarks/eval_box_scores.py [--checkpoint DIR] [--num-scenes 200] [--batch-size 16]
"""

from __future__ import annotations

import argparse
import json

import torch

from fourm_hf.checkpoints import bundled_checkpoint
from fourm_hf.evaluation.heldout import heldout_scenes
from fourm_hf.evaluation.predictors import PipelinePredictor
from fourm_hf.evaluation.scoring import score_predictions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", default=None, help="FourM model + processor folder (default: the bundled one)")
    parser.add_argument("--num-scenes", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    from transformers import pipeline

    pipe = pipeline("any-to-any", model=args.checkpoint or bundled_checkpoint())
    scenes = heldout_scenes(args.num_scenes, pipe.processor.image_size)
    predictor = PipelinePredictor(pipe, ["det"], batch_size=args.batch_size, seed=args.seed)
    boxes = predictor.predict(scenes, "det")
    constant = [[{**box, "score": 1.0} for box in sample] for sample in boxes]
    scores = [box["score"] for sample in boxes for box in sample]
    result = {
        "num_scenes": len(scenes),
        "num_boxes": len(scores),
        "score_min": min(scores, default=None),
        "score_mean": sum(scores) / len(scores) if scores else None,
        "score_max": max(scores, default=None),
        "det_map50_real_scores": score_predictions({"det": boxes}, scenes)["det_map50"],
        "det_map50_constant_scores": score_predictions({"det": constant}, scenes)["det_map50"],
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
