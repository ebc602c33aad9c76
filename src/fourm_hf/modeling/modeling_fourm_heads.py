"""Task heads on the 4M encoder, for transfer learning with ``transformers.Trainer``.

All heads read raw pixels (the config's ``pixels`` input modality, ``rgb`` in 4M-7) as the full
``grid_size x grid_size`` patch grid, run only the encoder, and put a small head on its output:

* :class:`FourMForImageClassification`: mean over the patch features -> LayerNorm -> linear ->
  ``num_labels`` logits; the loss follows ``config.problem_type`` as transformers'
  ``*ForSequenceClassification`` do (``"regression"``: MSE, ``"single_label_classification"``:
  cross-entropy, ``"multi_label_classification"``: BCE with logits; inferred from ``num_labels``
  and the labels' dtype when unset).
* :class:`FourMForDepthEstimation`: each patch feature -> linear -> a ``patch_size x patch_size``
  block of log-depth values (pixel shuffle back to full resolution); L1 or scale-invariant log
  loss over the pixels with a valid (positive, finite) depth.
* :class:`FourMForSemanticSegmentation`: the same per-patch head with ``num_labels`` channels;
  per-pixel cross-entropy, ``semantic_loss_ignore_index`` (255) ignored.

The trunk is :class:`FourMEncoderTrunk`: the pixel embedding, the encoder blocks and the encoder
norm under the same parameter names as in :class:`FourMModel`, so
``FourMForImageClassification.from_pretrained(fourm_folder, num_labels=10)`` takes the trunk from a
pretrained 4M checkpoint (the decoder and the token embeddings are not loaded) and initialises the
head. B = batch, C = channels, H = W = ``image_size``, N = ``grid_size**2`` patches, D = hidden size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers.modeling_outputs import BaseModelOutput, DepthEstimatorOutput, ImageClassifierOutput, SemanticSegmenterOutput

from ..configuration_fourm import FourMConfig
from .embeddings import PatchEncoderEmbedding, patchify
from .layers import EncoderBlock, layer_norm, run_encoder_blocks
from .modeling_fourm import FourMPreTrainedModel, resolve_output_flags, with_encoder_decoder
from .validation import check_extra_kwargs

HEADS_MODULE_NAME = "modeling_fourm_heads"
DEPTH_LOSSES = ("l1", "silog")
DEFAULT_SEGMENTATION_IGNORE_INDEX = 255
PROBLEM_TYPES = ("regression", "single_label_classification", "multi_label_classification")


def pixel_modality(config: FourMConfig) -> str:
    """Name of the config's raw-pixel input modality (the heads' input)."""
    names = [name for name in config.input_modalities if config.modality(name).kind == "pixels"]
    if len(names) != 1:
        raise ValueError(
            f"FourM task heads read raw pixels: config.input_modalities must contain exactly one 'pixels' "
            f"modality, got {names} among {config.input_modalities}."
        )
    return names[0]


class FourMEncoderTrunk(FourMPreTrainedModel):
    """The encoder of :class:`FourMModel` over all patches of an image (no masking, no decoder).

    Parameter names match ``FourMModel`` (``encoder_embeddings.<pixels>.*``, ``encoder.*``,
    ``encoder_norm.*``), so its weights load from a 4M checkpoint; its output equals
    ``FourMModel.get_encoder_features`` on the full patch grid of that modality. It is the heads'
    ``base_model`` (a ``PreTrainedModel``: ``head.base_model.save_pretrained`` works).
    """

    _keys_to_ignore_on_load_unexpected = [
        r"^decoder", r"^mask_token", r"^encoder_embeddings\.\w+\.(token_emb|mod_emb)",
    ]

    def __init__(self, config: FourMConfig):
        config = with_encoder_decoder(config, False)
        super().__init__(config)
        self.pixel_modality = pixel_modality(config)
        self.encoder_embeddings = nn.ModuleDict(
            {self.pixel_modality: PatchEncoderEmbedding(config, config.modality(self.pixel_modality))}
        )
        self.encoder = nn.ModuleList([EncoderBlock(config) for _ in range(config.num_encoder_layers)])
        self.encoder_norm = layer_norm(config)
        self.post_init()

    def check_pixel_values(self, pixel_values: torch.Tensor) -> None:
        channels = self.config.modality(self.pixel_modality).num_channels
        size = self.config.image_size
        if not isinstance(pixel_values, torch.Tensor) or not pixel_values.dtype.is_floating_point:
            raise ValueError(
                f"pixel_values (modality {self.pixel_modality!r}) must be a floating point tensor, "
                f"got {getattr(pixel_values, 'dtype', type(pixel_values).__name__)}."
            )
        if pixel_values.ndim != 4 or tuple(pixel_values.shape[1:]) != (channels, size, size):
            raise ValueError(
                f"pixel_values (modality {self.pixel_modality!r}) must have shape (batch, {channels}, {size}, {size}), "
                f"got {tuple(pixel_values.shape)}; resize/crop with the image processor first."
            )

    def forward(self, pixel_values: torch.Tensor, output_hidden_states: bool = False, output_attentions: bool = False):
        """pixel_values (B, C, H, W) -> ``BaseModelOutput``: patch features ``last_hidden_state`` (B, N, D),
        ``hidden_states`` (embeddings, then each block's output) and ``attentions`` (B, H, N, N) when asked for.
        """
        self.check_pixel_values(pixel_values)
        embedding = self.encoder_embeddings[self.pixel_modality]
        dtype = embedding.proj.weight.dtype
        hidden_states = embedding.proj(patchify(pixel_values.to(dtype), self.config.patch_size))
        hidden_states = hidden_states + embedding.pos_emb.to(dtype) + embedding.mod_emb
        hidden_states, all_states, all_attentions = run_encoder_blocks(  # every patch is real: no mask
            self.encoder, hidden_states, None, output_hidden_states, output_attentions
        )
        return BaseModelOutput(
            last_hidden_state=self.encoder_norm(hidden_states), hidden_states=all_states, attentions=all_attentions
        )


class FourMHeadPreTrainedModel(FourMPreTrainedModel):
    """Base of the task heads: the trunk lives under ``fourm`` (the base-model prefix).

    Saved folders carry this file next to the model code and an ``auto_map`` entry for the head's
    Auto class, so they also load with ``trust_remote_code=True`` where fourm_hf is not installed.
    """

    # A full 4M checkpoint also holds the decoder and the token-modality embeddings: not needed here.
    _keys_to_ignore_on_load_unexpected = [
        r"^(fourm\.)?decoder", r"^(fourm\.)?mask_token", r"^(fourm\.)?encoder_embeddings\.\w+\.(token_emb|mod_emb)",
    ]
    main_input_name = "pixel_values"
    auto_class_name: str | None = None  # the transformers Auto class this head registers with
    output_class: type | None = None  # the transformers ModelOutput the head returns

    def __init__(self, config: FourMConfig):
        config = with_encoder_decoder(config, False)  # the heads run the encoder only
        super().__init__(config)
        if self.auto_class_name is not None:
            config.auto_map = {**(config.auto_map or {}), self.auto_class_name: f"{HEADS_MODULE_NAME}.{type(self).__name__}"}

    def forward(
        self,
        pixel_values: torch.Tensor,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ):
        """pixel_values (B, C, H, W) [, labels] -> the head's output (see its ``head_output``).

        Every head runs the trunk the same way; ``hidden_states`` (embeddings, then each block) and
        ``attentions`` (B, heads, N, N) are the trunk's, filled when asked for (or by the config).
        """
        check_extra_kwargs(type(self).__name__, kwargs)
        output_hidden_states, output_attentions, return_dict = resolve_output_flags(
            self.config, output_hidden_states, output_attentions, return_dict
        )
        trunk = self.fourm(pixel_values, output_hidden_states, output_attentions)
        fields = self.head_output(trunk.last_hidden_state, labels)
        output = self.output_class(**fields, hidden_states=trunk.hidden_states, attentions=trunk.attentions)
        return output if return_dict else output.to_tuple()

    def head_output(self, features: torch.Tensor, labels: torch.Tensor | None) -> dict:
        """features (B, N, D) [, labels] -> ``{"loss": ..., <prediction field>: ...}`` of ``output_class``."""
        raise NotImplementedError


class FourMForImageClassification(FourMHeadPreTrainedModel):
    """4M encoder + mean pooling + linear classifier over ``config.num_labels`` classes."""

    auto_class_name = "AutoModelForImageClassification"
    output_class = ImageClassifierOutput

    def __init__(self, config: FourMConfig):
        super().__init__(config)
        self.fourm = FourMEncoderTrunk(self.config)
        self.pool_norm = layer_norm(config)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def head_output(self, features: torch.Tensor, labels: torch.Tensor | None) -> dict:
        """features (B, N, D) [, labels] -> logits (B, num_labels), loss.

        labels: (B,) int class ids (single label), (B, num_labels) float (multi-label, or regression
        targets), or (B,) float (regression with one label); see the module docstring.
        """
        logits = self.classifier(self.pool_norm(features.mean(dim=1)))
        loss = None if labels is None else self.classification_loss(logits, labels)
        return {"loss": loss, "logits": logits}

    def classification_loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Loss of ``config.problem_type`` (set here from num_labels and the labels' dtype when None)."""
        batch, num_labels = logits.shape
        if self.config.problem_type is None:
            if num_labels == 1:
                self.config.problem_type = "regression"
            elif labels.dtype in (torch.long, torch.int):
                self.config.problem_type = "single_label_classification"
            else:
                self.config.problem_type = "multi_label_classification"
        problem_type = self.config.problem_type
        if problem_type not in PROBLEM_TYPES:
            raise ValueError(f"config.problem_type must be one of {PROBLEM_TYPES} or None, got {problem_type!r}.")
        if problem_type == "single_label_classification":
            check_class_labels(labels, num_labels, "labels", expected_shape=(batch,))
            return F.cross_entropy(logits.float(), labels)
        expected = (batch,) if problem_type == "regression" and num_labels == 1 else (batch, num_labels)
        if not labels.dtype.is_floating_point and problem_type == "multi_label_classification":
            labels = labels.float()  # 0/1 integer targets are fine for BCE
        if not labels.dtype.is_floating_point or tuple(labels.shape) not in (expected, (batch, num_labels)):
            raise ValueError(
                f"{problem_type} labels must be a float tensor of shape {expected}, "
                f"got {labels.dtype} {tuple(labels.shape)}."
            )
        if problem_type == "regression":
            return F.mse_loss(logits.float().reshape(labels.shape), labels.float())
        return F.binary_cross_entropy_with_logits(logits.float(), labels.float())


class DensePatchHead(nn.Module):
    """Per-patch linear head: (B, N, D) features -> (B, K, H, W) maps, each patch predicting its p x p block."""

    def __init__(self, config: FourMConfig, out_channels: int):
        super().__init__()
        self.config = config
        self.out_channels = out_channels
        self.norm = layer_norm(config)
        self.proj = nn.Linear(config.hidden_size, out_channels * config.patch_size**2)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        batch = features.shape[0]
        grid, patch = self.config.grid_size, self.config.patch_size
        blocks = self.proj(self.norm(features))  # B, N, K*p*p
        blocks = blocks.reshape(batch, grid, grid, self.out_channels, patch, patch)
        return blocks.permute(0, 3, 1, 4, 2, 5).reshape(batch, self.out_channels, grid * patch, grid * patch)


class FourMForDepthEstimation(FourMHeadPreTrainedModel):
    """4M encoder + per-patch linear head -> depth map (B, H, W).

    The head predicts log-depth, so ``predicted_depth = exp(head)`` is positive and the head's
    scale suits scenes from centimetres to hundreds of metres. ``config.depth_loss``: ``"l1"``
    (default, on the depth) or ``"silog"`` (scale-invariant log loss of Eigen et al. 2014 with
    lambda ``config.silog_lambda``, default 0.5). Pixels whose label is not positive and finite get
    no loss.
    """

    auto_class_name = "AutoModelForDepthEstimation"
    output_class = DepthEstimatorOutput

    def __init__(self, config: FourMConfig):
        super().__init__(config)
        depth_loss = getattr(config, "depth_loss", "l1")
        if depth_loss not in DEPTH_LOSSES:
            raise ValueError(f"config.depth_loss must be one of {DEPTH_LOSSES}, got {depth_loss!r}.")
        self.fourm = FourMEncoderTrunk(self.config)
        self.head = DensePatchHead(config, out_channels=1)
        self.post_init()

    def head_output(self, features: torch.Tensor, labels: torch.Tensor | None) -> dict:
        """features (B, N, D) [, labels (B, H, W) depth] -> predicted_depth (B, H, W), loss."""
        log_depth = self.head(features)[:, 0]
        predicted_depth = log_depth.exp()
        loss = None
        if labels is not None:
            expected = (features.shape[0], self.config.image_size, self.config.image_size)
            if tuple(labels.shape) != expected or not labels.dtype.is_floating_point:
                raise ValueError(
                    f"Depth labels must be a float tensor of shape {expected} (batch, height, width), "
                    f"got {labels.dtype} {tuple(labels.shape)}."
                )
            valid = torch.isfinite(labels) & (labels > 0)
            if getattr(self.config, "depth_loss", "l1") == "silog":
                lam = getattr(self.config, "silog_lambda", 0.5)
                loss = scale_invariant_log_loss(log_depth.float(), labels.float(), valid, lam)
            else:
                loss = (predicted_depth.float() - labels.float()).abs()[valid].sum() / valid.sum().clamp(min=1)
        return {"loss": loss, "predicted_depth": predicted_depth}


class FourMForSemanticSegmentation(FourMHeadPreTrainedModel):
    """4M encoder + per-patch linear head -> per-pixel logits (B, num_labels, H, W)."""

    auto_class_name = "AutoModelForSemanticSegmentation"
    output_class = SemanticSegmenterOutput

    def __init__(self, config: FourMConfig):
        super().__init__(config)
        self.fourm = FourMEncoderTrunk(self.config)
        self.head = DensePatchHead(config, out_channels=config.num_labels)
        self.post_init()

    def head_output(self, features: torch.Tensor, labels: torch.Tensor | None) -> dict:
        """features (B, N, D) [, labels (B, H, W) int class ids] -> logits (B, num_labels, H, W), loss."""
        logits = self.head(features)
        loss = None
        if labels is not None:
            ignore_index = getattr(self.config, "semantic_loss_ignore_index", DEFAULT_SEGMENTATION_IGNORE_INDEX)
            size = self.config.image_size
            check_class_labels(labels, self.config.num_labels, "segmentation labels",
                               expected_shape=(features.shape[0], size, size), ignore_index=ignore_index)
            loss = F.cross_entropy(logits.float(), labels.long(), ignore_index=ignore_index)
        return {"loss": loss, "logits": logits}


def check_class_labels(labels, num_labels: int, field: str, expected_shape: tuple, ignore_index: int | None = None) -> None:
    """ValueError unless ``labels`` is an integer tensor of ``expected_shape`` with ids in [0, num_labels) (or ignore_index)."""
    if not isinstance(labels, torch.Tensor) or labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise ValueError(f"{field} must be an integer tensor, got {getattr(labels, 'dtype', type(labels).__name__)}.")
    if tuple(labels.shape) != tuple(expected_shape):
        raise ValueError(f"{field} must have shape {tuple(expected_shape)}, got {tuple(labels.shape)}.")
    real = labels if ignore_index is None else labels[labels != ignore_index]
    if real.numel() and (real.min() < 0 or real.max() >= num_labels):
        raise ValueError(
            f"{field} must lie in [0, {num_labels}) (config.num_labels = {num_labels})"
            + ("" if ignore_index is None else f" or equal the ignore index {ignore_index}")
            + f", got values in [{real.min().item()}, {real.max().item()}]."
        )


def scale_invariant_log_loss(log_prediction: torch.Tensor, target: torch.Tensor, valid: torch.Tensor, lam: float) -> torch.Tensor:
    """Eigen et al. (2014): ``mean(d^2) - lam * mean(d)^2`` with ``d = log pred - log target`` over valid pixels, per image.

    log_prediction, target (B, H, W); valid (B, H, W) bool. Images without valid pixels add 0.
    """
    diff = torch.where(valid, log_prediction - target.clamp(min=1e-6).log(), torch.zeros_like(log_prediction))
    count = valid.flatten(1).sum(1).clamp(min=1).to(diff.dtype)
    mean = diff.flatten(1).sum(1) / count
    mean_square = diff.pow(2).flatten(1).sum(1) / count
    return (mean_square - lam * mean.pow(2)).mean()


__all__ = [
    "FourMEncoderTrunk",
    "FourMForImageClassification",
    "FourMForDepthEstimation",
    "FourMForSemanticSegmentation",
    "scale_invariant_log_loss",
]
