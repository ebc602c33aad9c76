"""Fine-tuning a trained 4M: fewer modalities, new modalities, frozen-trunk warm-up, LoRA.

All helpers change a :class:`~fourm_hf.FourMModel` in place and keep its config in step, so
``save_pretrained`` / ``from_pretrained`` round-trip the result. Weights are keyed by modality
*name*; modality *ids* are derived from the config (inputs first, then outputs-only), so build the
:class:`~fourm_hf.FourMMaskingCollator` from the model's config *after* changing its modalities.

(a) Continue on a subset of modalities::

    model = FourMModel.from_pretrained(folder)
    restrict_modalities(model, input_modalities=["rgb", "tok_depth"], output_modalities=["tok_depth"])
    collator = FourMMaskingCollator(model.config, strategy="all2all")   # masks only those modalities

(b) Add a new, user-registered modality; warm up its embeddings on a frozen trunk, then train all
(in one run: :class:`FrozenWarmupCallback`, or ``model.frozen_model_steps`` in the training YAML)::

    register_modality(ModalitySpec("tok_edges", "image_tokens", vocab_size=1024, num_channels=1, tokenizer="vqvae"))
    add_modalities(model, ["tok_edges"])                 # new encoder embedding + decoder embedding/head
    freeze_trunk(model, train=["tok_edges"])             # only tok_edges' parameters require grad
    FourMTrainer(model=model, ...).train()               # warm-up
    unfreeze(model)
    FourMTrainer(model=model, ...).train()               # full fine-tuning (a new optimizer)

(d) LoRA with peft::

    from peft import get_peft_model
    peft_model = get_peft_model(model, lora_config_for(model, r=8))
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import nn
from transformers import TrainerCallback

from ..modalities import ModalitySpec, get_modality
from ..modeling.embeddings import ENCODER_EMBEDDING_CLASSES, DecoderEmbedding
from ..modeling.modeling_fourm import FourMModel

# Linear layers of the transformer blocks, by the attribute names of modeling/layers.py.
LORA_ATTENTION_MODULES = ("qkv", "q", "kv", "proj")
LORA_MLP_MODULES = ("fc1", "fc2", "fc3")


def _check_model(model) -> FourMModel:
    if not isinstance(model, FourMModel):
        raise TypeError(f"Expected a FourMModel, got {type(model).__name__}.")
    return model


def _refresh_modality_ids(model: FourMModel) -> None:
    """Re-derive the embedding containers' modality ids from the (changed) config."""
    config = model.config
    for container, names in ((model.encoder_embeddings, config.input_modalities),
                             (model.decoder_embeddings, config.output_modalities)):
        if list(container.keys()) != list(names):
            raise RuntimeError(f"Embedding modules {list(container.keys())} do not match the config's {list(names)}.")
        container.modality_ids = [config.modality_id(name) for name in names]


# ---- (a) a subset of modalities --------------------------------------------------------------------
def restrict_modalities(
    model: FourMModel, input_modalities: Sequence[str] | None = None, output_modalities: Sequence[str] | None = None
) -> FourMModel:
    """Drop every modality not listed (its embeddings and output head); the trunk is untouched.

    ``None`` keeps that side as it is. A kept output whose modality embedding was shared with a
    dropped input keeps that embedding (it moves to the decoder side). Returns ``model``.
    """
    model = _check_model(model)
    config = model.config
    keep_inputs = list(config.input_modalities if input_modalities is None else input_modalities)
    keep_outputs = list(config.output_modalities if output_modalities is None else output_modalities)
    for field, kept, current in (("input_modalities", keep_inputs, config.input_modalities),
                                 ("output_modalities", keep_outputs, config.output_modalities)):
        unknown = [name for name in kept if name not in current]
        if unknown:
            raise ValueError(f"restrict_modalities: {field} {unknown} are not {field} of this model ({current}).")
        if not kept:
            raise ValueError(f"restrict_modalities: {field} must keep at least one modality.")
        if len(set(kept)) != len(kept):
            raise ValueError(f"restrict_modalities: {field} lists a modality twice: {kept}.")
    # keep the model's order, whatever order the caller gave
    keep_inputs = [name for name in config.input_modalities if name in keep_inputs]
    keep_outputs = [name for name in config.output_modalities if name in keep_outputs]

    for name in keep_outputs:
        decoder_embedding = model.decoder_embeddings[name]
        if decoder_embedding.mod_emb is None and name not in keep_inputs:
            decoder_embedding.mod_emb = model.encoder_embeddings[name].mod_emb
    for name in [n for n in config.input_modalities if n not in keep_inputs]:
        del model.encoder_embeddings[name]
    for name in [n for n in config.output_modalities if n not in keep_outputs]:
        del model.decoder_embeddings[name]
    config.input_modalities, config.output_modalities = keep_inputs, keep_outputs
    config.modality_specs = {name: config.modality_specs[name] for name in dict.fromkeys(keep_inputs + keep_outputs)}
    _refresh_modality_ids(model)
    return model


# ---- (b) new modalities ----------------------------------------------------------------------------
def add_modalities(
    model: FourMModel,
    modalities: Sequence[str | ModalitySpec],
    inputs: Iterable[str] | None = None,
    outputs: Iterable[str] | None = None,
) -> FourMModel:
    """Give a trained model new modalities: fresh encoder embeddings and decoder embeddings/heads.

    Args:
        modalities: registered modality names or :class:`ModalitySpec` objects, none of them
            already part of the model.
        inputs / outputs: which of the new modalities the encoder reads / the decoder predicts.
            Default: all of them as inputs, all but raw-pixel ones as outputs.
    Existing weights are not touched; the new ones get 4M's initialisation. The config lists the new
    modalities after the existing ones (with their specs), so the model saves and reloads. Returns ``model``.
    """
    model = _check_model(model)
    config = model.config
    specs = []
    for item in modalities:
        if isinstance(item, str):
            specs.append(get_modality(item))
        elif isinstance(item, ModalitySpec):
            specs.append(item)
        else:
            raise TypeError(f"add_modalities: expected modality names or ModalitySpec objects, got {type(item).__name__}.")
    names = [spec.name for spec in specs]
    if not names:
        raise ValueError("add_modalities: no modality given.")
    if len(set(names)) != len(names):
        raise ValueError(f"add_modalities: a modality is given twice: {names}.")
    existing = [name for name in names if name in config.modality_specs]
    if existing:
        raise ValueError(
            f"add_modalities: modality {existing[0]!r} is already part of this model (it has {config.modality_names}); "
            "only new modalities can be added."
        )
    by_name = {spec.name: spec for spec in specs}
    new_inputs = list(names if inputs is None else inputs)
    new_outputs = list([n for n in names if not by_name[n].is_continuous] if outputs is None else outputs)
    for field, chosen in (("inputs", new_inputs), ("outputs", new_outputs)):
        stray = [name for name in chosen if name not in by_name]
        if stray:
            raise ValueError(f"add_modalities: {field} names {stray}, which are not among the new modalities {names}.")
    unused = [name for name in names if name not in new_inputs and name not in new_outputs]
    if unused:
        raise ValueError(f"add_modalities: modality {unused[0]!r} is neither an input nor an output.")
    pixel_outputs = [name for name in new_outputs if by_name[name].is_continuous]
    if pixel_outputs:
        what = "raw pixels" if by_name[pixel_outputs[0]].kind == "pixels" else "a sequence_embedding modality"
        raise ValueError(f"add_modalities: modality {pixel_outputs[0]!r} is {what} and can only be an input.")
    new_inputs = [name for name in names if name in new_inputs]
    new_outputs = [name for name in names if name in new_outputs]

    config.modality_specs = {**config.modality_specs, **{spec.name: spec.to_dict() for spec in specs}}
    config.input_modalities = list(config.input_modalities) + new_inputs
    config.output_modalities = list(config.output_modalities) + new_outputs

    reference = model.mask_token
    new_modules = []
    for name in new_inputs:
        model.encoder_embeddings[name] = ENCODER_EMBEDDING_CLASSES[by_name[name].kind](config, by_name[name])
        new_modules.append(model.encoder_embeddings[name])
    for name in new_outputs:
        model.decoder_embeddings[name] = DecoderEmbedding(config, by_name[name])
        new_modules.append(model.decoder_embeddings[name])
    for module in new_modules:
        module.to(device=reference.device, dtype=reference.dtype)
        with torch.no_grad():
            module.apply(model._init_weights)
    _refresh_modality_ids(model)
    return model


def modality_parameter_names(model: FourMModel, modalities: Iterable[str]) -> list[str]:
    """Names of the parameters that belong to ``modalities`` (their encoder and decoder embeddings/heads)."""
    model = _check_model(model)
    modalities = list(modalities)
    unknown = [name for name in modalities if name not in model.config.modality_specs]
    if unknown:
        raise ValueError(f"Modality {unknown[0]!r} is not part of this model; it has {model.config.modality_names}.")
    prefixes = tuple(f"{side}_embeddings.{name}." for name in modalities for side in ("encoder", "decoder"))
    return [name for name, _ in model.named_parameters() if name.startswith(prefixes)]


def freeze_trunk(model: FourMModel, train: Iterable[str]) -> list[str]:
    """Freeze everything but the parameters of the modalities in ``train``; returns the trainable names.

    The warm-up stage of a new modality: a Trainer built afterwards optimises only these parameters.
    """
    trainable = set(modality_parameter_names(model, train))
    if not trainable:
        raise ValueError(f"freeze_trunk: modalities {list(train)} have no parameters to train.")
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(name in trainable)
    return sorted(trainable)


def unfreeze(model: nn.Module) -> int:
    """Make every parameter trainable again (build a new Trainer afterwards); returns how many there are."""
    count = 0
    for parameter in model.parameters():
        parameter.requires_grad_(True)
        count += 1
    return count


class FrozenWarmupCallback(TrainerCallback):
    """A frozen warm-up inside one training run (the reference's ``frozen_model_tokens``).

    For the first ``frozen_steps`` optimizer steps only the parameters named in ``trainable``
    (e.g. :func:`modality_parameter_names` of the new modalities) change; then everything trains.
    The other parameters' gradients are dropped (set to ``None``) before the optimizer step, so the
    optimizer neither moves nor decays them and keeps no state for them; ``FourMTrainer`` drops them
    before gradient clipping too, so they do not shrink the new parameters' updates.
    ``requires_grad`` is left alone: DDP and FSDP2 wrap the model once, with every parameter, and
    the step is the same with or without a resume.
    """

    def __init__(self, trainable: Iterable[str], frozen_steps: int):
        self.trainable = frozenset(trainable)
        if not self.trainable:
            raise ValueError("FrozenWarmupCallback: no trainable parameters given for the warm-up.")
        if isinstance(frozen_steps, bool) or int(frozen_steps) != frozen_steps or frozen_steps < 0:
            raise ValueError(f"FrozenWarmupCallback: frozen_steps must be an int >= 0, got {frozen_steps!r}.")
        self.frozen_steps = int(frozen_steps)

    def is_frozen(self, global_step: int) -> bool:
        """True while the step being taken (``global_step + 1``) lies in the warm-up."""
        return global_step < self.frozen_steps

    def drop_frozen_gradients(self, model: nn.Module, global_step: int) -> None:
        if not self.is_frozen(global_step):
            return
        for name, parameter in model.named_parameters():
            if name not in self.trainable:
                parameter.grad = None

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        self.drop_frozen_gradients(model, state.global_step)


# ---- (d) LoRA ----------------------------------------------------------------------------------------
def lora_target_pattern(attention: bool = True, mlp: bool = True, encoder: bool = True, decoder: bool = True) -> str:
    """Regex (peft full-matches module names) of the transformer-block linears LoRA adapts.

    Matches ``encoder.<i>.attn.{qkv,proj}``, ``decoder.<i>.{self_attn,cross_attn}.{qkv,q,kv,proj}`` and
    ``<side>.<i>.mlp.{fc1,fc2,fc3}``, with any prefix (``fourm.`` in the task heads). Embeddings,
    output heads, norms and the decoder's context projection are never matched.
    """
    layers = [f"(?:attn|self_attn|cross_attn)\\.(?:{'|'.join(LORA_ATTENTION_MODULES)})"] if attention else []
    layers += [f"mlp\\.(?:{'|'.join(LORA_MLP_MODULES)})"] if mlp else []
    sides = (["encoder"] if encoder else []) + (["decoder"] if decoder else [])
    if not layers or not sides:
        raise ValueError("lora_target_pattern: choose at least one of attention/mlp and one of encoder/decoder.")
    return f"(?:.*\\.)?(?:{'|'.join(sides)})\\.\\d+\\.(?:{'|'.join(layers)})"


def lora_config_for(
    model: nn.Module,
    r: int = 8,
    lora_alpha: int | None = None,
    lora_dropout: float = 0.0,
    attention: bool = True,
    mlp: bool = True,
    encoder: bool = True,
    decoder: bool = True,
    modules_to_save: Sequence[str] | None = None,
):
    """A ``peft.LoraConfig`` for a 4M model (``FourMModel`` or a task head).

    Adapts the attention and/or MLP linears of the encoder and/or decoder blocks
    (:func:`lora_target_pattern`); ``lora_alpha`` defaults to ``2 * r``. Task heads train their head
    fully: ``modules_to_save`` defaults to ``["classifier", "pool_norm"]`` / ``["head"]`` for them.
    """
    from peft import LoraConfig

    if int(r) < 1:
        raise ValueError(f"lora_config_for: r must be >= 1, got {r}.")
    pattern = lora_target_pattern(attention, mlp, encoder, decoder)
    if modules_to_save is None:
        modules_to_save = [name for name in ("classifier", "pool_norm", "head") if isinstance(getattr(model, name, None), nn.Module)]
    return LoraConfig(
        r=int(r),
        lora_alpha=2 * int(r) if lora_alpha is None else lora_alpha,
        lora_dropout=lora_dropout,
        target_modules=pattern,
        modules_to_save=list(modules_to_save) or None,
        bias="none",
    )


__all__ = [
    "FrozenWarmupCallback",
    "add_modalities",
    "freeze_trunk",
    "lora_config_for",
    "lora_target_pattern",
    "modality_parameter_names",
    "restrict_modalities",
    "unfreeze",
]
