"""FourMProcessor: raw modalities <-> the token dict of a 4M model.

``processor(images=..., depth=..., normal=..., semseg=..., boxes=..., text=...)`` crops every map of a
sample with ONE shared crop (:class:`FourMImageProcessor`), turns each dense map into VQ-VAE code ids
and text / boxes into WordPiece ids (:class:`FourMTextTokenizer`), and returns the token dict that
``FourMModel`` generation (``modeling/generation.generate``) and the pipeline read::

    {
      "tok_rgb":    (B, G*G) int64   VQ-VAE ids of the RGB image, raster order   (if a tok_rgb VQ-VAE is loaded)
      "tok_depth":  (B, G*G) int64   from depth=                                  (needs a depth VQ-VAE)
      "tok_normal": (B, G*G) int64   from normal=                                 (needs a normal VQ-VAE)
      "tok_semseg": (B, G*G) int64   from semseg=                                 (needs a semseg VQ-VAE)
      "caption":    (B, L) int64     ids of text= followed by [EOS], right-padded with [PAD] = 0
      "det":        (B, L) int64     ids of the boxes (after the crop) followed by [EOS], padded with 0
      "pixel_values": (B, 3, S, S) float32, ImageNet-normalised: the ``rgb`` pixels modality
      "tok_dinov2_global": (B, H) int64  from vectors={"tok_dinov2_global": (B, 768)}  (a released MLP tokenizer)
    }

Which token modalities come out is decided by the loaded VQ-VAEs: each declares the dense map it
reads (``config.target``) and the modality it produces (``config.modality``), e.g. target
``"depth"`` -> ``"tok_depth"``; ``images=`` gives both ``pixel_values`` and every VQ-VAE whose target
is ``"rgb"``. Sequences are padded rather than returned as lists so the dict goes straight into
``generate`` (left-aligned rows, ``[PAD]`` = 0 marks the free positions); a row's length is its
number of non-zero ids. Feature-map modalities (``tok_clip``) are decoded but not encoded here:
they need the feature network, which is not part of the processor (except with a released
feature tokenizer, below).

Released 4M tokenizers (``EPFL-VILAB/4M_tokenizers_*``, loaded with ``FourMTokenizerModel``) join
``vqvaes`` wrapped in :class:`~fourm_hf.tokenization.released_modalities.ReleasedModalityTokenizer`,
which applies the reference's input transforms per modality (depth standardisation, ...) and, for
``tok_clip``-style modalities, computes the feature map from ``images=`` with a transformers vision
model; DiVAE decoders take ``num_diffusion_steps`` / ``generator`` in :meth:`FourMProcessor.decode`.
The released bottleneck-MLP tokenizers (global DINOv2 / ImageBind embeddings, human poses) tokenize
one vector per sample, given in ``vectors={modality: (B, C) array}``, into ``num_codebooks`` ids
(``config.num_tokens``), and decode back to the vector.

``processor.decode(token_dict)`` (alias ``postprocess``) goes the other way: per modality the raw
numpy arrays (RGB uint8, depth in metres, unit normals, class ids), PIL images for viewing (depth
with a colour ramp, normals as RGB, segmentation with a palette, boxes drawn on the image),
caption strings and box lists ``[{"label", "score", "box"}]``. See :meth:`FourMProcessor.decode`.

Design decision: the PROCESSOR owns the VQ-VAEs, not the model. ``FourMModel`` stays the pure token
transformer whose weights match the reference checkpoints one to one, and it trains on
pre-tokenized corpora (``data/corpus.py``) without carrying frozen tokenizers around.
``save_pretrained(dir)`` writes the processor files (``processor_config.json``,
``preprocessor_config.json``, ``tokenizer.json`` ...) and each VQ-VAE into its own subfolder
``dir/vqvae/<modality>/`` (a normal ``FourMVQVAE`` folder); ``AutoProcessor.from_pretrained(dir)``
restores all of it. Saving the model and the processor into the same folder therefore gives
the pipeline everything it needs from ONE folder. The VQ-VAEs are frozen and in eval mode.

Remote code: saved folders carry this module and the modules it imports (flat, see
``remote_code.py``) and ``auto_map`` points ``AutoProcessor`` at it, so
``AutoProcessor.from_pretrained(dir, trust_remote_code=True)`` works where fourm_hf is not
installed; the sub-components are then loaded by their own classes, not through the Auto registry.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from transformers.processing_utils import ProcessorMixin

from ..remote_code import write_remote_code
from .image_processing_fourm import FourMImageProcessor
from .tokenization_fourm import FourMTextTokenizer
from .visualization import colorize_depth, colorize_normals, colorize_semseg, draw_boxes
from .vqvae import FourMVQVAE

VQVAE_FOLDER = "vqvae"
PROCESSOR_CONFIG_NAME = "processor_config.json"
PAD_ID = 0
# Dense map (VQ-VAE ``config.target``) -> the image processor output it is encoded from.
MAP_KEYS = {"rgb": "tokenizer_rgb", "depth": "depth", "normal": "normal", "semseg": "semseg"}
# Argument of __call__ -> dense map name.
ARGUMENT_MAPS = {"images": "rgb", "depth": "depth", "normal": "normal", "semseg": "semseg"}
CAPTION_MODALITY = "caption"
DET_MODALITY = "det"
PIXELS_MODALITY = "rgb"
VECTOR_TARGET = "vector"  # the ``target`` of tokenizers that read a vector per sample (``vectors=``)
REMOTE_CODE_MODULES = (
    "remote_code.py",
    "tokenization/text_layout.py",
    "tokenization/box_text.py",
    "tokenization/tokenization_fourm.py",
    "tokenization/vqvae.py",
    "tokenization/image_crops.py",
    "tokenization/image_modalities.py",
    "tokenization/image_processing_fourm.py",
    "tokenization/visualization.py",
    "tokenization/processing_fourm.py",
)
REMOTE_CODE_AUTO_MAP = {"AutoProcessor": "processing_fourm.FourMProcessor"}
# Keys of from_pretrained that only matter for the Hub / the Auto classes (pipeline() also passes the
# model's loading options dtype / device_map to the processor).
_LOADING_KWARGS = ("cache_dir", "force_download", "local_files_only", "token", "revision", "subfolder",
                   "trust_remote_code", "_from_auto", "_from_pipeline", "proxies", "code_revision", "config",
                   "dtype", "device_map")


class FourMProcessor(ProcessorMixin):
    r"""Image processor + text tokenizer + per-modality VQ-VAEs of a 4M model (module docstring).

    Args:
        image_processor: the shared-crop :class:`FourMImageProcessor`; its ``image_size`` is the
            size every VQ-VAE reads.
        tokenizer: the :class:`FourMTextTokenizer` of captions and boxes.
        vqvaes: ``{modality name: FourMVQVAE or ReleasedModalityTokenizer}``, e.g.
            ``{"tok_depth": depth_vqvae}``; each key must equal the VQ-VAE's ``config.modality``.
            Frozen and put in eval mode here.
        max_text_length: most ids (with [EOS]) of a caption or box sequence (the modality's
            ``max_length``; 256 in 4M-7).
    """

    def __init__(self, image_processor, tokenizer, vqvaes: Mapping[str, FourMVQVAE] | None = None,
                 max_text_length: int = 256, **kwargs):
        super().__init__(image_processor, tokenizer, **kwargs)
        if not isinstance(image_processor, FourMImageProcessor):
            raise TypeError(f"image_processor must be a FourMImageProcessor, got {type(image_processor).__name__}")
        if not isinstance(tokenizer, FourMTextTokenizer):
            raise TypeError(f"tokenizer must be a FourMTextTokenizer, got {type(tokenizer).__name__}")
        if int(max_text_length) < 1:
            raise ValueError(f"max_text_length must be >= 1, got {max_text_length}")
        self.max_text_length = int(max_text_length)
        self.auto_map = dict(REMOTE_CODE_AUTO_MAP)
        self.vqvaes = {}
        for name, vqvae in dict(vqvaes or {}).items():
            self._check_vqvae(name, vqvae)
            self.vqvaes[name] = vqvae.eval().requires_grad_(False)

    def _check_vqvae(self, name: str, vqvae) -> None:
        if not isinstance(vqvae, FourMVQVAE) and not getattr(vqvae, "is_modality_tokenizer", False):
            raise TypeError(
                f"vqvaes[{name!r}] must be a FourMVQVAE or a ReleasedModalityTokenizer (a released 4M tokenizer), "
                f"got {type(vqvae).__name__}"
            )
        config = vqvae.config
        if config.modality != name:
            raise ValueError(f"vqvaes[{name!r}]: the VQ-VAE produces modality {config.modality!r}; key it by that name")
        if config.image_size != self.image_processor.image_size:
            raise ValueError(
                f"vqvaes[{name!r}]: reads {config.image_size}x{config.image_size} maps but the image processor "
                f"crops to image_size={self.image_processor.image_size}; they must match"
            )
        if config.input_kind == "semseg" and config.num_classes != self.image_processor.num_semseg_classes:
            raise ValueError(
                f"vqvaes[{name!r}]: num_classes={config.num_classes} but the image processor accepts "
                f"num_semseg_classes={self.image_processor.num_semseg_classes}; they must match"
            )
        if config.input_kind != "feature" and config.target not in MAP_KEYS and config.target != VECTOR_TARGET:
            raise ValueError(f"vqvaes[{name!r}]: unknown target map {config.target!r}; expected one of {list(MAP_KEYS)}")

    # ------------------------------------------------------------------------------- properties

    @property
    def image_size(self) -> int:
        return self.image_processor.image_size

    def vqvaes_for(self, target: str) -> dict[str, FourMVQVAE]:
        """The loaded VQ-VAEs that read the dense map ``target`` ("rgb", "depth", ...), by modality."""
        return {name: vqvae for name, vqvae in self.vqvaes.items() if vqvae.config.target == target}

    def to(self, device) -> "FourMProcessor":
        """Move the VQ-VAEs to ``device`` (inputs follow them); returns self."""
        for vqvae in self.vqvaes.values():
            vqvae.to(device)
        return self

    # ----------------------------------------------------------------------------------- encode

    def __call__(
        self,
        images=None,
        depth=None,
        normal=None,
        semseg=None,
        boxes=None,
        text=None,
        vectors: Mapping | None = None,
        *,
        crop: str | None = "center",
        crop_box=None,
        flip=None,
        generator: np.random.Generator | None = None,
        return_tensors: str | None = "pt",
    ) -> dict:
        """Tokenize one sample or a batch (lists, one entry per sample). Returns the token dict of the
        module docstring (numpy arrays instead of tensors with ``return_tensors="np"``).

        Args:
            images / depth / normal / semseg / boxes: as :class:`FourMImageProcessor` takes them;
                boxes are normalised xyxy in the original image and follow the shared crop (boxes
                outside the crop are left out, as the crop hides them).
            text: caption(s), a str or a list of str.
            vectors: ``{modality: vectors}`` for the loaded vector tokenizers (released MLP tokenizers:
                a global embedding (C,) or (B, C), a pose (23, 3, 3) or (B, 23, 3, 3)); each gives
                ``{modality: (B, num_tokens) int64}``. Vectors are not cropped.
            crop / crop_box / flip / generator: the shared crop (see ``FourMImageProcessor``);
                random crops and flips need ``generator``.
        """
        if return_tensors not in ("pt", "np"):
            raise ValueError(f"return_tensors must be 'pt' or 'np', got {return_tensors!r}")
        maps = {name: value for name, value in (("images", images), ("depth", depth), ("normal", normal), ("semseg", semseg))
                if value is not None}
        if not maps and boxes is None and text is None and not vectors:
            raise ValueError("FourMProcessor: give at least one of images, depth, normal, semseg, boxes, text or vectors")
        for argument, value in maps.items():
            target = ARGUMENT_MAPS[argument]
            if target != "rgb" and not self.vqvaes_for(target):
                raise ValueError(
                    f"{argument}: no VQ-VAE is loaded for the {target!r} map (loaded: {sorted(self.vqvaes) or 'none'}); "
                    f"add one to vqvaes to tokenize it"
                )
        batched = _is_batch(maps, boxes, text)
        outputs = {}
        if maps:
            processed = self.image_processor(
                **maps, boxes=boxes, crop=crop, crop_box=crop_box, flip=flip, generator=generator, return_tensors=None
            )
            outputs.update(self.encode_maps(processed))
            if "pixel_values" in processed:
                outputs["pixel_values"] = torch.from_numpy(np.ascontiguousarray(processed["pixel_values"], dtype=np.float32))
            if boxes is not None:
                outputs[DET_MODALITY] = self.encode_box_lists(processed["boxes"])
        elif boxes is not None:
            outputs[DET_MODALITY] = self.encode_box_lists(list(boxes) if batched else [boxes])
        if text is not None:
            outputs[CAPTION_MODALITY] = self.encode_texts(list(text) if batched else [text])
        if vectors:
            outputs.update(self.encode_vectors(vectors))
        sizes = {name: len(value) for name, value in outputs.items()}
        if len(set(sizes.values())) > 1:
            raise ValueError(f"FourMProcessor: inputs have different batch sizes {sizes}; expected one entry per sample")
        if return_tensors == "np":
            return {name: value.numpy() for name, value in outputs.items()}
        return outputs

    def encode_maps(self, processed: Mapping) -> dict[str, torch.Tensor]:
        """Image-processor output -> ``{modality: (B, G*G) int64}`` for every VQ-VAE whose map is present.

        ``processed`` holds channels-first arrays as ``FourMImageProcessor`` returns them
        (``tokenizer_rgb`` (B, 3, S, S) in [-1, 1], ``depth`` (B, 1, S, S) metres, ``normal``
        (B, 3, S, S), ``semseg`` (B, S, S)).
        """
        tokens = {}
        for name, vqvae in self.vqvaes.items():
            key = MAP_KEYS.get(vqvae.config.target)
            if key is None or key not in processed:
                continue
            batch = torch.as_tensor(np.asarray(processed[key]))
            batch = batch.long() if vqvae.config.input_kind == "semseg" else batch.float()
            device = next(vqvae.parameters()).device
            with torch.inference_mode():
                ids = vqvae.encode(batch.to(device))
            tokens[name] = ids.reshape(ids.shape[0], -1).cpu().clone()
        return tokens

    def encode_vectors(self, vectors: Mapping) -> dict[str, torch.Tensor]:
        """``{modality: vectors}`` -> ``{modality: (B, num_tokens) int64}`` with the loaded vector tokenizers."""
        if not isinstance(vectors, Mapping):
            raise ValueError(f"vectors: expected a dict {{modality: vectors}}, got {type(vectors).__name__}")
        loaded = sorted(name for name, vqvae in self.vqvaes.items() if vqvae.config.target == VECTOR_TARGET)
        tokens = {}
        for name, value in vectors.items():
            if name not in loaded:
                raise ValueError(f"vectors[{name!r}]: no vector tokenizer is loaded for it; this processor tokenizes "
                                 f"vectors for {loaded or 'no modality'}")
            vqvae = self.vqvaes[name]
            batch = vqvae.prepare_vectors(value, f"vectors[{name!r}]")
            device = next(vqvae.parameters()).device
            with torch.inference_mode():
                ids = vqvae.encode(batch.to(device))
            tokens[name] = ids.reshape(ids.shape[0], -1).cpu().clone()
        return tokens

    def encode_texts(self, texts: Sequence[str]) -> torch.Tensor:
        """Captions -> (B, L) int64: ids followed by [EOS], right-padded with [PAD]."""
        return _pad([self.tokenizer.encode_for_model(text, CAPTION_MODALITY, self.max_text_length) for text in texts])

    def encode_box_lists(self, box_lists: Sequence[Sequence[dict]]) -> torch.Tensor:
        """Box lists (normalised xyxy) -> (B, L) int64 ``det`` ids followed by [EOS], padded with [PAD]."""
        sequences = []
        for index, box_list in enumerate(box_lists):
            if not isinstance(box_list, (list, tuple)):
                raise ValueError(f"boxes[{index}]: expected a list of box dicts, got {type(box_list).__name__}")
            plain = [{"label": entry.get("label"), "box": entry.get("box")} if isinstance(entry, dict) else entry
                     for entry in box_list]
            sequences.append(self.tokenizer.encode_boxes(plain, f"{DET_MODALITY}[{index}]", self.max_text_length))
        return _pad(sequences)

    # ----------------------------------------------------------------------------------- decode

    def decode(self, tokens=None, *args, image=None, box_scores=None, num_diffusion_steps=None, generator=None, **kwargs):
        """Turn a (generated) token dict back into arrays, images, text and boxes.

        Given anything but a dict, behaves like ``tokenizer.decode`` (the ProcessorMixin contract).

        Args:
            tokens: ``{modality: ids}``; image modalities (B, G*G) or (G*G,), sequences (B, L) padded
                with [PAD] or (L,); ``pixel_values`` (B, 3, S, S) may be included.
            image: PIL image(s) (one, or one per sample) to draw ``det`` boxes on. Default: the
                decoded ``tok_rgb``, else the image in ``pixel_values``, else a grey canvas.
            box_scores: optional scores, one list per sample with one value per decoded box.
            num_diffusion_steps / generator: DDIM steps and noise seed (a ``torch.Generator`` or an int)
                for released DiVAE tokenizers (RGB, depth, normals); default: each tokenizer's own
                ``num_diffusion_steps``.

        Returns a dict with, per modality present:

        - image-token modality ``m``: ``{"array": ..., "image": [PIL RGB, one per sample]}`` where
          ``array`` is rgb uint8 (B, S, S, 3), depth float32 metres (B, S, S), normal float32 unit
          vectors (B, S, S, 3), semseg int64 class ids (B, S, S), feature float32 (B, S, S, C)
          (features have ``image`` None);
        - vector modality (released MLP tokenizers, (B, num_tokens) ids): ``{"array": float32 (B, C)
          or poses (B, 23, 3, 3), "image": None}``;
        - ``"rgb"`` (from ``pixel_values``): ``{"array": uint8 (B, S, S, 3), "image": [...]}``;
        - ``"caption"``: list of B strings;
        - ``"det"``: ``{"boxes": [[{"label", "score", "box"}]], "image": [PIL with the boxes drawn]}``.
        """
        if not isinstance(tokens, Mapping):
            return self.tokenizer.decode(tokens, *args, **kwargs)
        unknown = [name for name in tokens if name not in self.vqvaes and name not in
                   (CAPTION_MODALITY, DET_MODALITY, "pixel_values")]
        if unknown:
            raise ValueError(
                f"decode: no decoder for {unknown}; this processor decodes {sorted(self.vqvaes)}, "
                f"'caption', 'det' and 'pixel_values'"
            )
        decoded = {}
        for name in tokens:
            if name in self.vqvaes:
                decoded[name] = self.decode_image_tokens(name, tokens[name], num_diffusion_steps=num_diffusion_steps,
                                                         generator=generator)
        if "pixel_values" in tokens:
            decoded[PIXELS_MODALITY] = self.decode_pixel_values(tokens["pixel_values"])
        if CAPTION_MODALITY in tokens:
            decoded[CAPTION_MODALITY] = [self.tokenizer.decode_text(row) for row in _sequence_rows(tokens[CAPTION_MODALITY], CAPTION_MODALITY)]
        if DET_MODALITY in tokens:
            decoded[DET_MODALITY] = self._decode_det(tokens[DET_MODALITY], decoded, image, box_scores)
        return decoded

    postprocess = decode

    def decode_image_tokens(self, name: str, ids, num_diffusion_steps=None, generator=None) -> dict:
        """(B, N) or (N,) ids of modality ``name`` (N = G*G, or ``num_tokens`` of a vector tokenizer) ->
        ``{"array": ..., "image": [PIL] or None}``.

        ``num_diffusion_steps`` / ``generator`` reach released diffusion (DiVAE) tokenizers only."""
        vqvae = self.vqvaes[name]
        grid = vqvae.config.grid_size
        token_shape = getattr(vqvae, "token_shape", (grid, grid))
        count = int(np.prod(token_shape))
        ids = torch.as_tensor(np.asarray(ids.cpu() if isinstance(ids, torch.Tensor) else ids))
        if ids.dim() == 1:
            ids = ids[None]
        if ids.dim() != 2 or ids.shape[1] != count:
            raise ValueError(f"{name}: ids must have shape (B, {count}) or ({count},), got {tuple(ids.shape)}")
        if ids.dtype.is_floating_point or ids.dtype == torch.bool:
            raise ValueError(f"{name}: ids must be integers, got dtype {ids.dtype}")
        vocab = vqvae.config.vocab_size
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= vocab):
            raise ValueError(f"{name}: ids must lie in [0, {vocab}), got values in [{int(ids.min())}, {int(ids.max())}]")
        device = next(vqvae.parameters()).device
        released = getattr(vqvae, "is_modality_tokenizer", False)
        options = {"num_diffusion_steps": num_diffusion_steps, "generator": generator} if released else {}
        with torch.inference_mode():
            maps = vqvae.decode(ids.long().reshape(-1, *token_shape).to(device), **options)
        array = vqvae.postprocess(maps)
        kind = vqvae.config.input_kind
        if released:
            rendered = vqvae.render(array)
            images = None if rendered is None else [Image.fromarray(sample) for sample in rendered]
        elif kind == "rgb":
            images = [Image.fromarray(sample) for sample in array]
        elif kind == "depth":
            images = [Image.fromarray(colorize_depth(sample)) for sample in array]
        elif kind == "normal":
            images = [Image.fromarray(colorize_normals(sample)) for sample in array]
        elif kind == "semseg":
            images = [Image.fromarray(colorize_semseg(sample, vqvae.config.num_classes)) for sample in array]
        else:
            images = None
        return {"array": array, "image": images}

    def decode_pixel_values(self, pixel_values) -> dict:
        """ImageNet-normalised (B, 3, S, S) -> ``{"array": uint8 (B, S, S, 3), "image": [PIL]}``."""
        pixels = np.asarray(pixel_values.detach().cpu() if isinstance(pixel_values, torch.Tensor) else pixel_values,
                            dtype=np.float32)
        if pixels.ndim == 3:
            pixels = pixels[None]
        if pixels.ndim != 4 or pixels.shape[1] != 3:
            raise ValueError(f"pixel_values: expected shape (B, 3, S, S), got {pixels.shape}")
        mean = np.asarray(self.image_processor.image_mean, dtype=np.float32).reshape(1, 3, 1, 1)
        std = np.asarray(self.image_processor.image_std, dtype=np.float32).reshape(1, 3, 1, 1)
        rgb = np.clip(np.round((pixels * std + mean) * 255.0), 0, 255).astype(np.uint8).transpose(0, 2, 3, 1)
        return {"array": rgb, "image": [Image.fromarray(sample) for sample in rgb]}

    def _decode_det(self, ids, decoded: dict, image, box_scores) -> dict:
        rows = _sequence_rows(ids, DET_MODALITY)
        box_lists = []
        for index, row in enumerate(rows):
            boxes = self.tokenizer.decode_boxes(row)
            scores = None if box_scores is None else list(box_scores[index])
            if scores is not None and len(scores) != len(boxes):
                raise ValueError(f"box_scores[{index}]: {len(scores)} scores for {len(boxes)} decoded boxes")
            box_lists.append([{"label": box["label"], "score": None if scores is None else float(scores[j]),
                               "box": box["box"]} for j, box in enumerate(boxes)])
        backgrounds = self._box_backgrounds(len(rows), decoded, image)
        return {"boxes": box_lists, "image": [draw_boxes(bg, boxes) for bg, boxes in zip(backgrounds, box_lists)]}

    def _box_backgrounds(self, batch_size: int, decoded: dict, image) -> list[Image.Image]:
        if image is not None:
            images = list(image) if isinstance(image, (list, tuple)) else [image] * batch_size
            if len(images) != batch_size:
                raise ValueError(f"image: {len(images)} images for {batch_size} box lists")
            return images
        for name, vqvae in self.vqvaes.items():
            if name in decoded and vqvae.config.input_kind == "rgb" and len(decoded[name]["image"]) == batch_size:
                return decoded[name]["image"]
        if PIXELS_MODALITY in decoded and len(decoded[PIXELS_MODALITY]["image"]) == batch_size:
            return decoded[PIXELS_MODALITY]["image"]
        return [Image.new("RGB", (self.image_size, self.image_size), (128, 128, 128))] * batch_size

    # ----------------------------------------------------------------------------- save / load

    def to_dict(self):
        # The VQ-VAEs are saved as their own folders, not in processor_config.json; leave them out
        # of the base class's deep copy of __dict__.
        vqvaes = self.__dict__.pop("vqvaes", {})
        try:
            output = super().to_dict()
        finally:
            self.vqvaes = vqvaes
        output["vqvae_modalities"] = sorted(vqvaes)
        return output

    def save_pretrained(self, save_directory, push_to_hub: bool = False, **kwargs):
        """Write the processor files, ``preprocessor_config.json`` (so ``AutoImageProcessor`` works on
        the folder too), every VQ-VAE under ``vqvae/<modality>/`` and the remote-code modules.

        With ``push_to_hub=True`` the folder is then uploaded to ``repo_id`` (default: the folder's
        name); the other keywords go to :meth:`push_to_hub`."""
        repo_id = kwargs.pop("repo_id", None) or Path(save_directory).name
        os.makedirs(save_directory, exist_ok=True)
        files = super().save_pretrained(save_directory)
        self.image_processor.save_pretrained(save_directory)
        for name, vqvae in self.vqvaes.items():
            vqvae.save_pretrained(os.path.join(save_directory, VQVAE_FOLDER, name))
        write_remote_code(save_directory, REMOTE_CODE_MODULES)
        if push_to_hub:
            _push_folder(save_directory, repo_id, **kwargs)
        return files

    def push_to_hub(self, repo_id: str, **kwargs):
        """Upload the processor (with ``vqvae/<modality>/``) in one commit; a repo without a card gets the
        generated 4M model card (``fourm_hf.hub.push_checkpoint``, same keywords)."""
        import tempfile

        with tempfile.TemporaryDirectory() as folder:
            self.save_pretrained(folder)
            return _push_folder(folder, repo_id, **kwargs)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs) -> "FourMProcessor":
        """Load a folder written by :meth:`save_pretrained` (or a Hub repo holding one).

        ``max_text_length`` may be overridden; Hub options (``revision``, ``cache_dir``, ``token``,
        ``local_files_only``) are used to download a repo; ``device`` places the VQ-VAEs.
        """
        folder = _local_folder(pretrained_model_name_or_path, kwargs)
        device = kwargs.pop("device", None)
        for key in _LOADING_KWARGS:
            kwargs.pop(key, None)
        unknown = set(kwargs) - {"max_text_length"}
        if unknown:
            raise TypeError(f"FourMProcessor.from_pretrained: unexpected arguments {sorted(unknown)}")
        config_file = folder / PROCESSOR_CONFIG_NAME
        if not config_file.is_file():
            raise ValueError(f"{folder}: no {PROCESSOR_CONFIG_NAME}; not a saved FourMProcessor")
        config = json.loads(config_file.read_text(encoding="utf-8"))
        image_processor = FourMImageProcessor.from_pretrained(str(folder))
        tokenizer = FourMTextTokenizer.from_pretrained(str(folder))
        vqvaes = {}
        for name in config.get("vqvae_modalities", []):
            vqvae_folder = folder / VQVAE_FOLDER / name
            if not vqvae_folder.is_dir():
                raise ValueError(f"{folder}: processor_config.json lists VQ-VAE {name!r} but {vqvae_folder} is missing")
            vqvaes[name] = _load_modality_vqvae(vqvae_folder)
            if device is not None:
                vqvaes[name].to(device)
        max_text_length = kwargs.get("max_text_length", config.get("max_text_length", 256))
        return cls(image_processor, tokenizer, vqvaes=vqvaes, max_text_length=max_text_length)


# ------------------------------------------------------------------------------------------ helpers


def _is_batch(maps: dict, boxes, text) -> bool:
    """Lists mean a batch. Boxes are always a list: a batch when its entries are lists themselves."""
    kinds = {}
    for name, value in maps.items():
        kinds[name] = isinstance(value, (list, tuple))
    if text is not None:
        kinds["text"] = isinstance(text, (list, tuple))
    if boxes is not None:
        if not isinstance(boxes, (list, tuple)):
            raise ValueError(f"boxes: expected a list of box dicts (one sample) or a list of such lists, got {type(boxes).__name__}")
        nested = len(boxes) > 0 and all(isinstance(entry, (list, tuple)) for entry in boxes)
        if kinds:
            if any(kinds.values()) and not nested and len(boxes) > 0:
                raise ValueError("boxes: the other inputs are batches (lists); give one list of box dicts per sample")
        else:
            kinds["boxes"] = nested
    if len(set(kinds.values())) > 1:
        raise ValueError(f"FourMProcessor: some inputs are batches (lists) and some single samples: {kinds}")
    return next(iter(kinds.values()), False)


def _pad(sequences: list[list[int]]) -> torch.Tensor:
    """Right-pad id lists with [PAD] into a (B, L) int64 tensor."""
    length = max((len(s) for s in sequences), default=0)
    padded = torch.full((len(sequences), length), PAD_ID, dtype=torch.long)
    for row, sequence in enumerate(sequences):
        padded[row, : len(sequence)] = torch.as_tensor(sequence, dtype=torch.long)
    return padded


def _sequence_rows(ids, name: str) -> list[list[int]]:
    """(B, L) tensor / array, a list of id lists, or one (L,) sequence -> list of id lists."""
    if isinstance(ids, torch.Tensor):
        ids = ids.detach().cpu().numpy()
    if isinstance(ids, np.ndarray):
        if ids.ndim == 1:
            ids = ids[None]
        if ids.ndim != 2 or not np.issubdtype(ids.dtype, np.integer):
            raise ValueError(f"{name}: ids must be an integer (B, L) or (L,) array, got {ids.dtype} {ids.shape}")
        return [row.tolist() for row in ids]
    if isinstance(ids, (list, tuple)):
        if ids and all(isinstance(v, (int, np.integer)) for v in ids):
            return [list(ids)]
        return [np.asarray(row.cpu() if isinstance(row, torch.Tensor) else row).tolist() for row in ids]
    raise ValueError(f"{name}: expected ids as a tensor, an array or lists of ints, got {type(ids).__name__}")


def _push_folder(folder, repo_id: str, **kwargs):
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


def _load_modality_vqvae(folder: Path):
    """A ``vqvae/<modality>/`` folder: our FSQ ``FourMVQVAE``, or a released tokenizer saved by
    ``ReleasedModalityTokenizer`` (imported by name, so remote code without it still loads FSQ folders)."""
    import importlib

    if (folder / "modality_tokenizer.json").is_file():
        module = importlib.import_module("fourm_hf.tokenization.released_modalities")
        return module.ReleasedModalityTokenizer.from_pretrained(str(folder))
    return FourMVQVAE.from_pretrained(str(folder))


def _local_folder(path, kwargs) -> Path:
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


__all__ = ["FourMProcessor", "VQVAE_FOLDER"]


# ------------------------------------------------------------------------------------------ command line


def assemble_processor(text_tokenizer, vqvae_folders: Sequence, out, num_semseg_classes: int | None = None,
                       max_text_length: int = 256) -> FourMProcessor:
    """Build a FourMProcessor from a saved text tokenizer and saved VQ-VAE folders, save it to ``out``.

    The image size comes from the VQ-VAEs (they must agree); the semseg class count from the semseg
    VQ-VAE when there is one. The folder is written under a temporary name, then renamed.
    """
    if not vqvae_folders:
        raise ValueError("assemble-processor: give at least one --vqvae folder")
    vqvaes = [FourMVQVAE.from_pretrained(str(folder)) for folder in vqvae_folders]
    sizes = {vqvae.config.image_size for vqvae in vqvaes}
    if len(sizes) != 1:
        raise ValueError(f"assemble-processor: the VQ-VAEs read different image sizes {sorted(sizes)}; they must agree")
    for vqvae in vqvaes:
        if vqvae.config.input_kind == "semseg":
            num_semseg_classes = vqvae.config.num_classes
    options = {"image_size": sizes.pop()}
    if num_semseg_classes is not None:
        options["num_semseg_classes"] = int(num_semseg_classes)
    processor = FourMProcessor(
        FourMImageProcessor(**options),
        FourMTextTokenizer.from_pretrained(str(text_tokenizer)),
        vqvaes={vqvae.config.modality: vqvae for vqvae in vqvaes},
        max_text_length=max_text_length,
    )
    out = Path(out)
    if out.exists():
        raise ValueError(f"assemble-processor: {out} already exists; choose a new folder")
    staging = out.with_name(f".{out.name}.tmp")
    if staging.exists():
        shutil.rmtree(staging)
    processor.save_pretrained(staging)
    os.replace(staging, out)
    return processor


def add_arguments(parser) -> None:
    parser.add_argument("--text-tokenizer", required=True, help="folder of a saved FourMTextTokenizer")
    parser.add_argument("--vqvae", nargs="+", required=True, metavar="DIR", help="folders of saved FourMVQVAE models")
    parser.add_argument("--out", required=True, help="new folder for the processor")
    parser.add_argument("--num-semseg-classes", type=int, default=None,
                        help="class count for segmentation inputs (default: from the semseg VQ-VAE)")
    parser.add_argument("--max-text-length", type=int, default=256)


def main(args) -> int:
    processor = assemble_processor(args.text_tokenizer, args.vqvae, args.out, args.num_semseg_classes,
                                   args.max_text_length)
    print(f"Wrote {args.out}: image size {processor.image_size}, VQ-VAEs {sorted(processor.vqvaes)}")
    return 0
