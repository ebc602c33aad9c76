"""What a labeller is (``Labeller``), and the checks and loading every model-backed labeller shares."""

from __future__ import annotations


def _mapping_names(*names: str) -> dict:
    from transformers.models.auto import modeling_auto

    merged = {}
    for name in names:
        merged.update(getattr(modeling_auto, name, {}))
    return merged


def check_model_task(model_id: str, modality: str, task: str, mapping_names: tuple[str, ...]):
    """Load the config of ``model_id`` and check it is a model for ``task``; returns the config.

    The check uses the saved ``architectures`` when there are any (a SegFormer saved as an image
    classifier is not a segmentation model, even though its model type has a segmentation head),
    else the model type. Raises ValueError naming the model, what it is and the task expected.
    """
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(model_id)
    except (OSError, ValueError, KeyError) as error:
        raise ValueError(f"{modality}: cannot load model {model_id!r} (expected a local folder or Hub id of a '{task}' model): {error}") from error
    supported = _mapping_names(*mapping_names)
    architectures = list(getattr(config, "architectures", None) or [])
    if architectures:
        ok = any(arch in supported.values() for arch in architectures)
        what = f"a {', '.join(architectures)}"
    else:
        ok = config.model_type in supported
        what = f"a {config.model_type!r} model"
    if not ok:
        examples = ", ".join(sorted(set(supported.values()))[:8])
        raise ValueError(f"{modality}: model {model_id!r} is {what}, not a model for the '{task}' task expected here (e.g. {examples}, ...)")
    return config


def _pipeline(task: str, model_id: str, device: str):
    from transformers import pipeline

    return pipeline(task, model=model_id, device=device)


ORIGINAL_SIZE = "original_size"
"""Key of ``labels`` holding each image's (width, height) before the resize and crop (never a column)."""


class Labeller:
    """What ``pseudo_label_dataset`` needs from a labeller (subclass it for a custom model).

    ``columns``: the column names it writes. ``features(size)``: their ``datasets`` features.
    ``label(images, labels)``: ``images`` is a list of ``size`` x ``size`` RGB PIL images, ``labels``
    ``{name: [value per image]}``: the input dataset's other columns, the columns of earlier labellers for
    the same images (which replace same-named input columns) and ``ORIGINAL_SIZE``; returns
    ``{column: [value per image]}``. ``requires``: columns that must exist before it runs (written by an
    earlier labeller or an input column); ``pseudo_label_dataset`` checks them before labelling anything.
    Keys starting with ``_`` are private: handed to later labellers of the same batch, never stored
    (``_sources`` holds the images' ``source`` values). ``input_columns``: input-dataset columns it reads and
    rewrites (validated pass-through), which then need no ``replace_existing``; the run fails early when the
    input lacks one.
    ``metadata()``: JSON-able description stored with the dataset (model id, scaling, classes).
    """

    columns: tuple[str, ...] = ()
    requires: tuple[str, ...] = ()

    def features(self, size: int) -> dict:
        raise NotImplementedError

    def label(self, images: list, labels: dict) -> dict:
        raise NotImplementedError

    def metadata(self) -> dict:
        return {}
