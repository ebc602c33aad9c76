"""The reference's masking mixtures: its alphas YAML files, read as they are, and two of them as presets.

An alphas file describes K Dirichlet *settings*. Per modality, under the reference's domain names
(``rgb@224``, ``tok_depth@224``, ``caption``, ``t5_caption``, ...), it lists K ``input_alphas``, K
``target_alphas`` and optionally K ``keep`` modes (``random`` / ``all`` / ``binary``; absent:
``random``). ``sampling_weights`` (K numbers) weight the settings; without it they are equally
likely. The modality mapping sits under a top-level ``alphas_mixture:`` key or at the top level::

    sampling_weights: [1.0, 1.0]
    alphas_mixture:
      rgb@224: {input_alphas: [1000.0, 0.5], target_alphas: [0.0, 0.0]}
      caption: {input_alphas: [0.0, 0.5], target_alphas: [0.5, 0.5], keep: [random, all]}

Reading one for a model (:func:`mixture_from_alphas`):

* names map to the model's modalities as the converter maps them (``tok_rgb@224`` is ``tok_rgb``
  on a 224 px model, ``tok_rgb@448`` stays ``tok_rgb@448``);
* a modality no registry knows is an error; one the model does not have is skipped (the reference
  skips domains its dataset lacks) and listed in ``MixtureReport.skipped``;
* target alphas of a modality the model only reads (``rgb``, ``t5_caption``, or an input-only
  token modality) are dropped: it cannot be a target (the reference loses that share of the
  budget), likewise input alphas of an output-only modality; ``MixtureReport.dropped`` lists them;
* negative or non-finite alphas, K mismatches, unknown keep modes, negative weights, weights
  summing to zero, and a setting left with no input modality are errors naming the file, the
  modality and the setting. A setting of weight 0 is never drawn and is left out.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ...ml4m.reference_names import modality_spec_for_domain, reference_domain_to_modality
from .strategies import KEEP_MODES, MASKING_PRESETS, DirichletMasking, masking_preset

ALPHAS_KEY, WEIGHTS_KEY = "alphas_mixture", "sampling_weights"
ENTRY_KEYS = ("input_alphas", "target_alphas", "keep")

# The numbers of the reference's mixtures (its data/alphas_mixture/*.yaml). Settings of the 4M-21 one:
# all->all at alpha 0.01 / 0.1 / 1 / 10, RGB->all, caption-biased, T5-caption-biased.
_ALL2ALL = [0.01, 0.1, 1.0, 10.0]
_MOD21_OTHER = {"input_alphas": _ALL2ALL + [0.0, 0.05, 0.05], "target_alphas": _ALL2ALL + [0.5, 0.5, 0.5]}
_MOD7_OTHER = {"input_alphas": _ALL2ALL + [0.0, 0.05], "target_alphas": _ALL2ALL + [0.5, 0.5]}
REFERENCE_MIXTURES = {
    "mix_mod21_all2allmix_rgb2all_capT5bias": {
        WEIGHTS_KEY: [1.0, 1.0, 1.0, 1.0, 1.0, 0.5, 0.5],
        ALPHAS_KEY: {
            "rgb@224": {"input_alphas": _ALL2ALL + [1000.0, 0.05, 0.05], "target_alphas": [0.0] * 7},
            "caption": {"input_alphas": _ALL2ALL + [0.0, 5.0, 0.0], "target_alphas": _ALL2ALL + [0.5, 0.0, 0.5],
                        "keep": ["random"] * 5 + ["all", "random"]},
            "t5_caption": {"input_alphas": _ALL2ALL + [0.0, 0.0, 5.0], "target_alphas": _ALL2ALL + [0.5, 0.5, 0.0],
                           "keep": ["random"] * 6 + ["all"]},
            **{name: dict(_MOD21_OTHER) for name in (
                "det", "tok_rgb@224", "tok_normal@224", "tok_depth@224", "tok_semseg@224", "tok_clip@224",
                "human_poses", "tok_dinov2@224", "tok_dinov2_global", "tok_imagebind@224", "tok_imagebind_global",
                "tok_canny_edge@224", "tok_sam_edge@224", "metadata", "sam_instance")},
            "color_palette": {**_MOD21_OTHER, "keep": ["binary"] * 7},
        },
    },
    "mix_mod7_all2allmix_rgb2all_capbias": {
        WEIGHTS_KEY: [1.0] * 6,
        ALPHAS_KEY: {
            "rgb@224": {"input_alphas": _ALL2ALL + [1000.0, 0.05], "target_alphas": [0.0] * 6},
            "caption": {"input_alphas": _ALL2ALL + [0.0, 5.0], "target_alphas": _ALL2ALL + [0.5, 0.5],
                        "keep": ["random"] * 5 + ["all"]},
            **{name: dict(_MOD7_OTHER) for name in (
                "det", "tok_rgb@224", "tok_normal@224", "tok_depth@224", "tok_semseg@224", "tok_clip@224")},
        },
    },
}


@dataclass
class MixtureReport:
    """What reading a mixture for a model left out: skipped modalities, dropped alphas, zero-weight settings."""

    skipped: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    unused_settings: list[int] = field(default_factory=list)


def read_alphas_file(path: str | os.PathLike) -> dict:
    """The mapping of an alphas YAML file (``.yaml`` may be left off, as the reference's configs do)."""
    path = Path(path)
    if not path.is_file() and path.with_suffix(".yaml").is_file():
        path = path.with_suffix(".yaml")
    if not path.is_file():
        raise ValueError(f"Masking strategy file {str(path)!r} does not exist.")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise ValueError(f"Masking strategy file {str(path)!r} is not valid YAML: {error}") from None
    if not isinstance(data, Mapping):
        raise ValueError(f"Masking strategy file {str(path)!r} must hold a mapping of modalities to alphas.")
    return dict(data)


def _modality_name(domain: str, config, where: str) -> str | None:
    """The model's name of a reference domain; None when the model lacks it; ValueError when no registry knows it."""
    name = reference_domain_to_modality(domain, config.image_size)
    for candidate in (name, domain):
        if candidate in config.modality_specs:
            return candidate
    try:
        modality_spec_for_domain(domain, config.image_size)  # registered, or a registered one at another size
    except ValueError:
        raise ValueError(
            f"{where} is not a modality any registry knows (registered, or a registered one at another "
            "resolution); register it with fourm_hf.register_modality or remove it from the file."
        ) from None
    return None


def _numbers(values, length: int | None, where: str) -> list[float]:
    values = [values] if isinstance(values, (int, float)) and not isinstance(values, bool) else values
    if not isinstance(values, Sequence) or isinstance(values, str):
        raise ValueError(f"{where} must be a list of numbers, got {values!r}.")
    numbers = []
    for index, value in enumerate(values):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise ValueError(f"{where}[{index}] must be a finite number >= 0, got {value!r}.")
        numbers.append(float(value))
    if length is not None and len(numbers) == 1 and length > 1:
        numbers = numbers * length
    if length is not None and len(numbers) != length:
        raise ValueError(f"{where} has {len(numbers)} values, expected one per setting ({length}).")
    return numbers


def _setting_count(alphas: Mapping, weights) -> int:
    lengths = {len(v) for entry in alphas.values() if isinstance(entry, Mapping)
               for key, v in entry.items() if key in ENTRY_KEYS and isinstance(v, list)}
    if weights is not None and isinstance(weights, list):
        lengths.add(len(weights))
    lengths.discard(1)
    return max(lengths) if lengths else 1


def mixture_from_alphas(data: Mapping, config, source: str = "alphas") -> tuple[list[DirichletMasking], MixtureReport]:
    """The :class:`DirichletMasking` settings of an alphas mapping, for the modalities of ``config``.

    Returns ``(components, report)``; see the module docstring for the rules and errors.
    """
    if not isinstance(data, Mapping):
        raise ValueError(f"{source}: expected a mapping of modalities to alphas, got {type(data).__name__}.")
    weights = data.get(WEIGHTS_KEY)
    alphas = data[ALPHAS_KEY] if ALPHAS_KEY in data else {k: v for k, v in data.items() if k != WEIGHTS_KEY}
    if not isinstance(alphas, Mapping) or not alphas:
        raise ValueError(f"{source}: {ALPHAS_KEY} must be a non-empty mapping of modality names to alphas.")
    count = _setting_count(alphas, weights)
    weights = [1.0] * count if weights is None else _numbers(weights, count, f"{source}: {WEIGHTS_KEY}")
    if sum(weights) <= 0:
        raise ValueError(f"{source}: {WEIGHTS_KEY} {weights} sum to zero; at least one setting must be drawable.")

    report = MixtureReport()
    inputs = {k: {} for k in range(count)}
    targets = {k: {} for k in range(count)}
    keeps = {k: {} for k in range(count)}
    for domain, entry in alphas.items():
        where = f"{source}: modality {domain!r}"
        if not isinstance(entry, Mapping) or "input_alphas" not in entry or "target_alphas" not in entry:
            raise ValueError(f"{where} must be a mapping with input_alphas and target_alphas (and optionally keep).")
        unknown_keys = sorted(set(entry) - set(ENTRY_KEYS))
        if unknown_keys:
            raise ValueError(f"{where} has unknown key(s) {unknown_keys}; expected {list(ENTRY_KEYS)}.")
        input_alphas = _numbers(entry["input_alphas"], count, f"{where} input_alphas")
        target_alphas = _numbers(entry["target_alphas"], count, f"{where} target_alphas")
        keep = entry.get("keep") or ["random"] * count
        keep = keep * count if isinstance(keep, list) and len(keep) == 1 else keep
        if not isinstance(keep, list) or len(keep) != count or any(mode not in KEEP_MODES for mode in keep):
            raise ValueError(f"{where} keep must list one of {KEEP_MODES} per setting ({count}), got {keep!r}.")
        name = _modality_name(str(domain), config, where)
        if name is None:
            report.skipped.append(str(domain))
            continue
        spec = config.modality(name)
        reads, predicts = name in config.input_modalities, name in config.output_modalities and not spec.is_continuous
        if any(target_alphas) and not predicts:
            report.dropped.append(f"{name}: target_alphas (not an output of this model)")
        if any(input_alphas) and not reads:
            report.dropped.append(f"{name}: input_alphas (not an input of this model)")
        for k in range(count):
            if reads:
                inputs[k][name] = input_alphas[k]
                keeps[k][name] = keep[k]
            if predicts:
                targets[k][name] = target_alphas[k]

    components = []
    for k in range(count):
        if weights[k] == 0:
            report.unused_settings.append(k)
            continue
        if not any(alpha > 0 for alpha in inputs[k].values()):
            raise ValueError(
                f"{source}: setting {k} gives no modality of this model an input alpha > 0 (skipped: "
                f"{report.skipped}); its samples would have an empty encoder."
            )
        components.append(DirichletMasking(inputs[k], targets[k], weight=weights[k], name=f"{source}[{k}]", keep=keeps[k]))
    return components, report


def resolve_strategy(strategy, config) -> list[DirichletMasking]:
    """Masking components from a preset name, a reference mixture name, an alphas file, or components.

    ``strategy``: one of :data:`MASKING_PRESETS`, a key of :data:`REFERENCE_MIXTURES`, the path of an
    alphas YAML file, a mapping in that file's format, one :class:`DirichletMasking` or a list of them.
    """
    if isinstance(strategy, DirichletMasking):
        return [strategy]
    if isinstance(strategy, Mapping):
        return mixture_from_alphas(strategy, config, "masking strategy")[0]
    if isinstance(strategy, os.PathLike) or (isinstance(strategy, str) and strategy.endswith((".yaml", ".yml", "/"))):
        return mixture_from_alphas(read_alphas_file(strategy), config, str(strategy))[0]
    if isinstance(strategy, str):
        if strategy in REFERENCE_MIXTURES:
            return mixture_from_alphas(REFERENCE_MIXTURES[strategy], config, strategy)[0]
        if strategy in MASKING_PRESETS:
            return masking_preset(strategy, config)
        if Path(strategy).is_file() or Path(strategy + ".yaml").is_file():
            return mixture_from_alphas(read_alphas_file(strategy), config, strategy)[0]
        raise ValueError(
            f"Unknown masking preset or strategy {strategy!r}; expected a preset ({sorted(MASKING_PRESETS)}), a reference "
            f"mixture ({sorted(REFERENCE_MIXTURES)}) or the path of an alphas YAML file."
        )
    components = list(strategy) if isinstance(strategy, Sequence) else []
    if not components or not all(isinstance(c, DirichletMasking) for c in components):
        raise TypeError(
            "strategy must be a preset or mixture name, an alphas file path, a DirichletMasking, or a non-empty list of them."
        )
    return components


__all__ = ["MixtureReport", "REFERENCE_MIXTURES", "mixture_from_alphas", "read_alphas_file", "resolve_strategy"]
