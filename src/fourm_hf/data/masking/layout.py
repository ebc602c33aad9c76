"""Where each modality's tokens live in a training sample and in a packed batch (the model's layout).

Every layout the model runs is laid out here: the 4M-7 one (one 14x14 grid), and the 4M-21 and
4M-7-SR ones, whose modalities have their own geometry:

* an image modality (token ids or raw pixels) fills its own grid, ``config.modality_grid_size(name)``
  squared cells in raster order: 14x14 at patch 16, 16x16 for DINOv2 / ImageBind at patch 14, 28x28
  for the ``@448`` domains, 4x4 = 16 cells for a global embedding (learned positions, indices 0..15);
* a sequence holds up to ``max_length`` ids, positions 0..N-1;
* a ``sequence_embedding`` (``t5_caption``) holds up to ``max_length`` vectors of ``num_channels``
  floats, input only; the encoder reads rows of it, positions 0..N-1 along the visible rows.

Fields of a sample (and corpus columns): a token modality's field is its name; the first pixels
input reads ``pixel_values`` (as in every 4M-7 corpus) and any further pixels input (``rgb@448``)
its own name; a sequence embedding its name.

In the packed batch, continuous inputs travel as ``pixel_values`` when the model has one pixels
input and nothing else continuous (the 4M-7 layout), otherwise as ``continuous_inputs``
(``{"rgb": (B, 3, 224, 224), "rgb@448": (B, 3, 448, 448), "t5_caption": (B, 77, 4096)}``), which
``FourMModel.forward`` takes.
"""

from __future__ import annotations

from dataclasses import dataclass

from ...modalities import MODALITY_KINDS
from .ids import PIXEL_VALUES_FIELD

CONTINUOUS_INPUTS_FIELD = "continuous_inputs"


@dataclass(frozen=True)
class ModalityLayout:
    """One modality of a model as the batch makers see it.

    ``num_positions`` is the size of its position range: grid cells for an image modality, the
    maximum length for a sequence or sequence embedding. ``image_size`` is set for pixels inputs.
    """

    name: str
    modality_id: int
    kind: str
    field: str
    num_positions: int
    is_input: bool
    is_output: bool
    vocab_size: int | None = None
    num_channels: int | None = None
    image_size: int | None = None

    @property
    def is_grid(self) -> bool:
        return self.kind in ("image_tokens", "pixels")

    @property
    def is_span_masked(self) -> bool:
        """Sequences and sequence embeddings are span-masked; grids are masked cell by cell."""
        return self.kind in ("sequence", "sequence_embedding")

    @property
    def can_be_target(self) -> bool:
        return self.is_output and self.kind in ("image_tokens", "sequence")


def sample_field(config, name: str) -> str:
    """The sample field / corpus column of modality ``name`` (see the module docstring)."""
    spec = config.modality(name)
    if spec.kind == "pixels":
        pixel_inputs = [n for n in config.modality_names if config.modality(n).kind == "pixels"]
        return PIXEL_VALUES_FIELD if name == pixel_inputs[0] else name
    return name


def uses_continuous_inputs_field(config) -> bool:
    """True when dense inputs go in ``continuous_inputs`` rather than in ``pixel_values``."""
    continuous = [n for n in config.modality_names if config.modality(n).is_continuous]
    return len(continuous) > 1 or any(config.modality(n).kind == "sequence_embedding" for n in continuous)


def modality_layouts(config) -> list[ModalityLayout]:
    """The layout of every modality of ``config``, in modality-id order."""
    check_trainable_layout(config, "the masking layout")
    layouts = []
    for index, name in enumerate(config.modality_names):
        spec = config.modality(name)
        layouts.append(ModalityLayout(
            name=name,
            modality_id=index,
            kind=spec.kind,
            field=sample_field(config, name),
            num_positions=config.num_positions(name),
            is_input=name in config.input_modalities,
            is_output=name in config.output_modalities,
            vocab_size=spec.vocab_size,
            num_channels=spec.num_channels,
            image_size=config.modality_image_size(name) if spec.kind == "pixels" else None,
        ))
    return layouts


def unsupported_layout(config) -> dict[str, str]:
    """``{modality: why}`` for each modality of ``config`` the model cannot be trained on.

    The model runs every registered kind on its own geometry; what remains refused is a modality of
    an unknown kind and a field name clash (a modality named like the first pixels input's field).
    """
    problems = {}
    for name in config.modality_names:
        spec = config.modality(name)
        if spec.kind not in MODALITY_KINDS:
            problems[name] = f"kind {spec.kind!r} is not one of {MODALITY_KINDS}"
    fields = [sample_field(config, name) for name in config.modality_names]
    for name, field in zip(config.modality_names, fields):
        if fields.count(field) > 1:
            problems[name] = f"its field {field!r} is also the field of another modality"
    return problems


def check_trainable_layout(config, what: str) -> None:
    """Raise a ValueError naming each modality ``what`` cannot lay out in ``config``."""
    problems = unsupported_layout(config)
    if problems:
        listed = "; ".join(f"{name}: {why}" for name, why in problems.items())
        raise ValueError(f"{what}: this model layout cannot be trained ({listed}).")


__all__ = [
    "CONTINUOUS_INPUTS_FIELD",
    "ModalityLayout",
    "check_trainable_layout",
    "modality_layouts",
    "sample_field",
    "unsupported_layout",
    "uses_continuous_inputs_field",
]
