"""Per-modality embeddings of 4M.

Every token the encoder reads is ``x + e``: ``x`` its content (a token embedding, a linear
projection of a pixel patch, or of one vector of a sequence embedding) and ``e`` where it is (a fixed
sin-cos position, or a learned one) plus which modality it belongs to (a learned modality embedding). Decoder tokens are built the same way, except that image
targets enter as the learned mask token, and each output modality has its own projection to logits.

The embedding containers work on packed tokens: each token carries its modality id and its
position within the modality, so only the chosen tokens are embedded.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..configuration_fourm import FourMConfig
from ..modalities import ModalitySpec


def sincos_2d_table(grid_size: int, dim: int) -> torch.Tensor:
    """Fixed 2D sin-cos positions, (grid_size**2, dim), raster order n = row * grid_size + col.

    ``table[n] = [sin(row w), cos(row w), sin(col w), cos(col w)]`` with ``w_i = 10000^(-i / (dim/4))``.
    """
    if dim % 4 != 0:
        raise ValueError(f"hidden_size must be divisible by 4 for 2D sin-cos positions, got {dim}.")
    quarter = dim // 4
    # float32 throughout, as the reference computes it, so converted checkpoints match bit for bit
    omega = 1.0 / 10000 ** (torch.arange(quarter, dtype=torch.float32) / quarter)
    rows, cols = torch.meshgrid(torch.arange(grid_size), torch.arange(grid_size), indexing="ij")
    row_angles = rows.reshape(-1, 1).float() * omega
    col_angles = cols.reshape(-1, 1).float() * omega
    return torch.cat([row_angles.sin(), row_angles.cos(), col_angles.sin(), col_angles.cos()], dim=1)


def sincos_1d_table(length: int, dim: int) -> torch.Tensor:
    """Fixed 1D sin-cos positions, (length, dim): ``[sin(p w), cos(p w)]`` with ``w_i = 10000^(-i / (dim/2))``."""
    if dim % 2 != 0:
        raise ValueError(f"hidden_size must be even for 1D sin-cos positions, got {dim}.")
    half = dim // 2
    omega = 1.0 / 10000 ** (torch.arange(half, dtype=torch.float32) / half)
    angles = torch.arange(length, dtype=torch.float32).reshape(-1, 1) * omega
    return torch.cat([angles.sin(), angles.cos()], dim=1)


def position_table(config: FourMConfig, spec: ModalitySpec) -> torch.Tensor:
    """The sin-cos table of one modality: 2D over its own patch grid for images, 1D for sequences.

    For a modality with learned positions this is the table's shape only (zeros).
    """
    if spec.learned_positions:
        return torch.zeros(config.num_positions(spec.name), config.hidden_size)
    if spec.has_1d_positions:
        return sincos_1d_table(spec.max_length, config.hidden_size)
    return sincos_2d_table(config.modality_grid_size(spec.name), config.hidden_size)


def patchify(pixel_values: torch.Tensor, patch_size: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, N, p*p*C) patches in raster order, each flattened as (pixel row, pixel col, channel)."""
    batch, channels, height, width = pixel_values.shape
    rows, cols = height // patch_size, width // patch_size
    patches = pixel_values.reshape(batch, channels, rows, patch_size, cols, patch_size)
    patches = patches.permute(0, 2, 4, 3, 5, 1)  # B, rows, cols, py, px, C
    return patches.reshape(batch, rows * cols, patch_size * patch_size * channels)


class ModalityEmbedding(nn.Module):
    """Position table (N, D) and learned modality embedding (1, 1, D).

    The table is a non-persistent sin-cos buffer (rebuilt on load), or a parameter when the modality
    has learned positions. Sin-cos tables are computed in float32 and stored in the model's dtype
    (the default dtype while the model is built, which ``from_pretrained(dtype=...)`` /
    ``_from_config(dtype=...)`` set), as transformers' models keep their fixed position tables.
    """

    def __init__(self, config: FourMConfig, spec: ModalitySpec, with_modality_embedding: bool = True):
        super().__init__()
        self.spec = spec
        table = position_table(config, spec).to(torch.get_default_dtype())
        if spec.learned_positions:
            self.pos_emb = nn.Parameter(table)
        else:
            self.register_buffer("pos_emb", table, persistent=False)
        self.mod_emb = nn.Parameter(torch.zeros(1, 1, config.hidden_size)) if with_modality_embedding else None

    def positions(self, positions: torch.Tensor) -> torch.Tensor:
        """positions (B, L) int -> (B, L, D) sin-cos vectors."""
        return F.embedding(positions, self.pos_emb)


class TokenEncoderEmbedding(ModalityEmbedding):
    """Encoder embedding of a discrete modality (image tokens or a sequence): a token table."""

    def __init__(self, config: FourMConfig, spec: ModalitySpec):
        super().__init__(config, spec)
        self.token_emb = nn.Embedding(spec.vocab_size, config.hidden_size)

    def content(self, input_ids: torch.Tensor, input_positions: torch.Tensor, features: torch.Tensor | None) -> torch.Tensor:
        """input_ids (B, L) -> (B, L, D)."""
        return self.token_emb(input_ids.clamp(0, self.spec.vocab_size - 1))


def _pick_rows(projected: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """projected (B, N, D), index (B, L) -> (B, L, D): row index[b, l] of sample b (clamped into range)."""
    index = index.clamp(0, projected.shape[1] - 1).unsqueeze(-1).expand(-1, -1, projected.shape[-1])
    return torch.gather(projected, 1, index)


class PatchEncoderEmbedding(ModalityEmbedding):
    """Encoder embedding of raw pixels: a bias-free linear projection of each patch (its own patch size)."""

    def __init__(self, config: FourMConfig, spec: ModalitySpec):
        super().__init__(config, spec)
        self.patch_size = config.modality_patch_size(spec.name)
        self.proj = nn.Linear(spec.num_channels * self.patch_size**2, config.hidden_size, bias=False)

    def content(self, input_ids: torch.Tensor, input_positions: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        """input_positions (B, L) patch indices, features (B, C, H, W) pixels -> (B, L, D) projected patches."""
        projected = self.proj(patchify(features.to(self.proj.weight.dtype), self.patch_size))  # B, N, D
        return _pick_rows(projected, input_positions)


class SequenceEmbeddingEncoderEmbedding(ModalityEmbedding):
    """Encoder embedding of a continuous sequence (T5 caption embeddings): a linear layer with bias."""

    def __init__(self, config: FourMConfig, spec: ModalitySpec):
        super().__init__(config, spec)
        self.emb_proj = nn.Linear(spec.num_channels, config.hidden_size, bias=True)

    def content(self, input_ids: torch.Tensor, input_positions: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        """input_ids (B, L) row indices into features (B, N, C) -> (B, L, D) projected rows.

        A token's id is the row it reads and its position is its 1D position, which differ when
        rows before it are not inputs.
        """
        projected = self.emb_proj(features.to(self.emb_proj.weight.dtype))  # B, N, D
        return _pick_rows(projected, input_ids)


ENCODER_EMBEDDING_CLASSES = {
    "image_tokens": TokenEncoderEmbedding,
    "sequence": TokenEncoderEmbedding,
    "pixels": PatchEncoderEmbedding,
    "sequence_embedding": SequenceEmbeddingEncoderEmbedding,
}


class DecoderEmbedding(ModalityEmbedding):
    """Decoder side of one output modality: token table (sequences only), positions, logits head.

    Image targets enter the decoder as the shared mask token, so an image modality has no decoder
    token table (unless its output projection is tied to one). The modality embedding is the
    encoder's when ``share_modality_embeddings`` is set and the modality is also an input.
    """

    def __init__(self, config: FourMConfig, spec: ModalitySpec):
        shares = config.share_modality_embeddings and spec.name in config.input_modalities
        super().__init__(config, spec, with_modality_embedding=not shares)
        needs_table = spec.is_sequence or config.tie_output_embeddings
        self.token_emb = nn.Embedding(spec.vocab_size, config.hidden_size) if needs_table else None
        self.to_logits = None if config.tie_output_embeddings else nn.Linear(config.hidden_size, spec.vocab_size, bias=False)

    @property
    def logits_weight(self) -> torch.Tensor:
        """(V, D) output projection: the token table itself when tied."""
        return self.token_emb.weight if self.to_logits is None else self.to_logits.weight

    def logits(self, states: torch.Tensor) -> torch.Tensor:
        """(..., D) decoder states -> (..., V) logits. Goes through ``to_logits`` as a module, so an
        int8-quantised head (``fourm_hf.modeling.quantization``) is used where one was installed."""
        if self.to_logits is None:
            return F.linear(states, self.token_emb.weight)
        return self.to_logits(states)


class FourMEncoderEmbeddings(nn.ModuleDict):
    """All encoder modality embeddings, keyed by modality name; embeds packed tokens of mixed modalities."""

    def __init__(self, config: FourMConfig):
        super().__init__()
        self.config = config
        for name in config.input_modalities:
            spec = config.modality(name)
            self[name] = ENCODER_EMBEDDING_CLASSES[spec.kind](config, spec)
        self.modality_ids = [config.modality_id(name) for name in config.input_modalities]

    def forward(
        self,
        input_ids: torch.Tensor,
        input_modality_ids: torch.Tensor,
        input_positions: torch.Tensor,
        attention_mask: torch.Tensor,
        continuous_inputs: dict[str, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Packed encoder tokens (B, L) -> content ``x`` and position+modality ``e``, each (B, L, D).

        ``continuous_inputs`` maps each continuous modality present to its dense input: pixels
        (B, C, H, W) or a sequence embedding (B, N, C). Padding tokens (attention_mask 0) get zeros.
        """
        batch, length = input_ids.shape
        hidden = self.config.hidden_size
        dtype = next(self.parameters()).dtype
        content = torch.zeros(batch, length, hidden, dtype=dtype, device=input_ids.device)
        placement = torch.zeros_like(content)
        valid = attention_mask.bool()
        continuous_inputs = continuous_inputs or {}
        for (name, embedding), modality_id in zip(self.items(), self.modality_ids):
            selected = ((input_modality_ids == modality_id) & valid).unsqueeze(-1)
            features = continuous_inputs.get(name)
            if embedding.spec.is_continuous and features is None:
                continue  # validated upstream: no token of this modality is present
            positions = input_positions.clamp(0, embedding.pos_emb.shape[0] - 1)
            content = torch.where(selected, embedding.content(input_ids, input_positions, features), content)
            placement = torch.where(selected, embedding.positions(positions) + embedding.mod_emb, placement)
        return content, placement


class FourMDecoderEmbeddings(nn.ModuleDict):
    """All decoder modality embeddings and output heads, keyed by modality name; embeds packed target tokens."""

    def __init__(self, config: FourMConfig):
        super().__init__()
        self.config = config
        for name in config.output_modalities:
            self[name] = DecoderEmbedding(config, config.modality(name))
        self.modality_ids = [config.modality_id(name) for name in config.output_modalities]

    def forward(
        self,
        decoder_input_ids: torch.Tensor,
        decoder_modality_ids: torch.Tensor,
        decoder_positions: torch.Tensor,
        decoder_attention_mask: torch.Tensor,
        mask_token: torch.Tensor,
        encoder_modality_embeddings: dict[str, torch.Tensor],
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Packed decoder tokens (B, L) -> input ``x`` and position+modality ``e``, each (B, L, D).

        ``x`` is the mask token for image targets and the decoder token embedding for sequence
        targets (teacher forcing). Padding tokens get zeros in both.
        """
        batch, length = decoder_input_ids.shape
        dtype = mask_token.dtype
        content = torch.zeros(batch, length, self.config.hidden_size, dtype=dtype, device=decoder_input_ids.device)
        placement = torch.zeros_like(content)
        valid = decoder_attention_mask.bool()
        for (name, embedding), modality_id in zip(self.items(), self.modality_ids):
            selected = ((decoder_modality_ids == modality_id) & valid).unsqueeze(-1)
            if embedding.spec.is_sequence:
                ids = decoder_input_ids.clamp(0, embedding.spec.vocab_size - 1)
                token_content = embedding.token_emb(ids)
            else:
                token_content = mask_token.expand(batch, length, -1)
            mod_emb = embedding.mod_emb if embedding.mod_emb is not None else encoder_modality_embeddings[name]
            positions = decoder_positions.clamp(0, embedding.pos_emb.shape[0] - 1)
            if embedding.spec.is_sequence:  # from decoder_max_length on, positions restart at 0 (as the reference)
                positions = positions.masked_fill(decoder_positions >= embedding.spec.decoder_position_limit, 0)
            content = torch.where(selected, token_content, content)
            placement = torch.where(selected, embedding.positions(positions) + mod_emb, placement)
        return content, placement
