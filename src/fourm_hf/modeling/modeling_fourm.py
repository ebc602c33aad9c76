"""FourMModel: the 4M encoder-decoder, read top to bottom like the paper.

1. Embeddings: each chosen input token becomes ``x + e`` (content + sin-cos position + modality).
2. Encoder: pre-norm transformer blocks over the input tokens, then a LayerNorm.
3. Decoder: each chosen target token starts as the mask token (image modalities) or its
   teacher-forced previous token (sequences), plus position and modality. Self-attention stays
   within one modality (bidirectional for images, causal for sequences); cross-attention reads the
   encoder output projected to a context (plus the encoder tokens' positions and modalities).
4. Loss: per-modality cross-entropy on the target tokens, averaged per modality then over the
   output modalities (or over all tokens).

The forward takes packed tensors: the collator (training) or the sampler (generation) has chosen
which tokens are inputs and which are targets. B = batch, L = input tokens, T = target tokens,
D = hidden size. Modality ids index ``config.modality_names``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.utils import ModelOutput

from ..configuration_fourm import FourMConfig
from ..remote_code import write_class_code
from .checkpoint_loading import check_complete_load, unreadable_weights_file
from .embeddings import FourMDecoderEmbeddings, FourMEncoderEmbeddings, ModalityEmbedding, position_table
from .layers import DecoderBlock, EncoderBlock, KVCache, layer_norm, mask_to_bias, run_encoder_blocks
from .validation import FORWARD_KWARG_HINTS, check_extra_kwargs, validate_packed_inputs

IGNORE_INDEX = -100


@dataclass
class FourMEncoderOutput(ModelOutput):
    """Encoder result.

    Attributes:
        last_hidden_state: (B, L, D) after the final encoder LayerNorm.
        placement: (B, L, D) the tokens' position + modality embeddings (zeros on padding), which the
            decoder adds to its context.
        attention_mask: (B, L) 1 = real token.
        hidden_states: per-layer (B, L, D) states when ``output_hidden_states``.
        attentions: per-layer (B, H, L, L) self-attention weights when ``output_attentions``.
    """

    last_hidden_state: torch.Tensor | None = None
    placement: torch.Tensor | None = None
    attention_mask: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None


@dataclass
class FourMDecoderOutput(ModelOutput):
    """Decoder result.

    Attributes:
        last_hidden_state: (B, T, D) after the final decoder LayerNorm.
        hidden_states: per-layer (B, T, D) states when ``output_hidden_states``.
        attentions: per-layer (B, H, T, S) self-attention weights when ``output_attentions``.
        cross_attentions: per-layer (B, H, T, L) weights over the encoder tokens when ``output_attentions``.
    """

    last_hidden_state: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None
    cross_attentions: tuple[torch.Tensor, ...] | None = None


@dataclass
class FourMOutput(ModelOutput):
    """Result of :meth:`FourMModel.forward`.

    Attributes:
        loss: scalar training loss (when ``labels`` are given).
        modality_losses: output modality name -> scalar mean cross-entropy of its target tokens.
        logits: output modality name -> (N_m, V_m) logits of that modality's target tokens, flattened
            in batch-major order (sample 0's tokens in slot order, then sample 1's, ...).
        encoder_last_hidden_state: (B, L, D).
        decoder_last_hidden_state: (B, T, D) after the final decoder LayerNorm.
        encoder_hidden_states / decoder_hidden_states: per-layer states when ``output_hidden_states``
            (the embeddings, then each block's output).
        encoder_attentions / decoder_attentions / cross_attentions: per-layer attention weights
            (B, H, queries, keys) when ``output_attentions``.

    With ``return_dict=False`` the same fields come as a tuple, skipping the None ones, so ``out[0]``
    is the loss when ``labels`` were given.
    """

    loss: torch.Tensor | None = None
    modality_losses: dict[str, torch.Tensor] | None = None
    logits: dict[str, torch.Tensor] | None = None
    encoder_last_hidden_state: torch.Tensor | None = None
    decoder_last_hidden_state: torch.Tensor | None = None
    encoder_hidden_states: tuple[torch.Tensor, ...] | None = None
    decoder_hidden_states: tuple[torch.Tensor, ...] | None = None
    encoder_attentions: tuple[torch.Tensor, ...] | None = None
    decoder_attentions: tuple[torch.Tensor, ...] | None = None
    cross_attentions: tuple[torch.Tensor, ...] | None = None


class FourMPreTrainedModel(PreTrainedModel):
    config_class = FourMConfig
    base_model_prefix = "fourm"
    main_input_name = "input_ids"
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _no_split_modules = ["EncoderBlock", "DecoderBlock"]
    # The loss is a per-modality mean: it must not be rescaled by the Trainer's num_items_in_batch.
    accepts_loss_kwargs = False

    def save_pretrained(self, save_directory, *args, **kwargs):
        """``PreTrainedModel.save_pretrained`` plus the flat model code ``auto_map`` points at."""
        if any(type(module).__module__.startswith("torch.ao.nn.quantized") for module in self.modules()):
            raise ValueError("save_pretrained: this model has int8-quantised layers (quantize_int8), which are an "
                             "inference transform; save the float32 model and quantise it again after loading.")
        super().save_pretrained(save_directory, *args, **kwargs)
        if kwargs.get("is_main_process", True):
            write_class_code(save_directory, type(self))

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        """``PreTrainedModel.from_pretrained``; a weights file that cannot be read (truncated, empty,
        corrupt) is a ValueError naming the file instead of safetensors' bare header error."""
        try:
            return super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
        except Exception as error:
            if type(error).__name__ != "SafetensorError":
                raise
            raise ValueError(f"{pretrained_model_name_or_path}: cannot read the weights file "
                             f"{unreadable_weights_file(pretrained_model_name_or_path)} ({error}); it is truncated or "
                             "corrupt: save or download the checkpoint again.") from error

    def push_to_hub(self, repo_id: str, **kwargs):
        """Upload the model in one commit with a generated 4M model card and the any-to-any pipeline entry
        (``fourm_hf.hub.push_checkpoint``; same keywords as ``PreTrainedModel.push_to_hub`` plus card options)."""
        import importlib

        try:  # by name, so this file stays loadable as remote code where fourm_hf is not installed
            hub = importlib.import_module("fourm_hf.hub")
        except ImportError:
            return super().push_to_hub(repo_id, **kwargs)
        return hub.push_checkpoint(self, repo_id, **kwargs)

    def get_input_embeddings(self):
        """``None``: 4M has one token table per modality (``encoder_embeddings[name]``), not one input table.

        ``PreTrainedModel`` raises here by default; ``None`` is what transformers and accelerate read as "no
        table". FSDP2 (accelerate) then keeps the embeddings in the root shard group, which they must stay
        in: ``forward`` reads the encoder's modality embeddings outside their module, for the decoder.
        """
        return None

    def _init_weights(self, module: nn.Module):
        """4M init: xavier-uniform linears (fused q/k/v and k/v as separate matrices), N(0, 0.02) tables."""
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            fused_chunks = module.out_features // module.in_features if module.out_features in (
                2 * module.in_features, 3 * module.in_features) and module.in_features == self.config.hidden_size else 1
            fan_out = module.out_features // fused_chunks
            bound = (6.0 / (fan_out + module.in_features)) ** 0.5
            init.uniform_(module.weight, -bound, bound)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            init.normal_(module.weight, mean=0.0, std=std)
        elif isinstance(module, nn.LayerNorm):
            init.ones_(module.weight)
        if isinstance(module, ModalityEmbedding):
            if module.spec.learned_positions:
                init.trunc_normal_(module.pos_emb, std=std, a=-2 * std, b=2 * std)
            else:
                init.copy_(module.pos_emb, position_table(self.config, module.spec))
            if module.mod_emb is not None:
                init.trunc_normal_(module.mod_emb, std=std, a=-2 * std, b=2 * std)
        if isinstance(module, FourMModel):
            init.trunc_normal_(module.mask_token, std=std, a=-2 * std, b=2 * std)


# Loaders for checkpoints in another layout than ``save_pretrained``'s, tried in turn by
# ``FourMModel.from_pretrained``: ``loader(cls, name_or_path, kwargs) -> model or None`` (None: not its layout).
# ``fourm_hf.ml4m.released_loading`` adds the released reference checkpoints (by repo id or folder) on import.
CHECKPOINT_LOADERS: list = []


class FourMModel(FourMPreTrainedModel):
    """The 4M encoder-decoder over packed multimodal tokens (see the module docstring)."""

    def __init__(self, config: FourMConfig):
        config = with_encoder_decoder(config, True)
        super().__init__(config)
        self.encoder_embeddings = FourMEncoderEmbeddings(config)
        self.decoder_embeddings = FourMDecoderEmbeddings(config)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, config.hidden_size))
        self.encoder = nn.ModuleList([EncoderBlock(config) for _ in range(config.num_encoder_layers)])
        self.encoder_norm = layer_norm(config)
        self.decoder_proj_context = nn.Linear(config.hidden_size, config.hidden_size, bias=True)
        self.decoder = nn.ModuleList([DecoderBlock(config) for _ in range(config.num_decoder_layers)])
        self.decoder_norm = layer_norm(config)
        self.post_init()

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        """Load a 4M checkpoint; tensors missing from it, left over or (without ``ignore_mismatched_sizes``)
        of another shape are a ValueError, unless ``output_loading_info=True`` asks for the report
        (``(model, loading_info)`` is then returned, as in transformers).

        A released 4M checkpoint (``EPFL-VILAB/4M-21_XL`` or its folder) is converted on load by the
        registered ``CHECKPOINT_LOADERS`` (see ``docs/loading-by-name.md``)."""
        if not args:
            for loader in CHECKPOINT_LOADERS:
                model = loader(cls, pretrained_model_name_or_path, kwargs)
                if model is not None:
                    return model
        wants_report = kwargs.pop("output_loading_info", False)
        model, loading_info = super().from_pretrained(pretrained_model_name_or_path, *args, output_loading_info=True, **kwargs)
        if wants_report:
            return model, loading_info
        check_complete_load(cls.__name__, pretrained_model_name_or_path, loading_info,
                            kwargs.get("ignore_mismatched_sizes", False))
        return model

    # ---- 1+2. embeddings and encoder ---------------------------------------------------------------
    def encode(
        self,
        input_ids: torch.Tensor,
        input_modality_ids: torch.Tensor,
        input_positions: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        output_hidden_states: bool = False,
        output_attentions: bool = False,
        continuous_inputs: dict[str, torch.Tensor] | None = None,
    ) -> FourMEncoderOutput:
        """Packed input tokens (B, L) [+ pixel_values (B, C, H, W) / continuous_inputs] -> states (B, L, D)."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        content, placement = self.encoder_embeddings(
            input_ids, input_modality_ids, input_positions, attention_mask,
            self.gather_continuous_inputs(pixel_values, continuous_inputs),
        )
        hidden_states = content + placement
        valid = attention_mask.bool()
        bias = mask_to_bias(valid[:, None, :].expand(-1, valid.shape[1], -1), hidden_states.dtype)
        hidden_states, all_states, all_attentions = run_encoder_blocks(
            self.encoder, hidden_states, bias, output_hidden_states, output_attentions
        )
        return FourMEncoderOutput(
            last_hidden_state=self.encoder_norm(hidden_states),
            placement=placement,
            attention_mask=attention_mask,
            hidden_states=all_states,
            attentions=all_attentions,
        )

    def gather_continuous_inputs(
        self, pixel_values: torch.Tensor | None, continuous_inputs: dict[str, torch.Tensor] | None
    ) -> dict[str, torch.Tensor]:
        """Modality name -> dense input of each continuous modality given.

        ``pixel_values`` is the input of the model's pixels modality when it has exactly one;
        ``continuous_inputs`` names them (``{"rgb@448": pixels, "t5_caption": (B, N, 4096)}``).
        """
        gathered = dict(continuous_inputs or {})
        if pixel_values is not None:
            pixel_names = [n for n in self.config.input_modalities if self.config.modality(n).kind == "pixels"]
            if len(pixel_names) != 1:
                raise ValueError(
                    f"pixel_values is ambiguous for a model with pixels modalities {pixel_names}; pass "
                    "continuous_inputs={name: pixels} instead."
                )
            gathered.setdefault(pixel_names[0], pixel_values)
        return gathered

    def get_encoder_features(
        self,
        input_ids: torch.Tensor,
        input_modality_ids: torch.Tensor,
        input_positions: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        pool: bool = False,
        continuous_inputs: dict[str, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Encoder features for downstream heads: (B, L, D) per token, or (B, D) mean over real tokens."""
        encoded = self.encode(
            input_ids, input_modality_ids, input_positions, attention_mask, pixel_values,
            continuous_inputs=continuous_inputs,
        )
        if not pool:
            return encoded.last_hidden_state
        weights = encoded.attention_mask.to(encoded.last_hidden_state.dtype).unsqueeze(-1)
        return (encoded.last_hidden_state * weights).sum(1) / weights.sum(1).clamp(min=1)

    # ---- 3. decoder ----------------------------------------------------------------------------------
    def encoder_context(self, encoded: FourMEncoderOutput) -> torch.Tensor:
        """(B, L, D) context the decoder cross-attends to: projected encoder output + placement."""
        return self.decoder_proj_context(encoded.last_hidden_state) + encoded.placement

    def decoder_self_attention_mask(
        self, decoder_modality_ids: torch.Tensor, decoder_attention_mask: torch.Tensor
    ) -> torch.Tensor:
        """(B, T) ids and padding mask -> (B, T, T) bool, True where query i may attend to key j.

        Same modality only; bidirectional within an image modality, causal (slot order) within a
        sequence modality; never to padding.
        """
        is_sequence = torch.tensor(
            [self.config.modality(name).is_sequence for name in self.config.modality_names],
            device=decoder_modality_ids.device,
        )
        query_is_sequence = is_sequence[decoder_modality_ids.clamp(min=0)]
        length = decoder_modality_ids.shape[1]
        causal = torch.ones(length, length, dtype=torch.bool, device=decoder_modality_ids.device).tril()
        same_modality = decoder_modality_ids[:, :, None] == decoder_modality_ids[:, None, :]
        key_valid = decoder_attention_mask.bool()[:, None, :]
        order_ok = ~query_is_sequence[:, :, None] | causal[None]
        return same_modality & key_valid & order_ok

    def decode(
        self,
        encoded: FourMEncoderOutput,
        decoder_input_ids: torch.Tensor,
        decoder_modality_ids: torch.Tensor,
        decoder_positions: torch.Tensor,
        decoder_attention_mask: torch.Tensor | None = None,
        output_hidden_states: bool = False,
        *,
        context_key_values: list[tuple[torch.Tensor, torch.Tensor]] | None = None,
        kv_caches: list[KVCache] | None = None,
        self_attention_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...] | None]:
        """(decoder states (B, T, D), per-layer states or None): :meth:`decode_layers` without attentions."""
        decoded = self.decode_layers(
            encoded, decoder_input_ids, decoder_modality_ids, decoder_positions, decoder_attention_mask,
            output_hidden_states, context_key_values=context_key_values, kv_caches=kv_caches,
            self_attention_mask=self_attention_mask,
        )
        return decoded.last_hidden_state, decoded.hidden_states

    def decode_layers(
        self,
        encoded: FourMEncoderOutput,
        decoder_input_ids: torch.Tensor,
        decoder_modality_ids: torch.Tensor,
        decoder_positions: torch.Tensor,
        decoder_attention_mask: torch.Tensor | None = None,
        output_hidden_states: bool = False,
        output_attentions: bool = False,
        *,
        context_key_values: list[tuple[torch.Tensor, torch.Tensor]] | None = None,
        kv_caches: list[KVCache] | None = None,
        self_attention_mask: torch.Tensor | None = None,
    ) -> FourMDecoderOutput:
        """Packed target tokens (B, T) attending to ``encoded`` -> decoder states (B, T, D) [+ attentions].

        Cached decoding (generation) passes, all optional:
            context_key_values: per-block cross-attention (keys, values) from
                :meth:`decoder_context_key_values` (the encoder output is fixed while one target decodes).
            kv_caches: one :class:`KVCache` per block; the T new tokens' self-attention keys/values are
                appended to it and the new tokens attend to everything cached before them.
            self_attention_mask: (B, T, S) bool, True where new token i may attend to key j of the
                S = cached + T self-attention keys. Default: the modality rule among the new tokens and
                every cached key allowed (one sequence decoded token by token; one new token without a
                ``decoder_attention_mask`` sees every key, so no mask is built).
        """
        one_new_token = kv_caches is not None and decoder_attention_mask is None and decoder_input_ids.shape[1] == 1
        if decoder_attention_mask is None:
            decoder_attention_mask = torch.ones_like(decoder_input_ids)
        content, placement = self.decoder_embeddings(
            decoder_input_ids,
            decoder_modality_ids,
            decoder_positions,
            decoder_attention_mask,
            self.mask_token,
            self.encoder_modality_embeddings(),
        )
        hidden_states = content + placement
        if self_attention_mask is None and not one_new_token:
            self_attention_mask = self.decoder_self_attention_mask(decoder_modality_ids, decoder_attention_mask)
            cached = len(kv_caches[0]) if kv_caches is not None else 0
            if cached:
                seen = torch.ones(*self_attention_mask.shape[:2], cached, dtype=torch.bool, device=self_attention_mask.device)
                self_attention_mask = torch.cat([seen, self_attention_mask], dim=-1)
        self_bias = None if self_attention_mask is None else mask_to_bias(self_attention_mask, hidden_states.dtype)
        cross_bias = mask_to_bias(encoded.attention_mask.bool()[:, None, :], hidden_states.dtype)
        context = self.encoder_context(encoded) if context_key_values is None else None
        all_states = (hidden_states,) if output_hidden_states else None
        self_attentions = () if output_attentions else None
        cross_attentions = () if output_attentions else None
        for index, block in enumerate(self.decoder):
            hidden_states, self_weights, cross_weights = block(
                hidden_states, self_bias, cross_bias, context,
                context_key_value=None if context_key_values is None else context_key_values[index],
                kv_cache=None if kv_caches is None else kv_caches[index],
                output_attentions=output_attentions,
            )
            if output_hidden_states:
                all_states += (hidden_states,)
            if output_attentions:
                self_attentions += (self_weights,)
                cross_attentions += (cross_weights,)
        return FourMDecoderOutput(
            last_hidden_state=self.decoder_norm(hidden_states),
            hidden_states=all_states,
            attentions=self_attentions,
            cross_attentions=cross_attentions,
        )

    def decoder_context_key_values(self, encoded: FourMEncoderOutput) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per decoder block, the cross-attention (keys, values), each (B, H, L, d), of ``encoded``.

        Computed once per encoder output and reused by every step of autoregressive decoding.
        """
        context = self.encoder_context(encoded)
        return [block.context_key_value(context) for block in self.decoder]

    def encoder_modality_embeddings(self) -> dict[str, torch.Tensor]:
        """Modality name -> the encoder's learned modality embedding (1, 1, D), shared with the decoder."""
        return {name: emb.mod_emb for name, emb in self.encoder_embeddings.items()}

    # ---- 4. logits and loss ----------------------------------------------------------------------------
    def compute_logits(
        self, decoder_states: torch.Tensor, decoder_modality_ids: torch.Tensor, decoder_attention_mask: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """(B, T, D) states -> modality -> (N_m, V_m) logits of its real target tokens, batch-major."""
        valid = decoder_attention_mask.bool()
        logits = {}
        for name, embedding in self.decoder_embeddings.items():
            rows = decoder_states[(decoder_modality_ids == self.config.modality_id(name)) & valid]
            logits[name] = embedding.logits(rows)
        return logits

    def compute_loss(
        self,
        logits: dict[str, torch.Tensor],
        labels: torch.Tensor,
        decoder_modality_ids: torch.Tensor,
        decoder_attention_mask: torch.Tensor,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Cross-entropy per modality (mean over its tokens; 0 if it has none), then the total.

        ``"modality"`` averaging divides the sum of per-modality means by the number of output
        modalities (a modality without targets still counts), as 4M-7 trains; ``"token"`` takes
        the mean over all target tokens.
        """
        valid = decoder_attention_mask.bool()
        modality_losses, token_loss_sum, token_count = {}, 0.0, 0
        for name, modality_logits in logits.items():
            targets = labels[(decoder_modality_ids == self.config.modality_id(name)) & valid]
            summed = F.cross_entropy(modality_logits.float(), targets, ignore_index=IGNORE_INDEX, reduction="sum")
            count = (targets != IGNORE_INDEX).sum()
            modality_losses[name] = summed / count.clamp(min=1)
            token_loss_sum = token_loss_sum + summed
            token_count = token_count + count
        if self.config.loss_averaging == "modality":
            loss = sum(modality_losses.values()) / len(self.config.output_modalities)
        else:
            loss = token_loss_sum / token_count.clamp(min=1)
        return loss, modality_losses

    # ---- the whole model --------------------------------------------------------------------------------
    def forward(
        self,
        input_ids: torch.Tensor,
        input_modality_ids: torch.Tensor,
        input_positions: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        decoder_input_ids: torch.Tensor | None = None,
        decoder_modality_ids: torch.Tensor | None = None,
        decoder_positions: torch.Tensor | None = None,
        decoder_attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        return_dict: bool | None = None,
        continuous_inputs: dict[str, torch.Tensor] | None = None,
        **kwargs,
    ) -> FourMOutput | tuple:
        """Encode the input tokens, decode the target tokens, and (with ``labels``) compute the loss.

        Args:
            input_ids, input_modality_ids, input_positions, attention_mask: (B, L) int packed input
                tokens (see the module docstring); ``attention_mask`` 1 = real, 0 = padding.
            pixel_values: (B, C, H, W) float, needed when an input token belongs to a pixels modality;
                the token's position is its patch index.
            continuous_inputs: modality name -> dense input of a continuous modality: pixels (B, C, H, W)
                (when the model has several pixels modalities, e.g. ``rgb`` and ``rgb@448``) or a
                sequence embedding (B, N, C) (``t5_caption``), whose tokens' ``input_ids`` are the row
                they read and ``input_positions`` their 1D position.
            decoder_input_ids, decoder_modality_ids, decoder_positions, decoder_attention_mask: (B, T)
                int packed target tokens; ``decoder_input_ids`` is the teacher-forced input of sequence
                targets (ignored for image targets, which enter as the mask token).
            labels: (B, T) int target ids, -100 = no loss.
            output_hidden_states / output_attentions / return_dict: default to the config's
                (``config.output_hidden_states``, ``config.output_attentions``, ``config.return_dict``).
        Without decoder tokens only the encoder runs. Other keyword arguments are a TypeError, except
        ``num_items_in_batch`` (passed by transformers' Trainer; the loss is a per-modality mean).
        """
        check_extra_kwargs("FourMModel", kwargs, FORWARD_KWARG_HINTS)
        output_hidden_states, output_attentions, return_dict = resolve_output_flags(
            self.config, output_hidden_states, output_attentions, return_dict
        )
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        has_decoder = decoder_modality_ids is not None
        if has_decoder:
            if decoder_input_ids is None:
                decoder_input_ids = torch.zeros_like(decoder_modality_ids)
            if decoder_attention_mask is None:
                decoder_attention_mask = torch.ones_like(decoder_modality_ids)
        if not torch.compiler.is_compiling():
            validate_packed_inputs(
                self.config, input_ids, input_modality_ids, input_positions, attention_mask,
                self.gather_continuous_inputs(pixel_values, continuous_inputs),
                decoder_input_ids, decoder_modality_ids, decoder_positions, decoder_attention_mask, labels,
            )
        # int32 ids are accepted; indexing and the loss need int64 (a no-op for int64 tensors)
        input_ids, input_modality_ids, input_positions = input_ids.long(), input_modality_ids.long(), input_positions.long()
        if has_decoder:
            decoder_input_ids, decoder_modality_ids = decoder_input_ids.long(), decoder_modality_ids.long()
            decoder_positions, labels = decoder_positions.long(), None if labels is None else labels.long()
        encoded = self.encode(
            input_ids, input_modality_ids, input_positions, attention_mask, pixel_values,
            output_hidden_states, output_attentions, continuous_inputs=continuous_inputs,
        )
        decoded, logits, loss, modality_losses = FourMDecoderOutput(), None, None, None
        if has_decoder:
            decoded = self.decode_layers(
                encoded, decoder_input_ids, decoder_modality_ids, decoder_positions, decoder_attention_mask,
                output_hidden_states, output_attentions,
            )
            logits = self.compute_logits(decoded.last_hidden_state, decoder_modality_ids, decoder_attention_mask)
            if labels is not None:
                loss, modality_losses = self.compute_loss(logits, labels, decoder_modality_ids, decoder_attention_mask)
        # built in one call, in field order, so the tuple form (return_dict=False) starts with the loss
        output = FourMOutput(
            loss=loss,
            modality_losses=modality_losses,
            logits=logits,
            encoder_last_hidden_state=encoded.last_hidden_state,
            decoder_last_hidden_state=decoded.last_hidden_state,
            encoder_hidden_states=encoded.hidden_states,
            decoder_hidden_states=decoded.hidden_states,
            encoder_attentions=encoded.attentions,
            decoder_attentions=decoded.attentions,
            cross_attentions=decoded.cross_attentions,
        )
        return output if return_dict else output.to_tuple()


def with_encoder_decoder(config: FourMConfig, is_encoder_decoder: bool) -> FourMConfig:
    """``config`` itself when its ``is_encoder_decoder`` already says what the model class is, else a copy that
    does: a model never flips the flag on the caller's config (one config may build FourMModel and a head)."""
    if config.is_encoder_decoder == is_encoder_decoder:
        return config
    config = copy.deepcopy(config)
    config.is_encoder_decoder = is_encoder_decoder
    return config


def resolve_output_flags(config: FourMConfig, output_hidden_states, output_attentions, return_dict) -> tuple[bool, bool, bool]:
    """Call-time ``output_hidden_states`` / ``output_attentions`` / ``return_dict``, each defaulting to the config's."""
    return (
        config.output_hidden_states if output_hidden_states is None else bool(output_hidden_states),
        config.output_attentions if output_attentions is None else bool(output_attentions),
        config.return_dict if return_dict is None else bool(return_dict),
    )


__all__ = ["FourMModel", "FourMPreTrainedModel", "FourMOutput", "FourMEncoderOutput", "FourMDecoderOutput", "KVCache"]
