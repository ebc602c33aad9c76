"""Where a saved ``FourMProcessor`` lives: a local folder or a Hub repo, with one VQ-VAE per sub-folder.

A processor folder holds the processor files (``processor_config.json``, ``preprocessor_config.json``,
``tokenizer.json``) and ``vqvae/<modality>/``, a normal ``FourMVQVAE`` folder (or a released tokenizer
wrapped by ``ReleasedModalityTokenizer``) per modality. These helpers find that folder, load its
VQ-VAEs and upload it in one commit; ``processing_fourm.py`` calls them.
"""

import os
from collections.abc import Sequence
from pathlib import Path

from ..tokenizers.vqvae import FourMVQVAE

VQVAE_FOLDER = "vqvae"
SEQUENCE_TOKENIZER_FOLDER = "sequence_tokenizer"


def push_folder(folder, repo_id: str, **kwargs):
    """Upload a saved processor folder (sub-folders included) in one commit."""
    import importlib

    try:  # by name, so this file stays loadable as remote code where fourm_hf is not installed
        hub = importlib.import_module("fourm_hf.hub")
    except ImportError:
        hub = None
    if hub is not None:
        return hub.push_checkpoint(folder, repo_id, **kwargs)
    from huggingface_hub import HfApi  # remote code without fourm_hf: a plain upload, no card

    api = HfApi(token=kwargs.get("token"))
    repo_id = api.create_repo(repo_id, private=kwargs.get("private"), exist_ok=True).repo_id
    return api.upload_folder(repo_id=repo_id, folder_path=folder, revision=kwargs.get("revision"),
                             commit_message=kwargs.get("commit_message") or "Upload processor")


def load_vqvaes(folder: Path, names: Sequence[str], device=None) -> dict:
    """The ``vqvae/<modality>/`` folders listed in processor_config.json, each placed on ``device``."""
    vqvaes = {}
    for name in names:
        vqvae_folder = folder / VQVAE_FOLDER / name
        if not vqvae_folder.is_dir():
            raise ValueError(f"{folder}: processor_config.json lists VQ-VAE {name!r} but {vqvae_folder} is missing")
        vqvaes[name] = load_modality_vqvae(vqvae_folder)
        if device is not None:
            vqvaes[name].to(device)
    return vqvaes


def save_sequence_tokenizers(folder, tokenizers) -> list[str]:
    """Write the released pose / SAM-instance tokenizers (``processor.sequence_tokenizers``) under
    ``sequence_tokenizer/<modality>/``; returns the modalities written. Lazy ones not downloaded yet stay out."""
    written = []
    for name, tokenizer in (tokenizers or {}).items():
        if getattr(tokenizer, "is_loaded", True):
            tokenizer.save_pretrained(os.path.join(folder, SEQUENCE_TOKENIZER_FOLDER, name))
            written.append(name)
    return sorted(written)


def load_sequence_tokenizers(folder: Path, names: Sequence[str], device=None) -> dict:
    """The ``sequence_tokenizer/<modality>/`` folders listed in processor_config.json."""
    tokenizers = {}
    for name in names:
        tokenizer_folder = folder / SEQUENCE_TOKENIZER_FOLDER / name
        if not tokenizer_folder.is_dir():
            raise ValueError(f"{folder}: processor_config.json lists sequence tokenizer {name!r} but {tokenizer_folder} is missing")
        tokenizers[name] = load_modality_vqvae(tokenizer_folder).eval().requires_grad_(False)
        if device is not None:
            tokenizers[name].to(device)
    return tokenizers


def load_modality_vqvae(folder: Path):
    """A ``vqvae/<modality>/`` folder: our FSQ ``FourMVQVAE``, or a released tokenizer saved by
    ``ReleasedModalityTokenizer`` (relative imports, so remote code carries the released tokenizer families)."""
    if (folder / "modality_tokenizer.json").is_file():
        from ..tokenizers.divae import FourMDiVAE  # noqa: F401  (registers the DiVAE family with the loader)
        from ..tokenizers.released_modalities import ReleasedModalityTokenizer

        return ReleasedModalityTokenizer.from_pretrained(str(folder))
    return FourMVQVAE.from_pretrained(str(folder))


def local_folder(path, kwargs) -> Path:
    """A local folder as is, else the snapshot of Hub repo ``path`` (Hub options from ``kwargs``); then ``subfolder``."""
    if os.path.isdir(path):
        folder = Path(path)
    else:
        from huggingface_hub import snapshot_download

        folder = Path(snapshot_download(
            str(path), revision=kwargs.get("revision"), cache_dir=kwargs.get("cache_dir"),
            token=kwargs.get("token"), local_files_only=kwargs.get("local_files_only", False),
        ))
    subfolder = kwargs.get("subfolder") or ""
    return folder / subfolder if subfolder else folder


__all__ = ["SEQUENCE_TOKENIZER_FOLDER", "VQVAE_FOLDER", "load_modality_vqvae", "load_sequence_tokenizers", "load_vqvaes",
           "local_folder", "push_folder", "save_sequence_tokenizers"]
