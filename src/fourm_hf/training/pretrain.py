"""4M pretraining from a YAML config: ``fourm-hf train --config CONFIG.yaml``.

The config has four sections (every key is checked; an unknown one is a ``ValueError``)::

    model:      # a FourMConfig: `preset` (tiny/small/base/large/xlarge) and/or explicit sizes,
                # image_size, patch_size, input_modalities, output_modalities, loss_averaging, ...
                # vocab_sizes: {tok_rgb: 1024, caption: 30000}   max_lengths: {caption: 64}
                # text_tokenizer: DIR  (FourMTextTokenizer folder: vocab of caption/det, sentinels)
                # vqvae: {tok_rgb: DIR, ...}  (FourMVQVAE folders: vocab of each image modality)
                # processor: DIR  (a saved FourMProcessor: its tokenizer and vqvae/<modality>/ folders)
                # loss_type: mod | token  (the reference's name for loss_averaging)
                # pretrained: DIR  (fine-tune a saved FourMModel or a released 4M folder, converted on
                #                   the fly; then only add_modalities, frozen_model_steps /
                #                   frozen_model_tokens and loss_type beside it: see finetune_settings)
    masking:    # strategy (a preset name of fourm_hf.data.masking.MASKING_PRESETS, a reference mixture
                # name, the path of a reference alphas YAML file, or a list of {input_alphas,
                # target_alphas, weight, name, keep}), input_budget, target_budget, min_input_tokens,
                # min_target_tokens (random budgets), seed, allow_missing_modalities, num_sentinels
    data:       # train: DIR (datasets.save_to_disk), or a list of datasets with weights, modalities and
                # masking each, or a Parquet shards folder / hf://datasets/... (a weighted, streamed
                # mixture: training.mixture_settings, docs/mixtures.md), eval: DIR, train_split / eval_split (for a
                # DatasetDict folder), repeat_sampling, validate_samples, max_train_samples,
                # max_eval_samples
    training:   # any transformers.TrainingArguments field (output_dir, max_steps, learning_rate, ...),
                # total_tokens / warmup_tokens (lengths in tokens, see finetune_settings)

Overrides on the command line are dotted ``key=value`` pairs parsed as YAML values, e.g.
``training.max_steps=100 masking.seed=3 data.repeat_sampling=4``. Relative paths are relative to
the working directory, not to the YAML file. The resolved config is saved as
``<output_dir>/fourm_pretrain.yaml``.

**Corpus format.** One row per sample, one column per modality (``data.masking.layout``): image-token
modalities (``tok_rgb``, ``tok_dinov2``, ``tok_rgb@448``, ...) hold their own grid's ids in raster order
(196, 256, 784, 16 for a global embedding); sequences (``caption``, ``det``, ``metadata``, ...) hold the
text ids followed by [EOS] (3); a sequence embedding (``t5_caption``) holds (N, 4096) float32 vectors;
a second pixels input (``rgb@448``) its own column; the first pixels modality (``rgb``) reads the column
``pixel_values``, float32 (3, image_size, image_size), already normalised, or else the uint8
``rgb_image`` (image_size, image_size, 3) column of a ``fourm-hf build-corpus`` corpus, which
:func:`fourm_hf.data.corpus.to_training_format` normalises on access (a corpus folder with
``corpus_info.json`` is opened with :func:`fourm_hf.data.corpus.load_corpus`, with its own mean/std;
an in-memory dataset with ``rgb_image`` gets the ImageNet mean/std). A dataset that already has a
transform (``set_transform``/``with_transform``) is used as is. Other columns are ignored.

**Repeated sampling.** ``data.repeat_sampling = r`` makes an epoch visit every loaded sample ``r``
times; copy ``k`` of row ``i`` has sample index ``k * len(corpus) + i``, so each copy gets its own
masks (the masks depend on (seed, epoch, sample index)).

**Checks before training.** The corpus must have a column for every configured modality, not be
empty, hold ids inside each modality's vocabulary (checked over the whole corpus with pyarrow when
possible) and, for the first ``validate_samples`` rows, pass every check of the collator (shapes,
lengths, enough tokens for the budgets). Any failure is a ``ValueError`` naming the field.

**Defaults** (any can be overridden in ``training``): ``remove_unused_columns=False``,
``optim="adamw_torch_fused"`` (CPU and GPU), ``lr_scheduler_type="cosine"``, ``warmup_steps=0.05``
(a ratio of the total steps), ``adam_beta2=0.95``, ``weight_decay=0.05``, ``report_to=[]``, and
``use_cpu=True`` when launched on several processes (``torchrun``) on a machine without GPUs (under
an ``accelerate launch`` DeepSpeed config there: ``ddp_backend="gloo"`` instead; see docs/distributed.md).
Checkpoints are safetensors (the only format of transformers 5). Resuming
(``--resume-from-checkpoint``) is exact: same data order (``seed``/``data_seed``), same masks
(per-sample generators), same optimizer, scheduler and RNG states.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
import yaml
from transformers import set_seed

from ..configuration_fourm import FOURM7_INPUTS, FOURM7_OUTPUTS, FourMConfig
from ..data.masking import SAMPLE_INDEX_FIELD, DirichletMasking, FourMMaskingCollator
from ..data.synthetic_corpus import random_corpus
from ..modalities import get_modality
from ..modeling.modeling_fourm import FourMModel
from ..text.tokenization_fourm import FourMTextTokenizer
from ..tokenizers.vqvae import FourMVQVAEConfig
from .corpus_checks import check_corpus, load_corpus
from .finetune_settings import (
    LOSS_TYPES,
    PRETRAINED_KEYS,
    TOKEN_LENGTH_KEYS,
    apply_token_lengths,
    frozen_warmup_callback,
    load_pretrained,
)
from .mixture_settings import MIXTURE_ONLY_DATA_KEYS, build_mixture, is_mixture, parse_datasets
from .trainer import FourMTrainer

SECTIONS = ("model", "masking", "data", "training")
MODEL_EXTRA_KEYS = ("preset", "vocab_sizes", "max_lengths", "processor", "text_tokenizer", "vqvae") + PRETRAINED_KEYS
MASKING_KEYS = (
    "strategy", "input_budget", "target_budget", "seed", "allow_missing_modalities", "num_sentinels",
    "min_input_tokens", "min_target_tokens",
)
DATA_KEYS = (
    "train", "eval", "train_split", "eval_split", "repeat_sampling", "validate_samples",
    "max_train_samples", "max_eval_samples",
)
TRAINING_DEFAULTS = {
    "remove_unused_columns": False,
    "optim": "adamw_torch_fused",
    "lr_scheduler_type": "cosine",
    "warmup_steps": 0.05,
    "learning_rate": 1e-4,
    "adam_beta2": 0.95,
    "weight_decay": 0.05,
    "report_to": [],
}
DEFAULT_VALIDATE_SAMPLES = 256


# ------------------------------------------------------------------------------------------------
# The YAML config
# ------------------------------------------------------------------------------------------------
def _model_keys() -> set[str]:
    return set(FourMConfig.__annotations__) | set(MODEL_EXTRA_KEYS)


def _training_keys() -> set[str]:
    from transformers import TrainingArguments

    return {f.name for f in dataclasses.fields(TrainingArguments) if f.init} | set(TOKEN_LENGTH_KEYS)


def _allowed_keys(section: str) -> set[str]:
    return {
        "model": _model_keys,
        "masking": lambda: set(MASKING_KEYS),
        "data": lambda: set(DATA_KEYS),
        "training": _training_keys,
    }[section]()


def validate_settings(settings: Mapping) -> dict[str, dict]:
    """Check the sections and keys of a pretraining config; returns it with every section present.

    Raises ValueError naming an unknown section or key (``model.hiden_size``), or a section that is
    not a mapping.
    """
    if not isinstance(settings, Mapping):
        raise ValueError(f"A pretraining config must be a mapping with sections {SECTIONS}, got {type(settings).__name__}.")
    unknown = sorted(set(settings) - set(SECTIONS))
    if unknown:
        raise ValueError(f"Unknown config section(s) {unknown}; expected some of {list(SECTIONS)}.")
    checked = {}
    for section in SECTIONS:
        values = settings.get(section) or {}
        if not isinstance(values, Mapping):
            raise ValueError(f"Config section {section!r} must be a mapping of keys to values, got {type(values).__name__}.")
        allowed = _allowed_keys(section)
        for key in values:
            if key not in allowed:
                raise ValueError(
                    f"Unknown key {section}.{key} in the pretraining config; {section!r} accepts: {sorted(allowed)}."
                )
        checked[section] = dict(values)
    return checked


def apply_overrides(settings: Mapping, overrides: Sequence[str]) -> dict[str, dict]:
    """Apply ``section.key=value`` overrides (values parsed as YAML: ``10``, ``true``, ``[a, b]``)."""
    result = {section: dict(settings.get(section) or {}) for section in SECTIONS}
    result.update({k: v for k, v in settings.items() if k not in SECTIONS})  # kept so validation names them
    for override in overrides:
        if "=" not in override:
            raise ValueError(f"Override {override!r} must look like section.key=value (e.g. training.max_steps=10).")
        dotted, raw_value = override.split("=", 1)
        section, _, key = dotted.partition(".")
        if section not in SECTIONS or not key:
            raise ValueError(f"Override {override!r}: the key must be <section>.<name> with section in {list(SECTIONS)}.")
        result[section][key] = yaml.safe_load(raw_value)
    return result


def load_settings(path: str | os.PathLike, overrides: Sequence[str] = ()) -> dict[str, dict]:
    """Read a pretraining YAML file, apply overrides, check every key."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"Config file {str(path)!r} does not exist.")
    with open(path, encoding="utf-8") as handle:
        settings = yaml.safe_load(handle) or {}
    if not isinstance(settings, Mapping):
        raise ValueError(f"Config file {str(path)!r} must hold a mapping with sections {list(SECTIONS)}.")
    return validate_settings(apply_overrides(settings, overrides))


# ------------------------------------------------------------------------------------------------
# Model and collator
# ------------------------------------------------------------------------------------------------
def build_model_config(model_settings: Mapping, masking_settings: Mapping | None = None) -> FourMConfig:
    """FourMConfig from the ``model`` section (+ the budgets of the ``masking`` section)."""
    model_settings = dict(model_settings)
    masking_settings = dict(masking_settings or {})
    budgets = {key: int(masking_settings[key]) for key in ("input_budget", "target_budget") if masking_settings.get(key) is not None}
    if model_settings.get("pretrained") is not None:
        return load_pretrained(model_settings, budgets).config
    finetune_only = sorted(set(model_settings) & set(PRETRAINED_KEYS) - {"pretrained", "loss_type"})
    if finetune_only:
        raise ValueError(f"model.{finetune_only[0]} fine-tunes a trained model: set model.pretrained too.")
    if model_settings.get("loss_type") is not None:
        loss_type = model_settings.pop("loss_type")
        if loss_type not in LOSS_TYPES:
            raise ValueError(f"model.loss_type must be one of {sorted(LOSS_TYPES)}, got {loss_type!r}.")
        model_settings["loss_averaging"] = LOSS_TYPES[loss_type]
    model_settings.pop("loss_type", None)
    preset = model_settings.pop("preset", None)
    vocab_sizes = dict(model_settings.pop("vocab_sizes", None) or {})
    max_lengths = dict(model_settings.pop("max_lengths", None) or {})
    text_tokenizer = model_settings.pop("text_tokenizer", None)
    vqvae_dirs = dict(model_settings.pop("vqvae", None) or {})
    processor = model_settings.pop("processor", None)
    if processor is not None:
        text_tokenizer = text_tokenizer or processor
        for folder in sorted((Path(processor) / "vqvae").glob("*")) if Path(processor).is_dir() else ():
            vqvae_dirs.setdefault(folder.name, folder)
    model_settings.pop("pretrained", None)
    model_settings.update(budgets)

    if processor is not None and not Path(processor).is_dir():
        raise ValueError(f"model.processor: {str(processor)!r} is not a folder with a saved FourMProcessor.")
    names = list(dict.fromkeys(
        list(model_settings.get("input_modalities") or FOURM7_INPUTS)
        + list(model_settings.get("output_modalities") or FOURM7_OUTPUTS)
    ))
    specs = {name: spec if isinstance(spec, dict) else spec.to_dict()
             for name, spec in dict(model_settings.get("modality_specs") or {}).items()}
    for name in names:
        specs.setdefault(name, get_modality(name).to_dict())
    if text_tokenizer is not None:
        tokenizer = _load_text_tokenizer(text_tokenizer)
        for name in names:
            if specs[name]["tokenizer"] == "text":
                vocab_sizes.setdefault(name, len(tokenizer))
    for name, folder in vqvae_dirs.items():
        if processor is None or name in names:  # a processor may carry VQ-VAEs the model does not use
            vocab_sizes.setdefault(name, _vqvae_vocab_size(name, folder))
    for field, values in (("vocab_sizes", vocab_sizes), ("max_lengths", max_lengths)):
        for name in values:
            if name not in names:
                raise ValueError(f"model.{field} names {name!r}, which is not among the model's modalities {names}.")
    for name, size in vocab_sizes.items():
        specs[name] = {**specs[name], "vocab_size": int(size)}
    for name, length in max_lengths.items():
        specs[name] = {**specs[name], "max_length": int(length)}
    model_settings["modality_specs"] = specs
    if preset is not None:
        return FourMConfig.from_preset(preset, **model_settings)
    return FourMConfig(**model_settings)


def _load_text_tokenizer(folder):
    if not Path(folder).is_dir():
        raise ValueError(f"model.text_tokenizer: {str(folder)!r} is not a folder with a saved FourMTextTokenizer.")
    return FourMTextTokenizer.from_pretrained(folder)


def _vqvae_vocab_size(name: str, folder) -> int:
    if not Path(folder).is_dir():
        raise ValueError(f"model.vqvae.{name}: {str(folder)!r} is not a folder with a saved FourMVQVAE.")
    return int(FourMVQVAEConfig.from_pretrained(folder).vocab_size)


def build_model(model_settings: Mapping, config: FourMConfig):
    """A fresh FourMModel for ``config``, or the ``model.pretrained`` model (``finetune_settings.load_pretrained``)."""
    if model_settings.get("pretrained") is None:
        return FourMModel(config)
    budgets = {key: getattr(config, key) for key in ("input_budget", "target_budget")}
    return load_pretrained(model_settings, budgets)


def build_collator(config: FourMConfig, masking_settings: Mapping, text_tokenizer=None) -> FourMMaskingCollator:
    """The masking collator of the ``masking`` section."""
    settings = dict(masking_settings)
    strategy = settings.pop("strategy", "4m7")
    if isinstance(strategy, list):
        components = []
        for index, component in enumerate(strategy):
            if not isinstance(component, Mapping):
                raise ValueError(f"masking.strategy[{index}] must be a mapping with input_alphas/target_alphas, got {component!r}.")
            unknown = set(component) - {f.name for f in dataclasses.fields(DirichletMasking)}
            if unknown:
                raise ValueError(f"masking.strategy[{index}] has unknown key(s) {sorted(unknown)}.")
            components.append(DirichletMasking(**component))
        strategy = components
    elif not isinstance(strategy, str):
        raise ValueError(f"masking.strategy must be a preset name or a list of components, got {strategy!r}.")
    if text_tokenizer is not None and "num_sentinels" not in settings:
        settings["num_sentinels"] = text_tokenizer.num_sentinels
    return FourMMaskingCollator(config, strategy=strategy, **settings)


# ------------------------------------------------------------------------------------------------
# Data
# ------------------------------------------------------------------------------------------------
class RepeatedSampleDataset(torch.utils.data.Dataset):
    """A corpus seen ``repeats`` times per epoch, each copy with its own ``sample_index``.

    Item ``j`` is row ``j % len(corpus)`` plus ``sample_index = j``, so the ``repeats`` copies of a
    row get different masks. With ``repeats = 1`` this is just the corpus with row indices.
    """

    def __init__(self, corpus, repeats: int = 1):
        if not isinstance(repeats, int) or isinstance(repeats, bool) or repeats < 1:
            raise ValueError(f"data.repeat_sampling must be an int >= 1, got {repeats!r}.")
        self.corpus = corpus
        self.repeats = repeats

    def __len__(self):
        return len(self.corpus) * self.repeats

    def __getitem__(self, index):
        index = int(index)
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} samples.")
        sample = self.corpus[index % len(self.corpus)]
        return {**sample, SAMPLE_INDEX_FIELD: index}


def prepare_dataset(corpus, config, collator, field: str, repeats: int = 1, validate_samples=DEFAULT_VALIDATE_SAMPLES,
                    max_samples: int | None = None) -> RepeatedSampleDataset:
    """Check a corpus and wrap it for the Trainer (sample indices, repeated sampling)."""
    if max_samples is not None:
        if len(corpus) == 0:
            raise ValueError(f"data.{field}: the dataset is empty; there is nothing to train or evaluate on.")
        corpus = corpus.select(range(min(int(max_samples), len(corpus))))
    corpus = check_corpus(corpus, config, field, collator.allow_missing_modalities)
    dataset = RepeatedSampleDataset(corpus, repeats)
    count = len(corpus) if validate_samples in (None, -1) else min(len(corpus), int(validate_samples))
    for index in range(count):
        try:
            collator.validate_sample(dataset[index])
        except (ValueError, TypeError) as error:
            raise type(error)(f"data.{field}: {error}") from None
    return dataset


# ------------------------------------------------------------------------------------------------
# Trainer
# ------------------------------------------------------------------------------------------------
def build_training_arguments(training_settings: Mapping, output_dir: str | None = None):
    """TrainingArguments from the ``training`` section over the 4M defaults."""
    from transformers import TrainingArguments

    values = {**TRAINING_DEFAULTS, **dict(training_settings)}
    for key, value in values.items():
        if key.endswith("_strategy") and value is False:
            values[key] = "no"  # YAML 1.1 reads a bare `no` as false
    if output_dir is not None:
        values["output_dir"] = str(output_dir)
    if not values.get("output_dir"):
        raise ValueError("training.output_dir is not set; give it in the config or with --output-dir.")
    if values["remove_unused_columns"]:
        raise ValueError("training.remove_unused_columns must be false: the collator reads the modality columns.")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.accelerator.is_available():
        if os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true":
            # accelerate detects no backend without GPUs and then counts 1 process (DeepSpeed's own process
            # group has 2): DeepSpeed's batch check fails ("train_batch_size ... 2 != 2 * 1 * 2"). Name gloo.
            values.setdefault("ddp_backend", "gloo")
        elif "use_cpu" not in values:
            # Under torchrun on a machine without GPUs, transformers only forms the process group (gloo)
            # with use_cpu=True; otherwise every process silently trains alone.
            values["use_cpu"] = True
    return TrainingArguments(**values)


def build_trainer(settings: Mapping, output_dir: str | None = None, train_dataset=None, eval_dataset=None) -> FourMTrainer:
    """Everything of a pretraining run from validated settings; datasets may be given in memory.

    ``train_dataset`` / ``eval_dataset`` (a ``datasets.Dataset`` in the corpus format) replace
    ``data.train`` / ``data.eval``. All corpus checks run here, before any training step.
    """
    settings = validate_settings(settings)
    model_settings, masking_settings, data_settings = settings["model"], settings["masking"], settings["data"]
    training_settings = {k: v for k, v in settings["training"].items() if k not in TOKEN_LENGTH_KEYS}
    mixture = train_dataset is None and is_mixture(data_settings.get("train"))
    if mixture:  # each rank reads its own part of the stream (mixture_settings)
        given = dict(training_settings.get("accelerator_config") or {})
        training_settings["accelerator_config"] = {"dispatch_batches": False, **given}
    args = build_training_arguments(training_settings, output_dir)
    model = None
    if model_settings.get("pretrained") is not None:
        set_seed(args.seed)  # the new modalities' initialisation is the same in every run
        budgets = {k: int(masking_settings[k]) for k in ("input_budget", "target_budget") if masking_settings.get(k) is not None}
        model = load_pretrained(model_settings, budgets)
        config = model.config
    else:
        config = build_model_config(model_settings, masking_settings)
    apply_token_lengths(args, settings["training"], config, given_keys=set(training_settings))
    tokenizer_dir = model_settings.get("text_tokenizer") or model_settings.get("processor")
    text_tokenizer = _load_text_tokenizer(tokenizer_dir) if tokenizer_dir else None
    collator = build_collator(config, masking_settings, text_tokenizer)
    eval_collator = None
    validate_samples = data_settings.get("validate_samples", DEFAULT_VALIDATE_SAMPLES)

    if mixture:
        train_dataset, collator, eval_collator = _mixture_for_training(
            data_settings, config, masking_settings, text_tokenizer, args, validate_samples)
    elif train_dataset is None:
        if not data_settings.get("train"):
            raise ValueError("data.train is not set: give the path of a corpus saved with datasets.save_to_disk.")
        train_dataset = load_corpus(data_settings["train"], data_settings.get("train_split", "train"), "train")
    if eval_dataset is None and data_settings.get("eval"):
        eval_dataset = load_corpus(data_settings["eval"], data_settings.get("eval_split", "validation"), "eval")
    if not mixture:
        train_dataset = prepare_dataset(
            train_dataset, config, collator, "train", int(data_settings.get("repeat_sampling", 1)), validate_samples,
            data_settings.get("max_train_samples"),
        )
    if eval_dataset is not None:
        eval_dataset = prepare_dataset(
            eval_dataset, config, eval_collator or collator, "eval", 1, validate_samples, data_settings.get("max_eval_samples")
        )
    elif args.eval_strategy != "no":
        raise ValueError(f"training.eval_strategy is {args.eval_strategy!r} but data.eval is not set.")

    if model is None:
        # Seed before the model is built, as transformers' example scripts do: a fresh init is then the same
        # in every run with the same training.seed (the Trainer itself seeds only after the model exists).
        set_seed(args.seed)
        model = build_model(model_settings, config)
    warmup = frozen_warmup_callback(model, model_settings, args)
    return FourMTrainer(
        model=model, args=args, data_collator=collator, train_dataset=train_dataset, eval_dataset=eval_dataset,
        callbacks=[warmup] if warmup is not None else None, eval_data_collator=eval_collator,
    )


def _mixture_for_training(data_settings, config, masking_settings, text_tokenizer, args, validate_samples):
    """``(stream, MixtureCollator, eval collator)`` of a ``data.train`` list (``mixture_settings``)."""
    for key in MIXTURE_ONLY_DATA_KEYS:
        if data_settings.get(key) is not None:
            raise ValueError(f"data.{key} does not apply to a mixture (data.train is a list or a streamed source); "
                             "a mixture streams without end, weighted per dataset.")
    if args.max_steps is None or args.max_steps <= 0:
        raise ValueError("data.train is a mixture, which streams without end: set training.max_steps.")
    entries = parse_datasets(data_settings["train"], config, MASKING_KEYS)
    seed = args.data_seed if args.data_seed is not None else args.seed
    train_dataset, collator = build_mixture(
        entries, config, dict(masking_settings), lambda masking: build_collator(config, masking, text_tokenizer),
        seed, args.world_size, validate_samples,
    )
    eval_collator = build_collator(config, masking_settings, text_tokenizer)  # its own epoch: fixed masks
    return train_dataset, collator, eval_collator




__all__ = [
    "RepeatedSampleDataset",
    "apply_overrides",
    "build_collator",
    "build_model",
    "build_model_config",
    "build_trainer",
    "build_training_arguments",
    "check_corpus",
    "load_settings",
    "prepare_dataset",
    "random_corpus",
    "validate_settings",
]
