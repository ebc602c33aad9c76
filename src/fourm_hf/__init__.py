"""fourm-hf: 4M (Massively Multimodal Masked Modeling) as a Hugging Face model package.

Importing the package registers the 4M classes with the transformers Auto classes. The Trainer
glue (``fourm_hf.training``) and metrics (``fourm_hf.training.metrics``) are imported on demand,
so ``import fourm_hf`` does not pay for ``Trainer`` or ``evaluate``.
"""

from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModel,
    AutoModelForDepthEstimation,
    AutoModelForImageClassification,
    AutoModelForSemanticSegmentation,
    AutoProcessor,
    AutoTokenizer,
)

from .configuration_fourm import SIZE_PRESETS, FourMConfig
from .data.corpus import build_corpus, load_corpus
from .data.masking import DirichletMasking, FourMMaskingCollator, MaskingEpochCallback, masking_preset, with_sample_index
from .modalities import (ModalitySpec, get_modality, register_modality, registered_modalities, temporary_modalities,
                         unregister_modality)
from .ml4m.conversion import convert_ml4m_checkpoint, load_reference_model, reference_batch_to_packed
from .modeling.modeling_fourm import FourMModel, FourMOutput, FourMPreTrainedModel
from .modeling.generation import build_generation_schedule, generate
from .modeling.modeling_fourm_heads import FourMForDepthEstimation, FourMForImageClassification, FourMForSemanticSegmentation
from .processing.image_processing_fourm import FourMImageProcessor
from .processing.processing_fourm import FourMProcessor
from .text.tokenization_fourm import FourMTextTokenizer, boxes_to_text, text_to_boxes, train_text_tokenizer
from .tokenizers.vqvae import FourMVQVAE, FourMVQVAEConfig
from .tokenizers.mlp_vqvae import FourMMLPVQVAE, FourMMLPVQVAEConfig
from .tokenizers.released import FourMTokenizerModel, convert_released_tokenizer, register_released_family
from .tokenizers.released_modalities import ReleasedModalityTokenizer
from .tokenizers.feature_maps import VisionFeatureExtractor
from .tokenizers.vit_vqvae import FourMViTVQVAE, FourMViTVQVAEConfig
from .tokenizers.divae import FourMDiVAE, FourMDiVAEConfig
from .pipelines.any_to_any import FourMAnyToAnyPipeline, register_any_to_any_pipeline
from .pipelines.grid import save_grid
from .pipelines.by_name import any_to_any_pipeline
# Released 4M checkpoints by name: FourMModel / FourMProcessor.from_pretrained("EPFL-VILAB/4M-21_XL")
from .ml4m import released_loading, released_processor  # noqa: F401  (they register their loaders)
from .ml4m.catalogue import ReleasedModel, register_released_model, released_models, unregister_released_model

__version__ = "0.1.0"

# ---- Auto-class registration ------------------------------------------------------------------------
AutoConfig.register("fourm", FourMConfig, exist_ok=True)
AutoModel.register(FourMConfig, FourMModel, exist_ok=True)
# Task heads on the 4M encoder (fine-tuning; see modeling/modeling_fourm_heads.py).
AutoModelForImageClassification.register(FourMConfig, FourMForImageClassification, exist_ok=True)
AutoModelForDepthEstimation.register(FourMConfig, FourMForDepthEstimation, exist_ok=True)
AutoModelForSemanticSegmentation.register(FourMConfig, FourMForSemanticSegmentation, exist_ok=True)
# VQ-VAE tokenizers load as models of their own (model_type "fourm_vqvae").
AutoConfig.register("fourm_vqvae", FourMVQVAEConfig, exist_ok=True)
AutoModel.register(FourMVQVAEConfig, FourMVQVAE, exist_ok=True)
# The released 4M tokenizer families ("fourm_vit_vqvae", "fourm_mlp_vqvae", ...) register themselves with
# AutoConfig / AutoModel in tokenizers/released.py (register_released_family).
# A saved tokenizer_config.json names "FourMTextTokenizer"; without this registration transformers
# silently falls back to the generic TokenizersBackend.
AutoTokenizer.register(FourMConfig, tokenizer_class=FourMTextTokenizer, exist_ok=True)
# A PIL/numpy processor, registered as the "pil" backend (transformers picks it without torchvision).
AutoImageProcessor.register(FourMConfig, image_processor_classes={"pil": FourMImageProcessor}, exist_ok=True)
# Image processor + text tokenizer + the VQ-VAEs (saved in vqvae/<modality>/ subfolders).
AutoProcessor.register(FourMConfig, FourMProcessor, exist_ok=True)
# pipeline("any-to-any") builds FourMAnyToAnyPipeline for 4M models, the parent pipeline for any other.
register_any_to_any_pipeline()

__all__ = [
    "SIZE_PRESETS", "FourMConfig", "ModalitySpec", "get_modality", "register_modality", "registered_modalities", "temporary_modalities", "unregister_modality",
    "FourMModel", "FourMOutput", "FourMPreTrainedModel",
    "FourMForImageClassification", "FourMForDepthEstimation", "FourMForSemanticSegmentation",
    "convert_ml4m_checkpoint", "load_reference_model", "reference_batch_to_packed",
    "FourMTextTokenizer", "boxes_to_text", "text_to_boxes", "train_text_tokenizer",
    "FourMVQVAE", "FourMVQVAEConfig", "FourMImageProcessor", "FourMProcessor",
    "FourMTokenizerModel", "FourMViTVQVAE", "FourMViTVQVAEConfig", "FourMMLPVQVAE", "FourMMLPVQVAEConfig",
    "convert_released_tokenizer", "register_released_family", "FourMDiVAE", "FourMDiVAEConfig",
    "ReleasedModalityTokenizer", "VisionFeatureExtractor",
    "DirichletMasking", "FourMMaskingCollator", "MaskingEpochCallback", "masking_preset", "with_sample_index",
    "build_corpus", "load_corpus",
    "build_generation_schedule", "generate", "FourMAnyToAnyPipeline", "save_grid", "any_to_any_pipeline",
    "ReleasedModel", "register_released_model", "released_models", "unregister_released_model",
]
