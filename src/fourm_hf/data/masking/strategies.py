"""Masking strategies: one symmetric Dirichlet over the modalities, or a weighted mixture of them (presets)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from ...configuration_fourm import FourMConfig


KEEP_MODES = ("random", "all", "binary")


@dataclass(frozen=True)
class DirichletMasking:
    """One symmetric-Dirichlet component of a masking strategy.

    Args:
        input_alphas: modality name -> Dirichlet concentration for the input budget. A modality
            not listed (or with alpha 0) never receives input tokens in this component. Small
            alphas (< 1) concentrate the budget on few modalities; a huge alpha (e.g. 1000 for
            RGB) takes almost all of it.
        target_alphas: the same for the target budget (pixel modalities must be 0: they are
            inputs only).
        weight: relative probability of this component in a mixture.
        name: label used in reports and errors.
        keep: modality name -> keep mode of a sequence's span masking when it has input tokens
            (the reference's ``keep``): ``"random"`` (keep probability ~ U(0, 1), the default),
            ``"all"`` (keep probability 1: the whole sequence is input) or ``"binary"`` (0 or 1,
            each with probability 1/2). Image modalities ignore it.
    """

    input_alphas: Mapping[str, float]
    target_alphas: Mapping[str, float]
    weight: float = 1.0
    name: str = "dirichlet"
    keep: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self):
        for field_name in ("input_alphas", "target_alphas"):
            for modality, alpha in getattr(self, field_name).items():
                if not np.isfinite(alpha) or alpha < 0:
                    raise ValueError(
                        f"Masking component {self.name!r}: {field_name}[{modality!r}] must be a finite "
                        f"number >= 0, got {alpha!r}."
                    )
        if not np.isfinite(self.weight) or self.weight <= 0:
            raise ValueError(f"Masking component {self.name!r}: weight must be > 0, got {self.weight!r}.")
        for modality, mode in self.keep.items():
            if mode not in KEEP_MODES:
                raise ValueError(
                    f"Masking component {self.name!r}: keep[{modality!r}] must be one of {KEEP_MODES}, got {mode!r}."
                )


def _alphas(names: Sequence[str], value: float, **overrides: float) -> dict[str, float]:
    alphas = {name: value for name in names}
    alphas.update({name: alpha for name, alpha in overrides.items() if name in alphas})
    return alphas


def masking_preset(name: str, config: FourMConfig) -> list[DirichletMasking]:
    """Named masking strategies, resolved for the modalities of ``config``.

    * ``"uniform"``: one Dirichlet with alpha 1 on every input and output modality.
    * ``"all2all"``: one Dirichlet with alpha 0.5 everywhere (the 4M all->all setting).
    * ``"rgb2all"``: inputs are only the RGB pixels (alpha 1000, others 0), targets alpha 0.5.
    * ``"4m7"``: the 4M-7 training mixture, half ``rgb2all`` and half ``all2all``.
    * ``"4m7_caption"``: a caption-biased mixture, one third each of ``rgb2all``, caption->all
      (caption input alpha 1000, others 0; targets 0.5) and ``all2all``.

    Pixel modalities always get target alpha 0. ``rgb2all`` needs a pixels modality named
    ``"rgb"`` (or, failing that, ``tok_rgb``); caption->all needs ``"caption"``. As its inputs are
    RGB only, an ``rgb2all`` sample has at most ``grid_size**2`` input tokens: on a grid smaller
    than the input budget (8x8 = 64 < 128) the rest of its encoder row is padding.
    """
    inputs, outputs = list(config.input_modalities), list(config.output_modalities)

    def anchored(anchor: str, label: str, weight: float) -> DirichletMasking:
        if anchor not in inputs:
            raise ValueError(
                f"Masking preset {name!r} needs {anchor!r} among config.input_modalities, got {inputs}."
            )
        return DirichletMasking(
            input_alphas=_alphas(inputs, 0.0, **{anchor: 1000.0}),
            target_alphas=_alphas(outputs, 0.5),
            weight=weight,
            name=label,
        )

    def rgb_anchor() -> str:
        return "rgb" if "rgb" in inputs else "tok_rgb"

    all2all = DirichletMasking(_alphas(inputs, 0.5), _alphas(outputs, 0.5), weight=1.0, name="all2all")
    if name == "uniform":
        return [DirichletMasking(_alphas(inputs, 1.0), _alphas(outputs, 1.0), name="uniform")]
    if name == "all2all":
        return [all2all]
    if name == "rgb2all":
        return [anchored(rgb_anchor(), "rgb2all", 1.0)]
    if name == "4m7":
        return [anchored(rgb_anchor(), "rgb2all", 0.5), replace(all2all, weight=0.5)]
    if name == "4m7_caption":
        return [
            anchored(rgb_anchor(), "rgb2all", 1.0),
            anchored("caption", "caption2all", 1.0),
            all2all,
        ]
    raise ValueError(f"Unknown masking preset {name!r}; expected one of {sorted(MASKING_PRESETS)}.")


MASKING_PRESETS = ("uniform", "all2all", "rgb2all", "4m7", "4m7_caption")
