"""The pipeline's names for one model's modalities, derived from the modality registry.

A user names modalities by their public names (``"depth"``; the model's ``"tok_depth"`` is accepted too).
Nothing here lists modality names: each :class:`~fourm_hf.modalities.ModalitySpec` of the model carries
its ``public_name`` and the ``processor_argument`` its raw input goes to, so a modality added with
``register_modality`` is an input and a target like the built-in ones. The default target order is the
registry's order.
"""

from __future__ import annotations

from ..configuration_fourm import FourMConfig
from ..modalities import KEYED_PROCESSOR_ARGUMENTS, ModalitySpec, get_modality, registered_modalities, registry_order
from ..text.sequence_modalities import SEQUENCE_MODALITIES

# The sequences FourMProcessor.decode turns into text, boxes or structured data.
TEXT_OUTPUTS = ("caption", "det", *SEQUENCE_MODALITIES)
IMAGE_ARGUMENT = "images"  # the processor keyword of the image; feature maps are computed from it


class ModalityNames:
    """Public names <-> model modalities of one model and processor.

    Args:
        config: the model's :class:`FourMConfig` (its specs carry the names).
        vqvaes: the processor's ``{modality: tokenizer}``: an image target needs one to be decoded.
    """

    def __init__(self, config: FourMConfig, vqvaes):
        self.config = config
        order = registry_order()
        rank = {name: index for index, name in enumerate(order)}
        outputs = sorted(config.output_modalities, key=lambda name: rank.get(name, len(order)))  # stable: unregistered last
        self.targets = {}  # public name -> the model's token modality, in default order
        for name in outputs:
            spec = config.modality(name)
            decodable = name in TEXT_OUTPUTS if spec.is_sequence else name in vqvaes
            if not spec.is_continuous and decodable:
                self.targets.setdefault(spec.public_name, name)
        self.specs = {name: config.modality(name) for name in config.modality_names}

    def public(self, name, field: str = "modality") -> str:
        """``"depth"`` or ``"tok_depth"`` -> ``"depth"`` (the model's specs first, then the registry)."""
        if isinstance(name, str):
            known = list(self.specs.values()) + [get_modality(n) for n in registered_modalities() if n not in self.specs]
            for spec in known:
                if name in (spec.public_name, spec.name):
                    return spec.public_name
        publics = list(dict.fromkeys(spec.public_name for spec in self.specs.values()))
        raise ValueError(f"{field}: unknown modality {name!r}; expected one of {publics} "
                         f"(or the model's names {list(self.specs)}).")

    def target_model_name(self, public: str) -> str:
        """The model's token modality generated for the public target name (``"rgb"`` -> ``"tok_rgb"``)."""
        if public in self.targets:
            return self.targets[public]
        for spec in self.specs.values():
            if spec.public_name == public and not spec.is_continuous:
                return spec.name
        return next((get_modality(n).name for n in registered_modalities() if get_modality(n).public_name == public), public)

    def is_sequence(self, public: str) -> bool:
        """Whether the target ``public`` is a sequence (decoded token by token) rather than an image."""
        name = self.target_model_name(public)
        spec = self.specs.get(name) or (get_modality(name) if name in registered_modalities() else None)
        return spec is not None and spec.is_sequence

    def why_not_a_target(self, public: str) -> str:
        """Why ``public`` is not among :attr:`targets` (for the error message)."""
        name = self.target_model_name(public)
        if name not in self.config.output_modalities:
            return "the model does not generate it"
        if self.specs[name].is_sequence:
            return f"the processor decodes no {name} sequences"
        return f"the processor has no VQ-VAE to decode {name}"

    def input_specs(self, public: str) -> list[ModalitySpec]:
        """The model's input modalities the processor reads from the public input ``public``."""
        return [spec for spec in self.specs.values() if spec.public_name == public and spec.processor_argument
                and spec.name in self.config.input_modalities]

    def check_input(self, public: str, where: str) -> None:
        """An input must be read by the processor: not a feature map (computed from the image), not a
        modality the processor has no argument for."""
        if self.input_specs(public):
            return
        specs = [spec for spec in self.specs.values() if spec.public_name == public]
        if any(spec.is_image and not spec.processor_argument for spec in specs):
            raise ValueError(f"{where}: {public!r} is not an input of its own; the processor computes the {public} "
                             "feature map from the rgb image (give the image as rgb).")
        readable = sorted({spec.public_name for spec in self.specs.values() if spec.processor_argument
                           and spec.name in self.config.input_modalities})
        if any(spec.name in self.config.input_modalities for spec in specs):
            raise ValueError(f"input {public!r}: the processor reads no input for it (its spec has no processor_argument); "
                             f"the pipeline's inputs for this model are {readable}.")
        raise ValueError(f"input {public!r}: this model does not read it (its inputs are {self.config.input_modalities}; "
                         f"the pipeline's inputs for this model are {readable}).")

    def processor_arguments(self, samples: list[dict], given: list[str]) -> dict:
        """The samples' inputs as ``FourMProcessor`` keywords: ``{argument: [one value per sample]}``, and for
        the keyed arguments (``vectors``, ``edges``, ``maps``) ``{argument: {modality: [values]}}``."""
        arguments = {}
        for public in given:
            spec = self.input_specs(public)[0]
            values = [sample[public] for sample in samples]
            if spec.processor_argument in KEYED_PROCESSOR_ARGUMENTS:
                arguments.setdefault(spec.processor_argument, {})[spec.name] = values
            else:
                arguments[spec.processor_argument] = values
        return arguments

    def source_of(self, condition: str, given: list[str]) -> str | None:
        """The public input a condition modality came from: its own, or for a feature map the image."""
        spec = self.specs[condition]
        if spec.processor_argument:
            return spec.public_name
        return next((public for public in given
                     if any(s.processor_argument == IMAGE_ARGUMENT for s in self.input_specs(public))), None)


__all__ = ["IMAGE_ARGUMENT", "ModalityNames", "TEXT_OUTPUTS"]
