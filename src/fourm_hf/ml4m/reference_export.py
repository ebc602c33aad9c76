"""FourMModel -> the reference implementation's state-dict layout (the inverse of ``conversion.py``).

Used to check conversion without the reference (a round trip must give back the same model) and to
write synthetic released-size checkpoints for the conversion benchmark. The layout is the one the
reference's ``save_pretrained`` writes: every domain named as in ``domains_in`` / ``domains_out``,
the sin-cos tables as ``(1, N, D)`` buffers (512 rows for sequences), zero LayerNorm bias buffers,
decoder token tables for every output, and (shared modality embeddings) the decoder copy only.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ..modeling.embeddings import position_table
from ..modeling.modeling_fourm import FourMModel
from .reference_names import reference_domain_to_modality

SEQUENCE_TABLE_ROWS = 512  # the reference builds every 1D table this long (its max_length cut has no effect)


def _zeros_like_meta(tensor: torch.Tensor) -> torch.Tensor:
    return torch.zeros(tensor.shape, dtype=tensor.dtype) if tensor.is_meta else tensor.detach()


def reference_state_dict(
    model: FourMModel, reference_config: dict, values: Callable[[torch.Tensor], torch.Tensor] = _zeros_like_meta
) -> dict[str, torch.Tensor]:
    """Reference keys -> tensors for ``model`` (its domains named as in ``reference_config``).

    ``values`` turns each of our tensors into the stored one (default: the tensor itself; zeros for a
    meta-device model, so a released-size checkpoint can be written without its weights in memory).
    """
    config = model.config
    domain_of = {reference_domain_to_modality(d, config.image_size): d
                 for d in reference_config["domains_in"] + reference_config["domains_out"]}
    exported = {}
    for key, tensor in model.named_parameters():
        parts = key.split(".")
        if parts[0] in ("encoder_embeddings", "decoder_embeddings"):
            parts[1] = domain_of[parts[1]]
            if parts[-1] == "pos_emb":
                tensor = tensor.unsqueeze(0)
        exported[".".join(parts)] = values(tensor)
        if parts[-1] == "weight" and isinstance(model.get_submodule(key.rpartition(".")[0]), nn.LayerNorm):
            exported[".".join(parts[:-1] + ["bias"])] = torch.zeros(tensor.shape[0])
    for side, embeddings in (("encoder_embeddings", model.encoder_embeddings), ("decoder_embeddings", model.decoder_embeddings)):
        for name, embedding in embeddings.items():
            prefix = f"{side}.{domain_of[name]}"
            if not embedding.spec.learned_positions:
                exported[f"{prefix}.pos_emb"] = _reference_position_table(config, embedding.spec)
            if side == "decoder_embeddings":
                _add_decoder_side(exported, model, name, prefix, values)
    return exported


def _reference_position_table(config, spec) -> torch.Tensor:
    if spec.has_1d_positions:
        spec = spec.replace(max_length=max(spec.max_length, SEQUENCE_TABLE_ROWS), decoder_max_length=None)
    return position_table(config, spec).unsqueeze(0)


def _add_decoder_side(exported: dict, model: FourMModel, name: str, prefix: str, values) -> None:
    """The decoder tensors the reference stores and FourMModel does not (shared / never-read copies)."""
    embedding = model.decoder_embeddings[name]
    if embedding.mod_emb is None:  # shared: the reference's save keeps the decoder name only
        encoder_prefix = "encoder_embeddings." + prefix.split(".", 1)[1]
        exported[f"{prefix}.mod_emb"] = exported.pop(f"{encoder_prefix}.mod_emb")
    if embedding.token_emb is None:
        shape = (embedding.spec.vocab_size, model.config.hidden_size)
        exported[f"{prefix}.token_emb.weight"] = values(torch.empty(shape, device="meta"))
    if embedding.to_logits is None:
        exported[f"{prefix}.to_logits.weight"] = exported[f"{prefix}.token_emb.weight"]
