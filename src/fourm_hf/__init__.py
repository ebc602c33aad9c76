"""fourm-hf: 4M (Massively Multimodal Masked Modeling) as a Hugging Face model package.

Importing the package registers the 4M classes with the transformers Auto classes and the
``any-to-any`` pipeline.
"""

from .configuration_fourm import SIZE_PRESETS, FourMConfig
from .modalities import ModalitySpec, get_modality, register_modality, registered_modalities
from .modeling.modeling_fourm import FourMModel, FourMOutput, FourMPreTrainedModel
from .modeling.conversion import convert_ml4m_checkpoint, load_reference_model, reference_batch_to_packed

from transformers import AutoConfig as _AutoConfig, AutoModel as _AutoModel  # noqa: E402

_AutoConfig.register("fourm", FourMConfig, exist_ok=True)
_AutoModel.register(FourMConfig, FourMModel, exist_ok=True)
from .tokenization.tokenization_fourm import FourMTextTokenizer, boxes_to_text, text_to_boxes, train_text_tokenizer

# AutoTokenizer: a saved folder's tokenizer_config.json names "FourMTextTokenizer"; without this
# registration transformers silently falls back to the generic TokenizersBackend.
from transformers import AutoTokenizer as _AutoTokenizer  # noqa: E402

_AutoTokenizer.register(FourMConfig, tokenizer_class=FourMTextTokenizer, exist_ok=True)

# VQ-VAE tokenizers: AutoConfig / AutoModel load a saved tokenizer folder (model_type "fourm_vqvae").
from .tokenization.vqvae import FourMVQVAE, FourMVQVAEConfig  # noqa: E402

_AutoConfig.register("fourm_vqvae", FourMVQVAEConfig, exist_ok=True)
_AutoModel.register(FourMVQVAEConfig, FourMVQVAE, exist_ok=True)

# Image processor: a saved folder's preprocessor_config.json names "FourMImageProcessor"; it is a
# PIL/numpy processor, registered as the "pil" backend (transformers picks it without torchvision).
from transformers import AutoImageProcessor as _AutoImageProcessor  # noqa: E402

from .tokenization.image_processing_fourm import FourMImageProcessor  # noqa: E402

_AutoImageProcessor.register(FourMConfig, image_processor_classes={"pil": FourMImageProcessor}, exist_ok=True)

# Training data collator (4M masking) and its helpers.
from .data.masking import (  # noqa: E402
    DirichletMasking,
    FourMMaskingCollator,
    MaskingEpochCallback,
    masking_preset,
    with_sample_index,
)

# Processor (image processor + text tokenizer + the VQ-VAEs, saved in vqvae/<modality>/ subfolders).
from transformers import AutoProcessor as _AutoProcessor  # noqa: E402

from .tokenization.processing_fourm import FourMProcessor  # noqa: E402

_AutoProcessor.register(FourMConfig, FourMProcessor, exist_ok=True)

# Corpus builder (tokenized training data) and its reader.
from .data.corpus import build_corpus, load_corpus  # noqa: E402

__version__ = "0.1.0"
