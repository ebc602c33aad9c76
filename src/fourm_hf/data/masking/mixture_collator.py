"""``MixtureCollator``: one masking collator per dataset of a mixture, one packed batch for the model.

A batch of a dataset mixture (:mod:`fourm_hf.data.mixture`) holds samples of several datasets, each
tagged with its ``dataset_index``. Each dataset has its own :class:`FourMMaskingCollator` (its own
strategy, budgets, alphas; a text-only dataset allows the image modalities to be missing), so each
sample is masked by its dataset's collator; the masked samples are then packed together by the
mixture's ``packer`` (the collator of the global masking settings), whose budgets are the batch's
padded lengths. A modality a sample lacks gets no input and no target tokens.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from .collator import FourMMaskingCollator
from .ids import SAMPLE_INDEX_FIELD
from .layout import sample_field

DATASET_INDEX_FIELD = "dataset_index"


class MixtureCollator:
    """Mask each sample with its dataset's collator, pack the batch with ``packer``.

    Args:
        collators: one :class:`FourMMaskingCollator` per dataset, all for the same model config, each
            with budgets at most the packer's.
        packer: the collator whose budgets are the batch's padded lengths (the global masking settings).
        modalities: per dataset, the modality names it declares; a sample lacking one is an error.
        names: per dataset, its name in errors.
    """

    def __init__(self, collators: Sequence[FourMMaskingCollator], packer: FourMMaskingCollator,
                 modalities: Sequence[Sequence[str]], names: Sequence[str]):
        if not (len(collators) == len(modalities) == len(names)) or not collators:
            raise ValueError("MixtureCollator needs one collator, one modality list and one name per dataset.")
        for name, collator in zip(names, collators):
            if collator.config is not packer.config and collator.config.to_dict() != packer.config.to_dict():
                raise ValueError(f"dataset {name!r}: its collator is for another model config than the mixture's.")
            for side in ("input_budget", "target_budget"):
                if getattr(collator, side) > getattr(packer, side):
                    raise ValueError(
                        f"dataset {name!r}: masking.{side} {getattr(collator, side)} is larger than the global "
                        f"masking.{side} {getattr(packer, side)}, the padded length of every batch."
                    )
        self.collators = list(collators)
        self.packer = packer
        self.names = list(names)
        self.fields = [[sample_field(packer.config, m) for m in declared] for declared in modalities]
        self.modalities = [list(declared) for declared in modalities]
        self.allow_missing_modalities = True  # each dataset's collator decides

    @property
    def config(self):
        return self.packer.config

    def set_epoch(self, epoch: int) -> None:
        """Masks of every dataset change with the epoch (``MaskingEpochCallback``)."""
        self.packer.set_epoch(epoch)
        for collator in self.collators:
            collator.set_epoch(epoch)

    def collator_for(self, sample: Mapping) -> FourMMaskingCollator:
        """The collator of the sample's dataset; its declared modalities must all be in the sample."""
        index = sample.get(DATASET_INDEX_FIELD)
        if index is None or not 0 <= int(index) < len(self.collators):
            raise ValueError(f"sample {sample.get(SAMPLE_INDEX_FIELD)}: {DATASET_INDEX_FIELD} must be in "
                             f"[0, {len(self.collators)}), got {index!r}.")
        index = int(index)
        for name, field in zip(self.modalities[index], self.fields[index]):
            if sample.get(field) is None:
                raise ValueError(f"dataset {self.names[index]!r}: sample {sample.get(SAMPLE_INDEX_FIELD)} lacks "
                                 f"modality {name!r} (field {field!r}), which the dataset declares.")
        return self.collators[index]

    def validate_sample(self, sample: Mapping):
        """Check one sample with its dataset's collator (see ``FourMMaskingCollator.validate_sample``)."""
        return self.collator_for(sample).validate_sample(sample)

    def __call__(self, samples: Sequence[Mapping]) -> dict[str, torch.Tensor]:
        """The packed batch of ``FourMMaskingCollator.__call__``, each sample masked by its dataset's collator."""
        if len(samples) == 0:
            raise ValueError("Cannot collate an empty list of samples.")
        return self.packer.pack([self.collator_for(sample).mask_sample(sample) for sample in samples])


__all__ = ["DATASET_INDEX_FIELD", "MixtureCollator"]
