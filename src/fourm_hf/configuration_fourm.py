"""FourMConfig: sizes, modalities and training-objective settings of a 4M model."""

from __future__ import annotations

import math

from transformers import PreTrainedConfig

from .errors import WrongTypeError
from .modalities import ModalitySpec, get_modality, registered_modalities

# name -> (hidden_size, encoder layers, decoder layers); head dim 64 throughout (4M paper, Table 6).
SIZE_PRESETS = {
    "tiny": (384, 6, 6),
    "small": (512, 8, 8),
    "base": (768, 12, 12),
    "large": (1024, 24, 24),
    "xlarge": (2048, 24, 24),
}

FOURM7_INPUTS = ["rgb", "tok_rgb", "tok_depth", "tok_normal", "tok_semseg", "tok_clip", "caption", "det"]
FOURM7_OUTPUTS = ["tok_rgb", "tok_depth", "tok_normal", "tok_semseg", "tok_clip", "caption", "det"]
LOSS_AVERAGING = ("modality", "token")
# field -> smallest allowed value; each must be an int (a saved config holds ints, never "128" or 1.5)
POSITIVE_INT_FIELDS = {"hidden_size": 1, "num_encoder_layers": 1, "num_decoder_layers": 0, "num_attention_heads": 1,
                       "image_size": 1, "patch_size": 1, "input_budget": 1, "target_budget": 1}
POSITIVE_FLOAT_FIELDS = ("mlp_ratio", "layer_norm_eps", "initializer_range")
BOOL_FIELDS = ("share_modality_embeddings", "tie_output_embeddings")


def check_field_types(config) -> None:
    """Every size is an int >= its minimum, every ratio a finite float > 0, every switch a bool."""
    for field, low in POSITIVE_INT_FIELDS.items():
        value = getattr(config, field)
        if isinstance(value, bool) or not isinstance(value, int):
            raise WrongTypeError(f"FourMConfig.{field} must be an integer >= {low}, got {value!r} ({type(value).__name__}).")
        if value < low:
            raise ValueError(f"FourMConfig.{field} must be an integer >= {low}, got {value}.")
    for field in POSITIVE_FLOAT_FIELDS:
        value = getattr(config, field)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise WrongTypeError(f"FourMConfig.{field} must be a number > 0, got {value!r} ({type(value).__name__}).")
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"FourMConfig.{field} must be a finite number > 0, got {value}.")
    for field in BOOL_FIELDS:
        value = getattr(config, field)
        if not isinstance(value, bool):
            raise WrongTypeError(f"FourMConfig.{field} must be true or false, got {value!r} ({type(value).__name__}).")
    for field in ("input_modalities", "output_modalities"):
        names = getattr(config, field)
        if names is not None and (isinstance(names, str) or not all(isinstance(name, str) for name in names)):
            raise WrongTypeError(f"FourMConfig.{field} must be a list of modality names, got {names!r}.")


def _with_names(spec: dict) -> dict:
    """A saved spec from before specs carried their names (``public_name``, ``processor_argument``) takes
    them from the registry when its modality is registered; names it gives are kept."""
    name = spec.get("name")
    if name not in registered_modalities():
        return spec
    registered = get_modality(name)
    missing = {field: getattr(registered, field) for field in ("public_name", "processor_argument") if field not in spec}
    return {**spec, **missing}


class FourMConfig(PreTrainedConfig):
    r"""Configuration of a 4M encoder-decoder.

    Args:
        hidden_size: width D of every token vector.
        num_encoder_layers / num_decoder_layers: transformer blocks on each side.
        num_attention_heads: heads per attention layer (head dim = D / heads).
        mlp_ratio: the SwiGLU hidden width is ``int(2 * mlp_ratio * D / 3)``.
        layer_norm_eps: LayerNorm epsilon (LayerNorms have a scale and no bias).
        image_size / patch_size: the default geometry of the image modalities: a
            ``(image_size // patch_size)`` square grid; pixel inputs are cut into ``patch_size``
            patches. A modality's own ``ModalitySpec.image_size`` / ``patch_size`` override them.
        input_modalities / output_modalities: names of the modalities the encoder reads and the
            decoder predicts.
        modality_specs: resolved :class:`ModalitySpec` dicts for every modality used. Filled from
            the registry when omitted; entries given here override the registry (e.g. another
            vocab size), so a checkpoint is self-contained.
        input_budget / target_budget: default number of encoder / decoder tokens per sample.
        loss_averaging: ``"modality"`` (mean per modality, then mean over the output modalities,
            the 4M-7 setting) or ``"token"`` (mean over all target tokens).
        share_modality_embeddings: decoder uses the encoder's learned modality embedding (4M-7);
            4M-21 learns separate ones.
        tie_output_embeddings: the decoder's output projection of each modality is its token
            embedding table.
        initializer_range: std of the truncated-normal init of embeddings.
        is_encoder_decoder: ``True`` for the 4M encoder-decoder; by default ``num_decoder_layers > 0``,
            so a config without decoder layers describes an encoder-only model (the task heads).

    ``num_hidden_layers`` reads and writes ``num_encoder_layers`` (``attribute_map``).
    """

    model_type = "fourm"
    # transformers' generic names (T5 and BART map them the same way): the encoder's depth.
    attribute_map = {"num_hidden_layers": "num_encoder_layers"}

    hidden_size: int = 384
    num_encoder_layers: int = 6
    num_decoder_layers: int = 6
    num_attention_heads: int = 6
    mlp_ratio: float = 4.0
    layer_norm_eps: float = 1e-6
    image_size: int = 224
    patch_size: int = 16
    input_modalities: list[str] | None = None
    output_modalities: list[str] | None = None
    modality_specs: dict | None = None
    input_budget: int = 128
    target_budget: int = 128
    loss_averaging: str = "modality"
    share_modality_embeddings: bool = True
    tie_output_embeddings: bool = False
    initializer_range: float = 0.02
    is_encoder_decoder: bool | None = None

    def __post_init__(self, **kwargs):
        check_field_types(self)
        if self.is_encoder_decoder is None:
            self.is_encoder_decoder = self.num_decoder_layers > 0
        if self.input_modalities is None:
            self.input_modalities = list(FOURM7_INPUTS)
        if self.output_modalities is None:
            self.output_modalities = list(FOURM7_OUTPUTS)
        self.input_modalities = list(self.input_modalities)
        self.output_modalities = list(self.output_modalities)
        given = dict(self.modality_specs or {})
        specs = {}
        for name in dict.fromkeys(self.input_modalities + self.output_modalities):
            spec = given.get(name)
            if isinstance(spec, ModalitySpec):
                spec = spec.to_dict()
            specs[name] = ModalitySpec.from_dict(_with_names(spec)).to_dict() if spec is not None else get_modality(name).to_dict()
        self.modality_specs = specs
        if getattr(self, "auto_map", None) is None:
            # Saved folders carry the model code (see remote_code.py), so trust_remote_code=True works
            # without fourm_hf installed; with it installed, the registered classes are used.
            self.auto_map = {"AutoConfig": "configuration_fourm.FourMConfig", "AutoModel": "modeling_fourm.FourMModel"}
        super().__post_init__(**kwargs)
        self._check()

    def _check(self):
        if self.hidden_size % self.num_attention_heads != 0:
            raise ValueError(
                f"hidden_size ({self.hidden_size}) must be divisible by num_attention_heads ({self.num_attention_heads})."
            )
        if self.image_size % self.patch_size != 0:
            raise ValueError(f"image_size ({self.image_size}) must be a multiple of patch_size ({self.patch_size}).")
        if self.loss_averaging not in LOSS_AVERAGING:
            raise ValueError(f"loss_averaging must be one of {LOSS_AVERAGING}, got {self.loss_averaging!r}.")
        if not self.input_modalities or not self.output_modalities:
            raise ValueError("input_modalities and output_modalities must each name at least one modality.")
        for name in self.output_modalities:
            if self.modality(name).is_continuous:
                raise ValueError(
                    f"Modality {name!r} is a {self.modality(name).kind} modality and can only be an input, not an output."
                )
        for name in self.modality_names:
            spec = self.modality(name)
            if spec.is_image and self.modality_image_size(name) % self.modality_patch_size(name) != 0:
                raise ValueError(
                    f"Modality {name!r}: image_size {self.modality_image_size(name)} must be a multiple of "
                    f"patch_size {self.modality_patch_size(name)}."
                )
        for field in ("input_modalities", "output_modalities"):
            names = getattr(self, field)
            if len(set(names)) != len(names):
                raise ValueError(f"{field} lists a modality twice: {names}.")

    @classmethod
    def from_preset(cls, preset: str, **kwargs) -> "FourMConfig":
        """Config of a named size (tiny, small, base, large, xlarge); kwargs override anything."""
        if preset not in SIZE_PRESETS:
            raise ValueError(f"Unknown preset {preset!r}; expected one of {sorted(SIZE_PRESETS)}.")
        dim, enc, dec = SIZE_PRESETS[preset]
        sizes = dict(hidden_size=dim, num_encoder_layers=enc, num_decoder_layers=dec, num_attention_heads=dim // 64)
        sizes.update(kwargs)
        return cls(**sizes)

    # ---- derived quantities -------------------------------------------------------------------
    @property
    def modality_names(self) -> list[str]:
        """All modalities, inputs first then outputs-only: index i is modality id i in the model.

        Derived from the two lists, not from ``modality_specs`` (JSON may reorder a dict's keys).
        """
        return list(dict.fromkeys(self.input_modalities + self.output_modalities))

    def modality(self, name: str) -> ModalitySpec:
        if name not in self.modality_specs:
            raise ValueError(f"Modality {name!r} is not part of this model; it has {self.modality_names}.")
        return ModalitySpec.from_dict(self.modality_specs[name])

    def modality_id(self, name: str) -> int:
        self.modality(name)
        return self.modality_names.index(name)

    @property
    def grid_size(self) -> int:
        """Tokens per side of an image modality with the default geometry."""
        return self.image_size // self.patch_size

    def modality_image_size(self, name: str) -> int:
        """Pixels per side of an image modality (its own ``image_size`` or the model's)."""
        return self.modality(name).image_size or self.image_size

    def modality_patch_size(self, name: str) -> int:
        """Pixels per side of one token of an image modality (its own ``patch_size`` or the model's)."""
        return self.modality(name).patch_size or self.patch_size

    def modality_grid_size(self, name: str) -> int:
        """Tokens per side of an image modality: 14 for 224 px / patch 16, 16 for patch 14, 28 at 448 px."""
        return self.modality_image_size(name) // self.modality_patch_size(name)

    def num_positions(self, name: str) -> int:
        """Size of the position table of a modality: grid cells for images, max_length for sequences."""
        spec = self.modality(name)
        return spec.max_length if spec.has_1d_positions else self.modality_grid_size(name) ** 2

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def intermediate_size(self) -> int:
        return int(2 * self.mlp_ratio * self.hidden_size / 3)


__all__ = ["FourMConfig", "SIZE_PRESETS"]
