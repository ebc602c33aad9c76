"""RGB -> caption and boxes with and without a lone ``[S_1]`` in the encoder for a sequence generated
from nothing, on held-out scenes, in the same run.

The sampler leaves such a sequence out of the encoder (``pack_encoder_inputs``), as the masking collator
trains a sequence with no input budget. The old behaviour (a lone ``[S_1]`` at position 0) is restored
here by wrapping ``pack_encoder_inputs`` (``sentinel_when_empty=True``, the option behind
``conventions={"sequence_start": "sentinel"}``), so both are scored on the same checkpoint and scenes.

    python benchmarks/eval_sequence_start.py [--checkpoint DIR] [--num-scenes 64]
"""

from __future__ import annotations

import argparse
import json

import torch

import fourm_hf.modeling.generation.sequence_decoding as generation  # the module that calls pack_encoder_inputs
from fourm_hf.checkpoints import bundled_checkpoint
from fourm_hf.evaluation.heldout import heldout_scenes
from fourm_hf.evaluation.predictors import PipelinePredictor
from fourm_hf.evaluation.scoring import evaluate_predictor

CURRENT = generation.pack_encoder_inputs


def with_lone_start_sentinel(state, visible, open_sequence=None, sentinel_when_empty=False):
    """The old packing (and the reference's): an open sequence with no prefix also gets ``[S_1]`` at
    position 0 (``conventions={"sequence_start": "sentinel"}`` does this for a whole schedule)."""
    return CURRENT(state, visible, open_sequence, True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", default=None, help="FourM model + processor folder (default: the bundled one)")
    parser.add_argument("--num-scenes", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    checkpoint = args.checkpoint or bundled_checkpoint()
    predictor = PipelinePredictor(checkpoint, ["det", "caption"])
    scenes = heldout_scenes(args.num_scenes, predictor.pipe.processor.image_size)
    for label, packing in (("lone [S_1] (old)", with_lone_start_sentinel), ("absent (current)", CURRENT)):
        generation.pack_encoder_inputs = packing
        scores = evaluate_predictor(predictor, scenes)["scores"]
        print(json.dumps({"encoder gets": label, **{k: round(v, 3) for k, v in scores.items()}}), flush=True)
    generation.pack_encoder_inputs = CURRENT


if __name__ == "__main__":
    main()
