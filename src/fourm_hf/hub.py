"""Share 4M checkpoints on the Hugging Face Hub: a generated model card, the any-to-any pipeline entry,
and an upload of the whole checkpoint folder in ONE commit.

A 4M checkpoint folder holds the model (``config.json``, ``model.safetensors``, model code), the
processor (``processor_config.json``, ``preprocessor_config.json``, the text tokenizer files and one
VQ-VAE per dense modality under ``vqvae/<modality>/``, processor code) or both. Before the upload,
:func:`prepare_checkpoint_folder` adds to a copy of it:

- ``README.md``: the model card (:func:`model_card`) with Hub metadata (``pipeline_tag: any-to-any``,
  ``library_name: transformers``, license, datasets, tags), the modalities with their vocabularies,
  the training data, an evaluation table and a usage snippet;
- ``config.json["custom_pipelines"]``: ``{"any-to-any": {"impl": "any_to_any.FourMAnyToAnyPipeline",
  "pt": ["AutoModel"], ...}}``, the entry ``pipeline(task, model=repo_id, trust_remote_code=True)``
  reads, together with the flat pipeline code it points at (and the modules it imports);
- the flat model / processor code the configs' ``auto_map`` points at, where the folder lacks it
  (:func:`add_remote_code`; the bundled checkpoint ships without code).

Then :func:`push_checkpoint` creates the repo (if needed) and uploads the folder with
``HfApi.create_commit``, in one commit. ``FourMModel.push_to_hub`` and ``FourMProcessor.push_to_hub``
go through it, and so does the command::

    fourm-hf push-to-hub --checkpoint DIR --repo-id user/my-4m [--private] [--card-metrics eval.json]

:func:`assemble_checkpoint` (``fourm-hf assemble-checkpoint``) writes such a folder from a trained model
folder and a processor folder, with the card.

The Hub endpoint and token are huggingface_hub's (``HF_ENDPOINT``, ``HF_TOKEN`` / ``hf auth login``).
"""

from __future__ import annotations

import json
import numbers
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import yaml

from .modeling.modeling_fourm import FourMModel
from .output_paths import check_output_dir, staging_dir, write_atomic
from .processing.processing_fourm import FourMProcessor
from .remote_code import PACKAGE_ROOT, remote_code_closure, write_remote_code
from .upload_selection import upload_files

CARD_NAME = "README.md"
CONFIG_NAME = "config.json"
PROCESSOR_CONFIG_NAME = "processor_config.json"
WEIGHTS_NAME = "model.safetensors"
MODEL_TYPE = "fourm"
PIPELINE_TASK = "any-to-any"
PIPELINE_MODULE = "pipelines/any_to_any.py"
PIPELINE_CLASS = "FourMAnyToAnyPipeline"
DEFAULT_LICENSE = "apache-2.0"
DEFAULT_TAGS = ("fourm", "4m", "multimodal", "any-to-any", "custom_code")
PAPER_URL = "https://arxiv.org/abs/2312.06647"
# Arguments of model_card a caller may give (the rest are read from the checkpoint folder).
CARD_OPTIONS = {"license", "datasets", "training_data", "metrics", "evaluation", "base_model", "tags", "title"}


# ------------------------------------------------------------------------------------ the model card


def model_card(
    config: Mapping | None = None,
    *,
    repo_id: str | None = None,
    vqvaes: Mapping[str, Mapping] | None = None,
    text_vocab_size: int | None = None,
    num_parameters: int | None = None,
    license: str = DEFAULT_LICENSE,
    datasets: Sequence[str] = (),
    training_data: str | None = None,
    metrics: Mapping | None = None,
    evaluation: str | None = None,
    base_model: str | None = None,
    tags: Sequence[str] = (),
    title: str | None = None,
) -> str:
    """The README.md text of a 4M checkpoint: YAML metadata, then the card in markdown.

    Args:
        config: the model's ``config.json`` as a dict (None for a processor-only repo).
        repo_id: used in the title and the usage snippet.
        vqvaes: ``{modality: VQ-VAE config dict}`` of the processor's tokenizers.
        text_vocab_size: size of the processor's WordPiece vocabulary.
        num_parameters: parameter count of the model.
        license / datasets / base_model / tags: Hub metadata (``datasets`` are Hub dataset ids).
        training_data: free text describing what the model was trained on.
        metrics: evaluation results, ``{name: value}`` or nested ``{task: {name: value}}`` (e.g. an
            evaluation JSON); rendered as a table in key order.
        evaluation: markdown shown first under "Evaluation" (e.g. the ``fourm-hf evaluate`` report).
    """
    if config is not None and config.get("model_type") != MODEL_TYPE:
        raise ValueError(f"model_card: config has model_type {config.get('model_type')!r}, expected {MODEL_TYPE!r}")
    if not isinstance(license, str) or not license:
        raise ValueError(f"model_card: license must be a non-empty string such as 'apache-2.0', got {license!r}")
    if isinstance(datasets, str) or isinstance(tags, str):
        raise TypeError("model_card: datasets and tags are lists of strings, not a single string")
    metadata = {"license": license, "library_name": "transformers", "pipeline_tag": PIPELINE_TASK,
                "tags": list(dict.fromkeys([*DEFAULT_TAGS, *tags]))}
    if datasets:
        metadata["datasets"] = list(datasets)
    if base_model:
        metadata["base_model"] = base_model
    metric_rows = _metric_rows(metrics) if metrics else []

    name = title or (repo_id.split("/")[-1] if repo_id else "4M model")
    sections = [
        f"# {name}",
        f"A [4M]({PAPER_URL}) (Massively Multimodal Masked Modeling) checkpoint in the `fourm-hf` format. Every "
        "modality is a sequence of discrete tokens (VQ-VAE codes for dense maps, WordPiece ids for captions and "
        "boxes) and one encoder-decoder transformer predicts any subset of the modalities from any other subset.",
    ]
    if config is not None:
        sections += ["## Model", _architecture_table(config, num_parameters), "## Modalities", _modality_table(config)]
    if vqvaes or text_vocab_size:
        sections += ["## Tokenizers", _tokenizer_table(vqvaes or {}, text_vocab_size)]
    sections += ["## Training data", training_data.strip() if training_data else
                 "Not documented by the uploader." + (f" Datasets: {', '.join(datasets)}." if datasets else "")]
    results = [part for part in (evaluation.strip() if evaluation else "",
                                 _table(("metric", "value"), metric_rows) if metric_rows else "") if part]
    sections += ["## Evaluation", "\n\n".join(results) if results else "No results reported."]
    sections += ["## Usage", _usage(repo_id or "path/to/checkpoint")]
    sections += ["## Citation", _CITATION]
    front_matter = yaml.safe_dump(metadata, sort_keys=False, allow_unicode=True)
    return f"---\n{front_matter}---\n\n" + "\n\n".join(sections) + "\n"


def write_model_card(folder: str | os.PathLike, repo_id: str | None = None, **card_options) -> Path:
    """Write ``folder/README.md`` for the checkpoint in ``folder`` (atomic); returns its path.

    The model's config, the processor's VQ-VAEs and text vocabulary and the parameter count are read
    from the folder; ``card_options`` are the other arguments of :func:`model_card`.
    """
    folder = Path(folder)
    kind = checkpoint_kind(folder)
    config = _read_json(folder / CONFIG_NAME) if "model" in kind else None
    found = dict(vqvaes=None, text_vocab_size=None, num_parameters=_count_parameters(folder) if config else None)
    if "processor" in kind:
        found.update(_processor_summary(folder))
    for key, value in found.items():
        card_options.setdefault(key, value)
    text = model_card(config, repo_id=repo_id, **card_options)
    return write_atomic(folder / CARD_NAME, text)


def _architecture_table(config: Mapping, num_parameters: int | None) -> str:
    rows = [("hidden size", config.get("hidden_size")),
            ("encoder / decoder layers", f"{config.get('num_encoder_layers')} / {config.get('num_decoder_layers')}"),
            ("attention heads", config.get("num_attention_heads")),
            ("image size / patch size", f"{config.get('image_size')} / {config.get('patch_size')} px"),
            ("token budget (input / target)", f"{config.get('input_budget')} / {config.get('target_budget')}")]
    if num_parameters is not None:
        rows.insert(0, ("parameters", f"{num_parameters:,}"))
    return _table(("", ""), rows)


def _modality_table(config: Mapping) -> str:
    inputs, outputs = list(config.get("input_modalities") or []), list(config.get("output_modalities") or [])
    specs = config.get("modality_specs") or {}
    grid = int(config["image_size"]) // int(config["patch_size"])
    rows = []
    for name in dict.fromkeys(inputs + outputs):
        spec = specs.get(name)
        if spec is None:
            raise ValueError(f"model_card: modality {name!r} is used by the config but has no entry in modality_specs")
        kind = spec["kind"]
        tokens = spec.get("max_length") if kind == "sequence" else grid * grid
        vocab = "-" if spec.get("vocab_size") is None else f"{spec['vocab_size']:,}"
        rows.append((f"`{name}`", kind, "yes" if name in inputs else "no", "yes" if name in outputs else "no", vocab, tokens))
    return _table(("modality", "kind", "input", "output", "vocabulary", "tokens per sample"), rows)


def _tokenizer_table(vqvaes: Mapping[str, Mapping], text_vocab_size: int | None) -> str:
    rows = []
    for name, vq in sorted(vqvaes.items()):
        size, patch = vq.get("image_size"), vq.get("patch_size")
        grid = f"{size // patch}x{size // patch}" if size and patch else "-"
        rows.append((f"`{name}`", f"{vq.get('tokenizer', 'VQ-VAE')} reading `{vq.get('target', vq.get('input_kind'))}` at {size} px",
                     f"{vq.get('vocab_size'):,}" if vq.get("vocab_size") else "-", grid))
    if text_vocab_size:
        rows.append(("`caption`, `det`", "WordPiece text tokenizer (4M id layout)", f"{text_vocab_size:,}", "-"))
    return _table(("modality", "tokenizer", "vocabulary", "grid"), rows) + (
        "\n\nThe processor (`AutoProcessor`) holds all of them: the VQ-VAEs are in `vqvae/<modality>/`.")


def _metric_rows(metrics: Mapping, prefix: str = "") -> list[tuple[str, str]]:
    """Flatten ``{task: {name: value}}`` into ``("task / name", "value")`` rows, in key order."""
    if not isinstance(metrics, Mapping):
        raise TypeError(f"metrics must be a mapping of name -> value, got {type(metrics).__name__}")
    rows = []
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            rows += _metric_rows(value, prefix=f"{name} / ")
        elif isinstance(value, bool) or isinstance(value, str):
            rows.append((name, str(value)))
        elif isinstance(value, numbers.Integral):
            rows.append((name, str(int(value))))
        elif isinstance(value, numbers.Real):
            rows.append((name, f"{float(value):.4g}"))
        else:
            raise ValueError(f"metrics[{name!r}]: expected a number, a string or a nested mapping, got {type(value).__name__}")
    return rows


def _table(header: Sequence[str], rows: Sequence[Sequence]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell).replace("|", "\\|") for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def _usage(repo_id: str) -> str:
    return f"""```python
from transformers import AutoModel, AutoProcessor, pipeline

model = AutoModel.from_pretrained("{repo_id}", trust_remote_code=True)
processor = AutoProcessor.from_pretrained("{repo_id}", trust_remote_code=True)  # VQ-VAEs + text tokenizer
generator = pipeline("{PIPELINE_TASK}", model="{repo_id}", trust_remote_code=True)
```

With the `fourm-hf` package installed, `import fourm_hf` registers the classes: `AutoModel` and
`AutoProcessor` then load this repo without `trust_remote_code`, and the installed pipeline is
`pipeline("{PIPELINE_TASK}", model="{repo_id}", pipeline_class=fourm_hf.FourMAnyToAnyPipeline)` (without
`pipeline_class`, transformers asks for `trust_remote_code=True` because the repo declares its own pipeline)."""


_CITATION = """```bibtex
@inproceedings{mizrahi20234m,
  title     = {{4M}: Massively Multimodal Masked Modeling},
  author    = {Mizrahi, David and Bachmann, Roman and Kar, O{\\u{g}}uzhan Fatih and Yeo, Teresa and Gao, Mingfei and Dehghan, Afshin and Zamir, Amir},
  booktitle = {Advances in Neural Information Processing Systems},
  year      = {2023}
}
```"""


# ------------------------------------------------------------------------------ the checkpoint folder


def checkpoint_kind(folder: str | os.PathLike) -> set[str]:
    """``{"model"}``, ``{"processor"}`` or both for a 4M checkpoint folder; ``ValueError`` otherwise."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"{folder}: not a folder; expected a saved 4M checkpoint (model and/or processor)")
    kind = set()
    if (folder / CONFIG_NAME).is_file():
        model_type = _read_json(folder / CONFIG_NAME).get("model_type")
        if model_type != MODEL_TYPE:
            raise ValueError(f"{folder}/{CONFIG_NAME}: model_type {model_type!r}, expected {MODEL_TYPE!r}; not a 4M checkpoint")
        if not (folder / WEIGHTS_NAME).is_file() and not (folder / f"{WEIGHTS_NAME}.index.json").is_file():
            raise ValueError(f"{folder}: {CONFIG_NAME} but no {WEIGHTS_NAME}; save the model with save_pretrained")
        kind.add("model")
    if (folder / PROCESSOR_CONFIG_NAME).is_file():
        kind.add("processor")
    if not kind:
        raise ValueError(
            f"{folder}: not a 4M checkpoint; expected {CONFIG_NAME} + {WEIGHTS_NAME} (FourMModel.save_pretrained) "
            f"and/or {PROCESSOR_CONFIG_NAME} (FourMProcessor.save_pretrained)"
        )
    return kind


AUTO_MAP_FILES = (CONFIG_NAME, PROCESSOR_CONFIG_NAME, "preprocessor_config.json")


def auto_map_modules(folder: str | os.PathLike) -> list[str]:
    """The module names (``modeling_fourm``...) that the ``auto_map`` entries of the folder's configs point at."""
    modules = []
    for name in AUTO_MAP_FILES:
        path = Path(folder) / name
        if not path.is_file():
            continue
        config = _read_json(path)
        maps = [config.get("auto_map") or {}]
        maps += [value["auto_map"] for value in config.values() if isinstance(value, dict) and isinstance(value.get("auto_map"), dict)]
        for auto_map in maps:
            for reference in auto_map.values():
                for dotted in reference if isinstance(reference, (list, tuple)) else [reference]:
                    if isinstance(dotted, str) and "." in dotted and dotted.rsplit(".", 1)[0] not in modules:
                        modules.append(dotted.rsplit(".", 1)[0])
    return modules


def add_remote_code(folder: str | os.PathLike) -> list[str]:
    """Write the flat package code that the folder's ``auto_map`` entries point at and the folder lacks
    (with every package module it imports), so ``trust_remote_code=True`` works from it without the
    package; returns the file names written. A folder written by ``save_pretrained`` has it all already;
    the bundled checkpoint (which ships inside the package) has none."""
    folder = Path(folder)
    written: list[str] = []
    for module in auto_map_modules(folder):
        if (folder / f"{module}.py").is_file():
            continue
        sources = [path for path in PACKAGE_ROOT.rglob(f"{module}.py") if "checkpoints" not in path.relative_to(PACKAGE_ROOT).parts]
        if len(sources) != 1:
            raise ValueError(
                f"{folder}: auto_map names module {module!r}, which the folder lacks and which fourm_hf has "
                f"{len(sources)} modules of that name for (expected one)"
            )
        closure = remote_code_closure(sources[0].relative_to(PACKAGE_ROOT).as_posix())
        written += [name for name in write_remote_code(folder, closure) if name not in written]
    return written


def add_custom_pipeline(folder: str | os.PathLike) -> dict | None:
    """Make ``pipeline("any-to-any", model=folder_or_repo, trust_remote_code=True)`` work from the folder.

    Writes the flat pipeline code (and every package module it imports) next to the model code and adds
    the ``custom_pipelines`` entry to ``config.json``. Returns the entry, or None when this installation
    has no pipeline module (nothing is changed then).
    """
    folder = Path(folder)
    if not (PACKAGE_ROOT / PIPELINE_MODULE).is_file():
        return None
    write_remote_code(folder, remote_code_closure(PIPELINE_MODULE))
    entry = {"impl": f"{Path(PIPELINE_MODULE).stem}.{PIPELINE_CLASS}", "pt": ["AutoModel"], "type": "multimodal"}
    config = _read_json(folder / CONFIG_NAME)
    config["custom_pipelines"] = {PIPELINE_TASK: entry}
    write_atomic(folder / CONFIG_NAME, json.dumps(config, indent=2, sort_keys=True) + "\n")
    return entry


def prepare_checkpoint_folder(folder: str | os.PathLike, repo_id: str | None = None, *, card: bool = True,
                              **card_options) -> set[str]:
    """Add the model card (unless ``card`` is False or the folder has its own README.md), the flat code
    ``auto_map`` points at where it is missing and, for a model checkpoint, the any-to-any pipeline entry.
    Changes ``folder`` in place; returns its kind."""
    kind = checkpoint_kind(folder)
    add_remote_code(folder)
    if "model" in kind:
        add_custom_pipeline(folder)
    if card and not (Path(folder) / CARD_NAME).exists():
        write_model_card(folder, repo_id, **card_options)
    return kind


# ---------------------------------------------------------------------------------------- the upload


def push_checkpoint(
    source,
    repo_id: str,
    *,
    private: bool | None = None,
    token: str | bool | None = None,
    revision: str | None = None,
    commit_message: str | None = None,
    commit_description: str | None = None,
    create_pr: bool = False,
    card: bool = True,
    max_shard_size: int | str | None = None,
    tags: Sequence[str] | None = None,
    endpoint: str | None = None,
    **card_options,
):
    """Upload a 4M checkpoint to the Hub repo ``repo_id`` in one commit; returns the ``CommitInfo``.

    Args:
        source: a checkpoint folder, or objects with ``save_pretrained`` (a ``FourMModel``, a
            ``FourMProcessor``, or a list of them, saved together into one folder first). The folder
            itself is not changed: the card and the pipeline entry are added to a temporary copy.
        repo_id: ``namespace/name``; created (``private`` applies then) if it does not exist.
        card: write the generated model card. A folder's own README.md is uploaded as it is. A
            processor-only upload leaves an existing card of the repo alone (the model's card).
        max_shard_size: passed to a model's ``save_pretrained``.
        tags: extra card tags.
        card_options: the other arguments of :func:`model_card` (``license``, ``datasets``,
            ``training_data``, ``metrics``, ``base_model``, ``title``).

    Errors from the Hub are huggingface_hub's exceptions with what was being pushed where appended.
    """
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    if not isinstance(repo_id, str) or not repo_id.strip():
        raise ValueError(f"repo_id must be a non-empty string like 'user/my-4m', got {repo_id!r}")
    if tags:
        card_options["tags"] = list(tags)
    unknown = set(card_options) - CARD_OPTIONS
    if unknown:
        raise TypeError(f"push_checkpoint: unexpected arguments {sorted(unknown)}; card options are {sorted(CARD_OPTIONS)}")
    model_card(None, **card_options)  # bad card options fail here, before anything is uploaded
    api = HfApi(endpoint=endpoint, token=token)
    with tempfile.TemporaryDirectory(prefix="fourm-hub-") as staging:
        folder = Path(staging) / "checkpoint"
        _stage(source, folder, max_shard_size)
        kind = checkpoint_kind(folder)
        what = " + ".join(sorted(kind))
        try:
            repo_id = api.create_repo(repo_id, private=private, exist_ok=True).repo_id
            if card and kind == {"processor"} and not (folder / CARD_NAME).exists():
                card = not api.file_exists(repo_id, CARD_NAME, revision=revision)
            prepare_checkpoint_folder(folder, repo_id, card=card, **card_options)
            return api.create_commit(
                repo_id=repo_id, operations=_add_operations(folder), revision=revision, create_pr=create_pr,
                commit_message=commit_message or f"Upload 4M {what} with fourm-hf",
                commit_description=commit_description,
            )
        except HfHubHTTPError as error:
            error.append_to_message(f"\n(fourm-hf: pushing the 4M {what} checkpoint to {repo_id!r} at {api.endpoint})")
            raise


def _add_operations(folder: Path) -> list:
    """One ``CommitOperationAdd`` per file of ``folder``: ``create_commit`` makes them ONE commit, where
    ``upload_folder`` splits a failed commit of more than 20 files into several."""
    from huggingface_hub import CommitOperationAdd

    return [CommitOperationAdd(path_in_repo=path.relative_to(folder).as_posix(), path_or_fileobj=str(path))
            for path in sorted(folder.rglob("*")) if path.is_file()]


def _stage(source, folder: Path, max_shard_size) -> None:
    """Copy a checkpoint folder to ``folder`` or save objects into it."""
    if isinstance(source, (str, os.PathLike)):
        checkpoint_kind(source)  # refuse a non-checkpoint before copying anything
        for relative in upload_files(source):  # what a user loads; no pickles, no intermediate checkpoints
            (folder / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(Path(source) / relative, folder / relative)
        return
    objects = list(source) if isinstance(source, (list, tuple)) else [source]
    if not objects:
        raise ValueError("push_checkpoint: nothing to push (an empty list)")
    folder.mkdir(parents=True)
    for obj in objects:
        if not hasattr(obj, "save_pretrained"):
            raise TypeError(f"push_checkpoint: expected a folder, a FourMModel or a FourMProcessor, got {type(obj).__name__}")
        is_model = hasattr(obj, "state_dict")
        if is_model and max_shard_size is not None:
            obj.save_pretrained(folder, max_shard_size=max_shard_size)
        else:
            obj.save_pretrained(folder)


# ------------------------------------------------------------------------------------------ helpers


def _read_json(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from error


def _count_parameters(folder: Path) -> int | None:
    """Total element count of the tensors in ``model.safetensors`` (None when the weights are sharded)."""
    from safetensors import safe_open

    path = folder / WEIGHTS_NAME
    if not path.is_file():
        return None
    total = 0
    with safe_open(str(path), framework="numpy") as weights:
        for key in weights.keys():
            count = 1
            for size in weights.get_slice(key).get_shape():
                count *= size
            total += count
    return total


def _processor_summary(folder: Path) -> dict:
    """VQ-VAE configs by modality and the text vocabulary size of a saved FourMProcessor folder."""
    processor_config = _read_json(folder / PROCESSOR_CONFIG_NAME)
    vqvaes = {}
    for name in processor_config.get("vqvae_modalities", []):
        config_file = folder / "vqvae" / name / CONFIG_NAME
        if not config_file.is_file():
            raise ValueError(f"{folder}: {PROCESSOR_CONFIG_NAME} lists VQ-VAE {name!r} but {config_file} is missing")
        vqvaes[name] = _read_json(config_file)
        released_file = folder / "vqvae" / name / "modality_tokenizer.json"
        if released_file.is_file():  # a released tokenizer (ReleasedModalityTokenizer): the processor's size applies
            settings, released = _read_json(released_file), vqvaes[name]
            vqvaes[name] = {"tokenizer": f"released {released.get('model_type')}", "input_kind": settings.get("input_kind"),
                            "image_size": settings.get("image_size"), "patch_size": released.get("patch_size"),
                            "vocab_size": released.get("codebook_size")}
    text_vocab_size = None
    if (folder / "tokenizer.json").is_file():
        text_vocab_size = len(_read_json(folder / "tokenizer.json").get("model", {}).get("vocab", {})) or None
    return {"vqvaes": vqvaes, "text_vocab_size": text_vocab_size}


# ------------------------------------------------------- a checkpoint folder from a model and a processor


def assemble_checkpoint(model, processor, out, evaluation=None, training_data: str | None = None,
                        title: str | None = None, license: str | None = None, remote_code: bool = True) -> Path:
    """Write ``out``: the FourM model folder ``model`` and the FourMProcessor folder ``processor``
    side by side, and a model card.

    The folder gets no ``custom_pipelines`` entry: with one, ``pipeline("any-to-any", model=out)``
    would insist on ``trust_remote_code=True`` even where fourm_hf is installed. ``push_checkpoint``
    adds the entry to the copy it uploads, for Hub users without the package.

    Args:
        model / processor: folders saved by ``save_pretrained`` (a ``fourm-hf train`` output dir, an
            ``assemble-processor`` output).
        out: the new folder; replaced as a whole, atomically (built beside it, then renamed).
        evaluation: a ``fourm-hf evaluate --out`` JSON; its markdown report goes into the card.
        training_data / title / license: for the card.
        remote_code: keep the flat package code ``save_pretrained`` writes next to the weights (for
            ``trust_remote_code`` users without the package). False for a checkpoint that ships
            inside the package: its loaders have the package.
    """
    for field, folder, name in (("--model", model, "config.json"), ("--processor", processor, "processor_config.json")):
        if not (Path(folder) / name).is_file():
            raise ValueError(f"{field} {folder}: no {name}; expected a folder written by save_pretrained")
    report = None
    if evaluation is not None:
        if not Path(evaluation).is_file():
            raise ValueError(f"--evaluation {evaluation}: not a file; expected the JSON of fourm-hf evaluate --out")
        report = json.loads(Path(evaluation).read_text(encoding="utf-8")).get("markdown")
        if not report:
            raise ValueError(f"--evaluation {evaluation}: no 'markdown' entry; expected the JSON of fourm-hf evaluate --out")

    out = check_output_dir(out, "assemble-checkpoint: --out")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = staging_dir(out, hidden=True)  # removes what a killed earlier run left
    try:
        FourMModel.from_pretrained(str(model)).save_pretrained(staging)
        FourMProcessor.from_pretrained(str(processor)).save_pretrained(staging)
        if not remote_code:
            for module in staging.glob("*.py"):
                module.unlink()
        write_model_card(staging, title=title or out.name, evaluation=report, training_data=training_data,
                         license=license or DEFAULT_LICENSE)
        if out.exists():
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            os.replace(out, old)
            os.replace(staging, out)
            shutil.rmtree(old)
        else:
            os.replace(staging, out)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return out
