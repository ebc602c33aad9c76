"""``fourm-hf demo``: the bundled 4M turns scenes and photographs into every modality it knows.

    fourm-hf demo [--checkpoint DIR] [--out demo] [--num-scenes 4] [--photos astronaut chelsea ...]
        [--prompts 2] [--seed 0]
    fourm-hf demo --web [--checkpoint DIR_OR_REPO_ID] [--port N] [--host 127.0.0.1]


For each of ``--num-scenes`` held-out scenes (never trained on; rendered in memory with exact
labels) and each real photograph shipped in scikit-image (``data/photos.py``), the any-to-any
pipeline generates depth, normals, segmentation, a caption and boxes from the RGB
image, chained as 4M chains them, and one PNG grid per input shows the input beside every output.
``--prompts`` held-out captions are turned into scenes (caption -> RGB). ``report.md`` (and
``report.json``) score every scene against its exact truth with the package's metrics.

``--web`` serves the same model as a Gradio app in the browser instead (``web_app.py``; the optional
extra ``pip install -e ".[web]"``; Gradio is imported only then). The command itself is
``fourm_hf.commands.demo``; this module is the library part (:func:`run_demo`).

The bundled checkpoint (``fourm_hf.checkpoints.BUNDLED_CHECKPOINT``) was trained only on rendered scenes at
64 px; the photographs show how far that carries, not what a 4M trained on photographs does.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
from PIL import Image
from transformers import pipeline

from ..checkpoints import bundled_checkpoint
from ..data.photos import PHOTO_CAPTIONS, load_photos
from ..evaluation.heldout import HELDOUT_DATASET_SEED, heldout_scenes
from ..evaluation.predictors import pipeline_prediction
from ..output_paths import write_atomic
from ..evaluation.scoring import COLUMNS, format_score, score_predictions
from ..pipelines.grid import save_grid
from ..processing.visualization import centre_square
from .web_session import semseg_class_names

DEFAULT_NUM_SCENES = 4
DEFAULT_PROMPTS = 2
TILE_SIZE = 192  # px per grid tile: the 64 px outputs scaled up 3x
SCORED_TARGETS = ("depth", "normal", "semseg", "det", "caption")


def run_demo(checkpoint=None, out="demo", num_scenes: int = DEFAULT_NUM_SCENES, photos=None,
             prompts: int = DEFAULT_PROMPTS, seed: int = 0, progress: bool = True) -> dict:
    """Run the demo and write ``out/*.png``, ``out/report.md`` and ``out/report.json``.

    Args:
        checkpoint: a folder with a FourM model and its processor (default: the bundled one).
        out: output folder (created; files in it are replaced atomically).
        num_scenes: held-out scenes to run and score (0 = none).
        photos: names from ``PHOTO_CAPTIONS`` (default: all of them; ``[]`` = none).
        prompts: held-out captions turned into images (0 = none).
        seed: generation seed of every call.
    Returns: the report as a dict (what ``report.json`` holds).
    """
    num_scenes, prompts = _count(num_scenes, "--num-scenes"), _count(prompts, "--prompts")
    photo_names = list(PHOTO_CAPTIONS) if photos is None else list(photos)
    unknown = [name for name in photo_names if name not in PHOTO_CAPTIONS]
    if unknown:
        raise ValueError(f"--photos: unknown photo(s) {unknown}; expected some of {list(PHOTO_CAPTIONS)}")
    if prompts > num_scenes:
        raise ValueError(f"--prompts {prompts} exceeds --num-scenes {num_scenes} (the prompts are the scenes' captions)")
    if not (num_scenes or photo_names):
        raise ValueError("nothing to do: --num-scenes 0 and no --photos")
    checkpoint = bundled_checkpoint() if checkpoint is None else str(checkpoint)
    if Path(checkpoint).exists() and not (Path(checkpoint) / "config.json").is_file():
        raise ValueError(f"--checkpoint {checkpoint}: no config.json; expected a folder with a FourM model and its processor")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)

    start = time.perf_counter()
    pipe = pipeline("any-to-any", model=checkpoint)
    size = pipe.processor.image_size
    scenes = heldout_scenes(num_scenes, size) if num_scenes else []
    semseg_vqvae = pipe.processor.vqvaes.get("tok_semseg")
    class_names = semseg_class_names(semseg_vqvae.config.num_classes if semseg_vqvae is not None else 0)  # the legend
    report = {"checkpoint": checkpoint, "image_size": size, "seed": seed, "heldout_dataset_seed": HELDOUT_DATASET_SEED,
              "targets": [name for name in pipe.available_targets() if name != "rgb"],  # rgb is the input
              "scenes": [], "photos": [], "prompts": []}

    for index, scene in enumerate(scenes):
        output = pipe(Image.fromarray(scene["rgb"]), seed=seed, progress=progress)
        grid = save_grid({"rgb": scene["rgb"]}, output, out / f"scene_{index:02d}.png", TILE_SIZE,
                         class_names)
        report["scenes"].append({"index": index, "grid": grid.name, "caption_truth": scene["caption"],
                                 "caption": output.get("caption"), "scores": score_scene(output, scene)})
    photos_by_name = {photo["name"]: photo for photo in load_photos()} if photo_names else {}
    for name in photo_names:
        photo = photos_by_name[name]
        output = pipe(photo["image"], seed=seed, progress=progress)
        grid = save_grid(centre_square(photo["image"]), output, out / f"photo_{name}.png", TILE_SIZE,
                         class_names)
        report["photos"].append({"name": name, "grid": grid.name, "caption_truth": photo["caption"],
                                 "caption": output.get("caption")})
    for index, scene in enumerate(scenes[:prompts]):
        output = pipe(text=scene["caption"], target_modalities=["rgb"], seed=seed, progress=progress)
        recaption = pipe(output["rgb"]["image"], target_modalities=["caption"], seed=seed)["caption"]
        grid = save_grid({"caption": scene["caption"]}, {**output, "caption": recaption},
                         out / f"prompt_{index:02d}.png", TILE_SIZE, class_names)
        report["prompts"].append({"prompt": scene["caption"], "grid": grid.name, "recaption": recaption})

    report["mean_scores"] = mean_scores([scene["scores"] for scene in report["scenes"]])
    report["seconds"] = round(time.perf_counter() - start, 1)
    write_atomic(out / "report.json", json.dumps(report, indent=2) + "\n")
    write_atomic(out / "report.md", format_demo_report(report))
    return report


def score_scene(output: dict, scene: dict) -> dict:
    """Scores of one pipeline output against one scene's exact truth (``evaluation/scoring.py`` columns)."""
    predictions = {target: [pipeline_prediction(output, target)] for target in SCORED_TARGETS if target in output}
    return score_predictions(predictions, [scene])


def mean_scores(rows: list[dict]) -> dict:
    """Column-wise mean of per-scene score dicts (only the columns every row has)."""
    if not rows:
        return {}
    keys = [key for key in rows[0] if all(key in row for row in rows)]
    return {key: float(np.mean([row[key] for row in rows])) for key in keys}


def format_demo_report(report: dict) -> str:
    """``report.md``: per-scene scores, captions, photos and prompts, with links to the grids."""
    columns = [(key, header) for target in SCORED_TARGETS for key, header, _ in COLUMNS[target]
               if key in report["mean_scores"]]
    lines = ["# fourm-hf demo", "", f"Checkpoint `{report['checkpoint']}` ({report['image_size']} px), "
             f"generation seed {report['seed']}, {report['seconds']} s in all.", ""]
    if report["scenes"]:
        lines += [f"## Held-out scenes (RGB -> {', '.join(report['targets'])})", "",
                  "Scores against the exact rendered truth (one scene each; `fourm-hf evaluate` scores 200).", "",
                  "| scene | " + " | ".join(header for _, header in columns) + " |",
                  "|---|" + "---:|" * len(columns)]
        for scene in report["scenes"]:
            cells = [format_score(key, scene["scores"][key]) for key, _ in columns]
            lines.append(f"| [{scene['index']}]({scene['grid']}) | " + " | ".join(cells) + " |")
        lines.append("| mean | " + " | ".join(format_score(key, report["mean_scores"][key]) for key, _ in columns) + " |")
        lines += ["", "| scene | true caption | generated caption |", "|---|---|---|"]
        lines += [f"| {scene['index']} | {scene['caption_truth']} | {scene['caption']} |" for scene in report["scenes"]]
        lines.append("")
    if report["photos"]:
        lines += ["## Photographs (scikit-image; the model has only seen rendered scenes)", "",
                  "| photo | generated caption |", "|---|---|"]
        lines += [f"| [{photo['name']}]({photo['grid']}) | {photo['caption']} |" for photo in report["photos"]]
        lines.append("")
    if report["prompts"]:
        lines += ["## Caption -> RGB (the generated scene captioned again by the model)", "",
                  "| prompt | re-caption |", "|---|---|"]
        lines += [f"| [{prompt['prompt']}]({prompt['grid']}) | {prompt['recaption']} |" for prompt in report["prompts"]]
        lines.append("")
    return "\n".join(lines)


def _count(value, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{field} must be an integer >= 0, got {value!r}")
    return value
