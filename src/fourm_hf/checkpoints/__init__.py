"""The checkpoint that ships inside the package.

``fourm-scenes64/`` is a small 4M trained on the embedded scene corpus (64 px); the README's demo,
``fourm-hf demo`` and the tests use it. ``examples/scenes64/reproduce.sh`` rebuilds it from nothing,
its last step being (``fourm_hf.hub.assemble_checkpoint``)::

    fourm-hf assemble-checkpoint --model runs/scenes64/fourm_stage2 --processor runs/scenes64/processor \\
        --evaluation runs/scenes64/eval.json --bundled --no-remote-code --out src/fourm_hf/checkpoints/fourm-scenes64

which puts the model, its processor (text tokenizer, VQ-VAEs) and a model card (with the evaluation
table) into one folder that ``AutoModel``, ``AutoProcessor`` and
``pipeline("any-to-any")`` load.

The bundled folder holds no code: it ships inside the package, so whoever loads it has the package
(``--no-remote-code``). A folder saved from it (``save_pretrained``) still gets the flat model and
processor code, as any saved folder does; and as its configs keep their ``auto_map``,
``fourm-hf push-to-hub --checkpoint`` adds the code that ``auto_map`` names to the uploaded copy
(``fourm_hf.hub.add_remote_code``).
"""

from __future__ import annotations

from pathlib import Path

BUNDLED_CHECKPOINT = Path(__file__).resolve().parent / "fourm-scenes64"
"""Folder of the bundled checkpoint (model + processor + model card)."""

BUNDLED_TRAINING_DATA = (
    "The embedded scene corpus of `fourm-hf`: procedurally rendered 64x64 scenes (`fourm-hf make-scenes --size 64 "
    "--seed 0`) of 1-4 coloured spheres, cubes, cylinders and cones on a floor, with exact depth, surface normals, "
    "semantic segmentation, boxes and captions. Trained on a 2-core CPU in four stages of batch 32: "
    "`examples/scenes64/fourm_scenes64.yaml` (3000 steps), `fourm_scenes64_stage2.yaml` (6000 more) and "
    "`fourm_scenes64_stage3.yaml` (6500 more, caption-biased mixture) on 10,000 scenes, then "
    "`fourm_scenes64_stage4.yaml` (6500 more) on 40,000 scenes (the first 10,000 the same); "
    "`examples/scenes64/reproduce.sh` rebuilds everything, tokenizers and evaluation included."
)


def bundled_checkpoint() -> str:
    """The bundled checkpoint folder as a string, checked to exist."""
    if not (BUNDLED_CHECKPOINT / "config.json").is_file():
        raise FileNotFoundError(
            f"the bundled checkpoint is missing at {BUNDLED_CHECKPOINT}; reinstall fourm-hf, or rebuild it "
            "with examples/scenes64/reproduce.sh"
        )
    return str(BUNDLED_CHECKPOINT)
