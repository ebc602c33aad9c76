"""A released tokenizer that is downloaded the first time it is used: :class:`LazyReleasedTokenizer`.

A processor built by name (``FourMProcessor.from_pretrained("EPFL-VILAB/4M-21_XL")``) holds one tokenizer per
modality of the model, up to fourteen repos. It holds them as ``LazyReleasedTokenizer``: the processor and
the pipeline read their ``config`` (modality, kind, grid, vocabulary), which is known from the model without
downloading anything; the tokenizer repo (``config.json`` + ``model.safetensors``) and the vision model of a
feature tokenizer are downloaded when the tokenizer first encodes or decodes. RGB -> depth therefore fetches
the RGB and depth tokenizers only.

When it loads, the downloaded tokenizer must give what ``config`` promised (vocabulary, ids per sample,
semseg classes); otherwise the load is a ``ValueError`` naming the repo, and nothing is used.

:func:`download_hub_file` is the one place Hub downloads of released files happen (trunks too): Hub errors
become ``ValueError``s naming the repo, the revision and the file.
"""

from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path

import torch
from torch import nn

from .released_modalities import VECTOR_KINDS, ModalityTokenizerConfig, ReleasedModalityTokenizer

RELEASED_FILES = ("config.json", "model.safetensors")
HUB_OPTIONS = ("revision", "cache_dir", "token", "local_files_only", "force_download", "proxies")


def download_hub_file(repo_id: str, filename: str, hub_options: dict | None = None) -> Path:
    """``hf_hub_download`` with named errors: an unknown repo, revision or file, or a failed transfer, is a
    ``ValueError`` saying which. huggingface_hub writes the file under a temporary name and renames it."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (EntryNotFoundError, HfHubHTTPError, LocalEntryNotFoundError,
                                        RepositoryNotFoundError, RevisionNotFoundError)

    options = {key: value for key, value in dict(hub_options or {}).items() if key in HUB_OPTIONS and value is not None}
    revision = options.get("revision")
    where = f"{repo_id!r}" + (f" at revision {revision!r}" if revision else "")
    try:
        return Path(hf_hub_download(repo_id, filename, **options))
    except RevisionNotFoundError:
        raise ValueError(f"{repo_id!r}: revision {revision!r} does not exist on the Hub (expected a branch, tag or "
                         "commit hash of the repo).") from None
    except RepositoryNotFoundError:
        raise ValueError(f"{repo_id!r} is neither a local folder nor a Hub repo (not found on the Hub).") from None
    except LocalEntryNotFoundError as error:
        raise ValueError(f"{filename} of {where} is not in the cache and could not be downloaded: {error}") from None
    except EntryNotFoundError:
        raise ValueError(f"{where} has no {filename}; a released 4M repo holds {list(RELEASED_FILES)}.") from None
    except (HfHubHTTPError, OSError) as error:
        raise ValueError(f"downloading {filename} of {where} failed: {error}") from None
    except Exception as error:  # the HTTP client's own errors (a connection dropped mid-transfer)
        if type(error).__module__.startswith(("httpx", "httpcore", "h11", "requests", "urllib3")):
            raise ValueError(f"downloading {filename} of {where} failed: {type(error).__name__}: {error}") from None
        raise


def download_released_folder(repo_id: str, hub_options: dict | None = None) -> Path:
    """The snapshot folder of a released repo with its ``config.json`` and ``model.safetensors``."""
    paths = [download_hub_file(repo_id, name, hub_options) for name in RELEASED_FILES]
    return paths[0].parent


class LazyReleasedTokenizer(nn.Module):
    """A :class:`ReleasedModalityTokenizer` downloaded from ``repo_id`` when it is first used.

    Args:
        repo_id: the released tokenizer repo (``EPFL-VILAB/4M_tokenizers_depth_8k_224-448``) or a local folder.
        config: what the model needs from it (``ModalityTokenizerConfig``: modality, kind, image size, grid or
            ids per sample, vocabulary (None: any), semseg classes); checked against the tokenizer when it loads.
        feature_model: for a feature kind: the transformers vision model (repo or folder) computing its input;
            None makes it decode-only (``config.can_encode`` must then be False).
        hub_options: ``revision``, ``cache_dir``, ``token``, ... for the downloads.
    """

    is_modality_tokenizer = True

    def __init__(self, repo_id: str, config: ModalityTokenizerConfig, feature_model: str | None = None,
                 hub_options: dict | None = None):
        super().__init__()
        if config.input_kind == "feature" and config.can_encode != (feature_model is not None):
            raise ValueError(f"LazyReleasedTokenizer({config.modality!r}): a feature tokenizer encodes exactly when it "
                             "has a feature_model.")
        self.repo_id = repo_id
        self.expected = config
        self.feature_model = feature_model
        self.hub_options = {key: value for key, value in dict(hub_options or {}).items() if key != "revision"}
        self.target_device = None
        self.loaded = None

    @property
    def config(self) -> ModalityTokenizerConfig:
        return self.expected if self.loaded is None else self.loaded.config

    @property
    def is_loaded(self) -> bool:
        return self.loaded is not None

    @property
    def token_shape(self) -> tuple[int, ...]:
        if self.config.input_kind in VECTOR_KINDS:
            return (self.config.num_tokens, 1, 1)
        return (self.config.grid_size, self.config.grid_size)

    def load(self) -> ReleasedModalityTokenizer:
        """Download (once) and check the tokenizer; returns it."""
        if self.loaded is None:
            tokenizer = self._build()
            self._check(tokenizer)
            tokenizer.eval().requires_grad_(False)
            if self.target_device is not None:
                tokenizer.to(self.target_device)
            self.loaded = tokenizer
        return self.loaded

    def _build(self) -> ReleasedModalityTokenizer:
        from .released import FourMTokenizerModel

        expected = self.expected
        folder = Path(self.repo_id) if os.path.isdir(self.repo_id) else download_released_folder(self.repo_id, self.hub_options)
        extractor = self.feature_model
        if extractor is not None and not os.path.isdir(extractor):
            from huggingface_hub import snapshot_download

            extractor = snapshot_download(extractor, **{k: v for k, v in self.hub_options.items() if k != "force_download"})
        try:
            return ReleasedModalityTokenizer(
                FourMTokenizerModel.from_pretrained(folder), expected.modality, expected.input_kind,
                image_size=expected.image_size, feature_extractor=extractor,
                num_diffusion_steps=expected.num_diffusion_steps,
                grid_size=expected.grid_size if expected.input_kind == "feature" and extractor is None else None)
        except ValueError as error:
            raise ValueError(f"tokenizer {self.repo_id!r} for {expected.modality!r}: {error}") from None

    def _check(self, tokenizer: ReleasedModalityTokenizer) -> None:
        found, expected = asdict(tokenizer.config), asdict(self.expected)
        wrong = {key: (found[key], expected[key]) for key in ("vocab_size", "num_tokens", "num_classes", "can_encode")
                 if found[key] != expected[key] and not (key == "vocab_size" and expected[key] is None)}
        if wrong:
            details = ", ".join(f"{key} {got} (expected {want})" for key, (got, want) in wrong.items())
            raise ValueError(f"tokenizer {self.repo_id!r} does not fit the model's {self.expected.modality!r}: {details}.")

    # ---- the processor interface, delegated to the loaded tokenizer ----------------------------------------
    def parameters(self, recurse: bool = True):
        return self.load().parameters(recurse)

    def requires_grad_(self, requires_grad: bool = True):
        """Frozen, as every processor tokenizer; before the download there is nothing to set."""
        if requires_grad:
            raise ValueError(f"LazyReleasedTokenizer({self.expected.modality!r}): released tokenizers stay frozen.")
        if self.loaded is not None:
            self.loaded.requires_grad_(False)
        return self

    def to(self, *args, **kwargs):
        device = torch._C._nn._parse_to(*args, **kwargs)[0]
        if device is not None:
            self.target_device = device
        return super().to(*args, **kwargs)

    def encode(self, batch: torch.Tensor) -> torch.LongTensor:
        return self.load().encode(batch)

    def decode(self, ids: torch.LongTensor, num_diffusion_steps: int | None = None, generator=None) -> torch.Tensor:
        return self.load().decode(ids, num_diffusion_steps=num_diffusion_steps, generator=generator)

    def postprocess(self, decoded: torch.Tensor):
        return self.load().postprocess(decoded)

    def render(self, array):
        return self.load().render(array)

    def prepare_vectors(self, value, where: str | None = None) -> torch.Tensor:
        return self.load().prepare_vectors(value, where)

    def prepare_edges(self, value, where: str | None = None) -> torch.Tensor:
        return self.load().prepare_edges(value, where)

    def save_pretrained(self, folder: str | os.PathLike) -> None:
        """Downloads the tokenizer if needed and saves it as a ``ReleasedModalityTokenizer`` folder."""
        self.load().save_pretrained(folder)


__all__ = ["LazyReleasedTokenizer", "download_hub_file", "download_released_folder"]
