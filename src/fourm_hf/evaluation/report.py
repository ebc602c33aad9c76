"""``fourm-hf evaluate``: a 4M checkpoint on held-out scenes beside its references, in one table.

    fourm-hf evaluate --checkpoint DIR [--num-scenes 200] [--batch-size 16] [--targets depth semseg ...]
        [--compare NAME=DIR] [--specialist depth=DIR --specialist semseg=DIR] [--train-stats DATASET_DIR]
        [--caption-prompts 20] [--dtype float32|bfloat16] [--int8] [--out eval.json] [--markdown table.md]

Rows: ``4M`` (the any-to-any pipeline, RGB -> each target with its default schedule), ``tokenizer
ceiling`` (the true maps through the checkpoint's own VQ-VAEs / text tokenizer), ``trivial baseline``
(per-pixel training means / most frequent class, empty caption, no boxes; statistics from
``--train-stats`` or from scenes rendered with the default training seed) and one row per
``--specialist`` (a FourM checkpoint of the same format trained for one target, run through the same
pipeline on that target only); ``--compare NAME=DIR`` adds a row for another 4M checkpoint, scored
like ``--checkpoint`` (e.g. the same model at the specialists' compute); ``--carry-row FILE=NAME`` copies
row NAME from an earlier ``--out`` JSON of the same held-out scenes (a specialist whose weights did not
change need not be run again; the row's name says where it came from). ``--dtype`` / ``--int8`` load every
4M row's model in that format (the references do not run a model). Columns: see ``scoring.py``.
Below the table: caption -> RGB (see ``caption_to_rgb.py``). The held-out scenes are rendered in
memory at the processor's image size (``heldout.py``). The JSON (``--out``) and markdown (``--markdown``) files are written atomically.
"""

from __future__ import annotations

import datetime
import json
from pathlib import Path

from ..configuration_fourm import FourMConfig
from ..processing.processing_fourm import FourMProcessor
from .caption_to_rgb import caption_to_rgb_check
from .heldout import HELDOUT_DATASET_SEED, TRAIN_STATS_DATASET_SEED, heldout_scenes, render_scene_set
from .predictors import (
    TARGET_MODALITIES,
    TARGETS,
    PipelinePredictor,
    TokenizerCeiling,
    TrainStatistics,
    TrivialBaseline,
    check_model_format,
    check_targets,
)
from .scoring import evaluate_predictor, markdown_table

DEFAULT_CAPTION_PROMPTS = 20
PROCESSOR_FILE = "processor_config.json"


def check_checkpoint(folder, targets, what: str = "--checkpoint", processor=None) -> str | None:
    """Raise ``ValueError`` unless ``folder`` holds a FourM model that generates ``targets`` and a
    FourMProcessor is found: in ``folder`` itself, else ``processor`` (a folder). Returns the processor
    folder to pass to the pipeline (``None``: the checkpoint's own)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"{what} {folder}: not a directory")
    if not (folder / "config.json").is_file():
        raise ValueError(f"{what} {folder}: no config.json; expected a folder holding a FourM model")
    processor_folder = None
    if not (folder / PROCESSOR_FILE).is_file():
        if processor is None:
            raise ValueError(
                f"{what} {folder}: no {PROCESSOR_FILE}; expected the model and its FourMProcessor in the same folder "
                "(processor.save_pretrained(folder)), or pass --processor DIR"
            )
        if not (Path(processor) / PROCESSOR_FILE).is_file():
            raise ValueError(f"--processor {processor}: no {PROCESSOR_FILE}; not a saved FourMProcessor")
        processor_folder = str(processor)
    config = FourMConfig.from_pretrained(str(folder))
    missing = [t for t in targets if TARGET_MODALITIES[t] not in config.output_modalities]
    if missing:
        raise ValueError(
            f"{what} {folder}: the model does not generate {missing} (its output modalities are "
            f"{list(config.output_modalities)})"
        )
    return processor_folder


def parse_comparisons(values) -> dict[str, str]:
    """``["4M (3000 steps)=DIR", ...]`` -> ``{"4M (3000 steps)": "DIR"}``: more 4M rows, scored on every target."""
    comparisons = {}
    for value in values or []:
        name, separator, folder = value.rpartition("=")
        if not separator or not name or not folder:
            raise ValueError(f"--compare {value!r}: expected NAME=DIR, e.g. '4M (3000 steps)=runs/fourm'")
        if name in comparisons or name in ("4M", "tokenizer ceiling", "trivial baseline"):
            raise ValueError(f"--compare: the row name {name!r} is taken")
        comparisons[name] = folder
    return comparisons


def parse_specialists(values) -> dict[str, str]:
    """``["depth=DIR", ...]`` -> ``{"depth": "DIR"}``; one specialist per target."""
    specialists = {}
    for value in values or []:
        target, separator, folder = value.partition("=")
        if not separator or not folder:
            raise ValueError(f"--specialist {value!r}: expected TARGET=DIR, e.g. depth=runs/depth-specialist")
        check_targets([target])
        if target in specialists:
            raise ValueError(f"--specialist: two specialists for {target!r}")
        specialists[target] = folder
    return specialists


def parse_carried_rows(values) -> list[tuple[str, str]]:
    """``["eval.json=specialist (depth)", ...]`` -> ``[("eval.json", "specialist (depth)"), ...]``."""
    carried = []
    for value in values or []:
        path, separator, name = value.partition("=")
        if not separator or not path or not name:
            raise ValueError(f"--carry-row {value!r}: expected FILE=ROW NAME, e.g. 'eval.json=specialist (depth)'")
        carried.append((path, name))
    return carried


def carried_rows(carried: list[tuple[str, str]], held_out: dict) -> list[dict]:
    """The rows ``carried`` names, read from earlier evaluation JSON files.

    ``held_out``: this run's ``num_scenes``, ``image_size``, ``heldout_dataset_seed`` and ``seed``; a file
    scored on other scenes (or with another generation seed) is refused, since its numbers would not be
    comparable. Each row's name gets `` (carried from <file>, <date>)``.
    """
    rows = []
    for path, name in carried:
        try:
            earlier = json.loads(Path(path).read_text())
        except (OSError, ValueError) as error:
            raise ValueError(f"--carry-row {path}: cannot read an evaluation JSON ({error})") from error
        if not isinstance(earlier, dict):
            raise ValueError(f"--carry-row {path}: not an evaluation JSON (expected the object `fourm-hf evaluate --out` writes)")
        different = {key: (earlier.get(key), value) for key, value in held_out.items() if earlier.get(key) != value}
        if different:
            detail = ", ".join(f"{key} {old!r} there, {new!r} here" for key, (old, new) in different.items())
            raise ValueError(f"--carry-row {path}: scored on other held-out scenes ({detail}); its rows are not comparable")
        matches = [row for row in earlier.get("rows", []) if row.get("name") == name]
        if not matches:
            names = [row.get("name") for row in earlier.get("rows", [])]
            raise ValueError(f"--carry-row {path}: no row named {name!r}; its rows are {names}")
        row = dict(matches[0], name=f"{name} (carried from {Path(path).name}, {str(earlier.get('date', '?'))[:10]})")
        rows.append(row)
    return rows


def run_evaluation(
    checkpoint,
    num_scenes: int = 200,
    targets=TARGETS,
    batch_size: int = 16,
    specialists: dict[str, str] | None = None,
    comparisons: dict[str, str] | None = None,
    train_stats=None,
    train_stats_scenes: int = 200,
    caption_prompts: int | None = None,
    seed: int = 0,
    device=None,
    processor=None,
    command: str | None = None,
    carry_rows: list[tuple[str, str]] | None = None,
    dtype: str = "float32",
    int8: bool = False,
) -> dict:
    """Everything ``fourm-hf evaluate`` reports, as a JSON-able dict (``rows``, ``markdown``, ...).

    ``caption_prompts``: held-out captions for caption -> RGB; ``None`` = min(20, num_scenes), 0 = skip.
    ``comparisons``: ``{row name: folder}`` of other 4M checkpoints scored like ``checkpoint`` (e.g. the
    same model earlier in training); ``specialists``: ``{target: folder}`` scored on their target only.
    ``processor``: a FourMProcessor folder for checkpoints that hold only the model (e.g. ``fourm-hf
    train`` outputs); a checkpoint with its own processor uses that one. ``carry_rows``: ``[(JSON file, row
    name)]`` of earlier evaluations of the same held-out scenes, appended to the table (``carried_rows``).
    ``dtype`` (``"float32"`` or ``"bfloat16"``) and ``int8`` (dynamic int8 of the float32 model, CPU
    only): the format every 4M pipeline's model runs in.
    """
    targets = check_targets(targets)
    check_model_format(dtype, int8)
    if isinstance(num_scenes, bool) or not isinstance(num_scenes, int) or num_scenes < 1:
        raise ValueError(f"--num-scenes must be an int >= 1, got {num_scenes!r}")
    if int(batch_size) < 1:
        raise ValueError(f"--batch-size must be >= 1, got {batch_size}")
    if caption_prompts is None:
        caption_prompts = min(DEFAULT_CAPTION_PROMPTS, num_scenes)
    if int(caption_prompts) < 0:
        raise ValueError(f"--caption-prompts must be >= 0, got {caption_prompts}")
    if int(caption_prompts) > num_scenes:
        raise ValueError(f"--caption-prompts {caption_prompts} exceeds --num-scenes {num_scenes} (prompts are held-out captions)")
    if train_stats is None and int(train_stats_scenes) < 1:
        raise ValueError(f"--train-stats-scenes must be >= 1 without --train-stats, got {train_stats_scenes}")
    specialists = dict(specialists or {})
    processor_folder = check_checkpoint(checkpoint, targets, processor=processor)
    if caption_prompts:
        check_checkpoint(checkpoint, ["caption"], processor=processor)
        if "tok_rgb" not in FourMConfig.from_pretrained(str(checkpoint)).output_modalities:
            raise ValueError(f"--checkpoint {checkpoint}: the model does not generate tok_rgb; pass --caption-prompts 0")
    specialist_processors = {target: check_checkpoint(folder, [target], what=f"--specialist {target}=", processor=processor)
                             for target, folder in specialists.items()}
    comparisons = dict(comparisons or {})
    comparison_processors = {name: check_checkpoint(folder, targets, what=f"--compare {name}=", processor=processor)
                             for name, folder in comparisons.items()}
    model_processor = FourMProcessor.from_pretrained(processor_folder or str(checkpoint))
    held_out = {"num_scenes": num_scenes, "image_size": model_processor.image_size,
                "heldout_dataset_seed": HELDOUT_DATASET_SEED, "seed": seed}
    earlier_rows = carried_rows(list(carry_rows or []), held_out)
    ceiling = TokenizerCeiling(model_processor, targets)
    size = model_processor.image_size

    scenes = heldout_scenes(num_scenes, size)
    if train_stats is not None:
        statistics = TrainStatistics.from_dataset(train_stats, size)
        stats_source = str(train_stats)
    else:
        statistics = TrainStatistics.from_scenes(
            render_scene_set(train_stats_scenes, size, TRAIN_STATS_DATASET_SEED, desc="rendering statistics scenes"))
        stats_source = f"{train_stats_scenes} scenes rendered with dataset seed {TRAIN_STATS_DATASET_SEED}"

    model_format = {"dtype": dtype, "int8": int8}
    model = PipelinePredictor(checkpoint, targets, name="4M", seed=seed, batch_size=batch_size, device=device,
                              processor=processor_folder, **model_format)
    predictors = [model]
    for name, folder in comparisons.items():
        predictors.append(PipelinePredictor(folder, targets, name=name, seed=seed, batch_size=batch_size, device=device,
                                            processor=comparison_processors[name], **model_format))
    predictors += [ceiling, TrivialBaseline(statistics, targets)]
    for target, folder in specialists.items():
        predictors.append(PipelinePredictor(folder, [target], name=f"specialist ({target})", seed=seed,
                                            batch_size=batch_size, device=device, processor=specialist_processors[target],
                                            **model_format))
    rows = [evaluate_predictor(predictor, scenes, batch_size=batch_size) for predictor in predictors]
    rows += earlier_rows

    caption_to_rgb = None
    if caption_prompts:
        prompts, too_long = caption_prompts_that_fit(scenes, caption_prompts, checkpoint, model_processor)
        caption_to_rgb = caption_to_rgb_check(model.pipe, prompts, seed=seed, batch_size=batch_size)
        caption_to_rgb["skipped_too_long"] = too_long

    result = {
        "command": command,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "checkpoint": str(checkpoint),
        "processor": processor_folder or str(checkpoint),
        "num_scenes": num_scenes,
        "image_size": size,
        "heldout_dataset_seed": HELDOUT_DATASET_SEED,
        "seed": seed,
        "dtype": dtype,
        "int8": bool(int8),
        "targets": list(targets),
        "train_stats": {"source": stats_source, "num_scenes": statistics.num_scenes},
        "specialists": specialists,
        "comparisons": comparisons,
        "rows": rows,
        "caption_to_rgb": caption_to_rgb,
    }
    result["markdown"] = format_report(result)
    return result


def caption_prompts_that_fit(scenes: list[dict], count: int, checkpoint, processor) -> tuple[list[str], int]:
    """The first ``count`` held-out captions whose ids fit the model's caption ``max_length`` (longer
    ones cannot be a prompt), and how many were passed over to find them."""
    max_length = FourMConfig.from_pretrained(str(checkpoint)).modality("caption").max_length
    prompts, too_long = [], 0
    for scene in scenes:
        if len(prompts) == count:
            break
        if len(processor.tokenizer.encode_for_model(scene["caption"], "caption")) <= max_length:
            prompts.append(scene["caption"])
        else:
            too_long += 1
    if not prompts:
        raise ValueError(f"caption -> rgb: no held-out caption fits the model's caption max_length {max_length}; "
                         "pass --caption-prompts 0")
    return prompts, too_long


def model_format_note(result: dict) -> str:
    """``""`` for float32 models, else how the 4M rows' models ran (``"; models in bfloat16"``)."""
    if result.get("int8"):
        return "; models in dynamic int8 (encoder, decoder, heads)"
    dtype = result.get("dtype", "float32")
    return "" if dtype == "float32" else f"; models in {dtype}"


def format_report(result: dict) -> str:
    """The table, the caption -> RGB line and the command/date line, as markdown."""
    lines = [
        f"Held-out scenes: {result['num_scenes']} at {result['image_size']} px "
        f"(dataset seed {result['heldout_dataset_seed']}); generation seed {result['seed']}"
        f"{model_format_note(result)}.",
        "",
        markdown_table(result["rows"], result["targets"]),
        "",
    ]
    check = result.get("caption_to_rgb")
    if check:
        lines.append(
            f"Caption -> RGB ({check['num_prompts']} held-out captions, re-captioned by the same model): all objects "
            f"found in {check['all_objects_found']:.2f} of generations; object recall {check['object_recall']:.2f}"
            + (f" ({check['skipped_too_long']} captions longer than the model's caption length passed over)."
               if check.get("skipped_too_long") else ".")
        )
        lines.append("")
    if any("(carried from " in row["name"] for row in result["rows"]):
        lines.append("Rows \"carried from\" a file were scored by an earlier run on the same held-out scenes and seed "
                     "(`--carry-row`), with the metric definitions of that run.")
    lines.append(f"Trivial-baseline statistics: {result['train_stats']['source']}.")
    lines.append(f"Command: `{result['command'] or 'run_evaluation(...)'}` ({result['date']}).")
    return "\n".join(lines) + "\n"
