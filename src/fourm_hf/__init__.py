"""fourm-hf: 4M (Massively Multimodal Masked Modeling) as a Hugging Face model package.

Importing the package registers the 4M classes with the transformers Auto classes and the
``any-to-any`` pipeline.
"""

from .configuration_fourm import SIZE_PRESETS, FourMConfig
from .modalities import ModalitySpec, get_modality, register_modality, registered_modalities

__version__ = "0.1.0"
