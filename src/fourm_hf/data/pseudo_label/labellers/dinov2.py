"""``dinov2`` and ``dinov2_global``: a ``Dinov2Model``'s patch features and its CLS embedding, from one model call.

* ``dinov2``: float16 (h, w, C), the last hidden state (after the final LayerNorm) without its prefix tokens
  (CLS and, for DINOv2-with-registers, the registers) on the patch grid. DINOv2's processor resizes the
  shorter side to 256 and centre-crops 224, so a 224 px image gives a 16 x 16 grid with patch 14, the grid
  the released DINOv2-B14 feature tokenizer reads.
* ``dinov2_global``: float16 (C,), the CLS token of that same last hidden state (= ``pooler_output`` of
  ``Dinov2Model``), i.e. DINOv2's ``x_norm_clstoken``, the vector the released DINOv2-B14-global tokenizer reads.

The model call and the reshape are ``FeatureLabeller``'s; this labeller adds the model-type check and the CLS.
"""

from __future__ import annotations

from .features import FeatureLabeller

DINOV2_MODEL_TYPES = ("dinov2", "dinov2_with_registers")


class Dinov2Labeller(FeatureLabeller):
    """``dinov2`` (h, w, C) and ``dinov2_global`` (C,) float16 from a Dinov2Model (local folder or Hub id)."""

    def __init__(self, model_id: str, device: str = "cpu", batch_size: int = 8):
        from transformers import AutoConfig

        try:
            config = AutoConfig.from_pretrained(model_id)
        except (OSError, ValueError, KeyError) as error:
            raise ValueError(f"dinov2: cannot load model {model_id!r} (expected a local folder or Hub id of a Dinov2Model): {error}") from error
        if config.model_type not in DINOV2_MODEL_TYPES:
            raise ValueError(f"dinov2: model {model_id!r} is a {config.model_type!r} model, expected a DINOv2 model "
                             f"(model_type {' or '.join(DINOV2_MODEL_TYPES)}, e.g. facebook/dinov2-base, the model 4M-21 used)")
        super().__init__(model_id, device, batch_size, column="dinov2", dtype="float16")
        self.columns = ("dinov2", "dinov2_global")

    def features(self, size):
        from datasets import List, Value

        grid = super().features(size)["dinov2"]
        return {"dinov2": grid, "dinov2_global": List(Value("float16"), length=grid.shape[-1])}

    def label(self, images, labels):
        maps, globals_ = [], []
        for start in range(0, len(images), self.batch_size):
            grid, prefix = self._forward(images[start : start + self.batch_size])
            if prefix.shape[1] == 0:
                raise ValueError(f"dinov2: model {self.model_id!r} returned no CLS token")
            maps.extend(m.astype("float16") for m in grid.numpy())
            globals_.extend(cls.astype("float16") for cls in prefix[:, 0].numpy())
        return {"dinov2": maps, "dinov2_global": globals_}

    def metadata(self):
        return {"model": self.model_id, "dinov2": "last_hidden_state without CLS/registers, (h, w, C)",
                "dinov2_global": "CLS token of last_hidden_state (= pooler_output), (C,)", "dtype": "float16"}
