"""One call from a released 4M repo id (or any 4M folder / repo) to ``pipeline("any-to-any")``.

::

    import fourm_hf
    pipe = fourm_hf.any_to_any_pipeline("EPFL-VILAB/4M-21_XL", text_tokenizer="text_tokenizer_4m_wordpiece_30k.json")

Why not ``transformers.pipeline("any-to-any", model="EPFL-VILAB/4M-21_XL")``: transformers' factory first
reads the repo's ``config.json`` with ``AutoConfig``, which (transformers 5) needs a ``model_type`` key and
no longer guesses the class from the repo name; the released ``config.json`` is the reference's, without
``model_type``. The factory fails there, before any code of this package runs. With the model and the
processor built here (``FourMModel.from_pretrained`` converts and caches, ``FourMProcessor.from_pretrained``
assembles from the catalogue), the factory is called as usual and returns ``FourMAnyToAnyPipeline``.
"""

from __future__ import annotations

import os

from ..modeling.modeling_fourm import FourMModel
from ..processing.processing_fourm import FourMProcessor

HUB_KEYWORDS = ("revision", "cache_dir", "token", "local_files_only", "force_download")
PROCESSOR_KEYWORDS = ("text_tokenizer", "feature_models", "num_diffusion_steps")


def any_to_any_pipeline(model: str | os.PathLike, **kwargs):
    """``pipeline("any-to-any")`` for a released repo id (catalogue), a converted / assembled folder or Hub repo.

    Args:
        model: ``"EPFL-VILAB/4M-21_XL"``, a registered catalogue id, or anything ``FourMModel.from_pretrained``
            and ``FourMProcessor.from_pretrained`` load.
        kwargs: Hub options (``revision``, ``cache_dir``, ``token``, ``local_files_only``, ``force_download``)
            go to both loaders; ``text_tokenizer``, ``feature_models``, ``num_diffusion_steps`` to the processor
            of a released id (``fourm_hf.ml4m.released_processor``); the rest (``device``, ``dtype``, ...) to
            ``transformers.pipeline``.
    """
    from transformers import pipeline

    name = os.fspath(model)
    hub = {key: kwargs.pop(key) for key in HUB_KEYWORDS if key in kwargs}
    processor_options = {key: kwargs.pop(key) for key in PROCESSOR_KEYWORDS if key in kwargs}
    fourm_model = FourMModel.from_pretrained(name, **hub)
    processor = FourMProcessor.from_pretrained(name, **hub, **processor_options)
    return pipeline("any-to-any", model=fourm_model, processor=processor, **kwargs)


__all__ = ["any_to_any_pipeline"]
