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
      "metadata", "color_palette", "human_poses", "sam_instance": (B, L) int64, like "caption", from
                    4M-21's structured data (``sequence_modalities``)
      "pixel_values": (B, 3, S, S) float32, ImageNet-normalised: the ``rgb`` pixels modality
      "tok_dinov2_global": (B, H) int64  from vectors={"tok_dinov2_global": (B, 768)}  (a released MLP tokenizer)
      "tok_sam_edge": (B, G*G) int64  from edges={"tok_sam_edge": (B, S, S) in [0, 1]}  (the released edge DiVAE)
    }

Which token modalities come out is decided by the loaded VQ-VAEs: each declares the dense map it
reads (``config.target``) and the modality it produces (``config.modality``), e.g. target
``"depth"`` -> ``"tok_depth"``; ``images=`` gives both ``pixel_values`` and every VQ-VAE whose target
is ``"rgb"``. Which keyword carries which map is derived from the modality registry
(``ModalitySpec.processor_argument``, ``processor_inputs.py``); a registered modality with a dense map of
its own comes in ``maps={modality: map}``. Sequences are padded rather than returned as lists so the dict goes straight into
``generate`` (left-aligned rows, ``[PAD]`` = 0 marks the free positions); a row's length is its
number of non-zero ids. Feature-map modalities (``tok_clip``) are decoded but not encoded here:
they need the feature network, which is not part of the processor (except with a released
feature tokenizer, below).

Call options follow transformers' ``ProcessingKwargs`` contract (:class:`FourMProcessorKwargs`):
flat keywords, the per-modality dicts ``text_kwargs={...}`` / ``images_kwargs={...}`` and
``common_kwargs={...}`` are merged by ``ProcessorMixin._merge_kwargs`` as in every transformers
processor (a keyword given both flat and in its dict is an error; the tokenizer's init kwargs
such as ``padding`` / ``max_length`` are defaults). ``text_kwargs`` shape the two sequence
modalities ``caption`` and ``det``: ``padding`` (``"longest"`` by default, ``"max_length"`` or
False), ``max_length`` (default ``max_text_length``), ``truncation`` (default off: a sequence
over ``max_length`` raises; True keeps its first ``max_length - 1`` ids and [EOS]) and
``pad_to_multiple_of``. ``images_kwargs`` go to :class:`FourMImageProcessor` (the shared crop:
``crop``, ``crop_box``, ``flip``, ``flip_probability``, ``generator``; the RGB settings
``do_rescale``, ``do_normalize``, ``image_mean``, ...). ``return_tensors`` (``"pt"`` by default,
or ``"np"``) sets the type of every output.

Released 4M tokenizers (``EPFL-VILAB/4M_tokenizers_*``, loaded with ``FourMTokenizerModel``) join
``vqvaes`` wrapped in :class:`~fourm_hf.tokenizers.released_modalities.ReleasedModalityTokenizer`,
which applies the reference's input transforms per modality (depth standardisation, ...) and, for
``tok_clip``-style modalities, computes the feature map from ``images=`` with a transformers vision
model; DiVAE decoders take ``num_diffusion_steps`` / ``generator`` in :meth:`FourMProcessor.decode`.
The released bottleneck-MLP tokenizers (global DINOv2 / ImageBind embeddings, human poses) tokenize
one vector per sample, given in ``vectors={modality: (B, C) array}``, into ``num_codebooks`` ids
(``config.num_tokens``), and decode back to the vector.

``processor.decode(token_dict)`` (alias ``postprocess``) goes the other way: per modality the raw
numpy arrays (RGB uint8, depth in metres, unit normals, class ids), PIL images for viewing (depth
with a colour ramp, normals as RGB, segmentation with a palette, boxes drawn on the image),
caption strings and box lists ``[{"label", "score", "box"}]`` (``token_decoding.py``). See
:meth:`FourMProcessor.decode`.

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

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Unpack

import numpy as np
import torch
from transformers.image_utils import ImageInput
from transformers.processing_utils import ImagesKwargs, ProcessingKwargs, ProcessorMixin

from ..remote_code import write_class_code
from .image_processing_fourm import FourMImageProcessor
from .processor_files import (VQVAE_FOLDER, load_sequence_tokenizers, load_vqvaes, local_folder, push_folder,
                              save_sequence_tokenizers)
from .sequence_tokens import SequenceTokenizers
from .processor_inputs import crop_own_maps, is_batch, map_arguments, map_keys, take_generator, tensor_type
from .tokenizer_placement import placed
from ..text.sequence_format import fit_sequence, pad_sequences, sequence_options
from .token_decoding import box_backgrounds, decode_boxes, decode_image_tokens, decode_pixel_values, sequence_rows
from ..text.sequence_modalities import SEQUENCE_MODALITIES, decode_sequences, encode_sequences
from ..text.tokenization_fourm import FourMTextTokenizer
from ..tokenizers.vqvae import FourMVQVAE

PROCESSOR_CONFIG_NAME = "processor_config.json"
CAPTION_MODALITY = "caption"
DET_MODALITY = "det"
PIXELS_MODALITY = "rgb"
VECTOR_TARGET = "vector"  # the ``target`` of tokenizers that read a vector per sample (``vectors=``)
EDGE_TARGET = "edge"  # the ``target`` of edge tokenizers (``edges=``: maps in [0, 1] at the processor's size)
REMOTE_CODE_AUTO_MAP = {"AutoProcessor": "processing_fourm.FourMProcessor"}
# Keys of from_pretrained that only matter for the Hub / the Auto classes (pipeline() also passes the
# model's loading options dtype / device_map to the processor).
_LOADING_KWARGS = ("cache_dir", "force_download", "local_files_only", "token", "revision", "subfolder",
                   "trust_remote_code", "_from_auto", "_from_pipeline", "proxies", "code_revision", "config",
                   "dtype", "device_map")
# from_pretrained keywords that are components or __init__ options, not component options.
_COMPONENTS = ("image_processor", "tokenizer", "vqvaes")
_INIT_OPTIONS = ("max_text_length",)
# ``loader(cls, name, kwargs) -> processor or None``, tried first by from_pretrained (released repo ids: ml4m)
PRETRAINED_SOURCE_LOADERS: list = []


class FourMImagesKwargs(ImagesKwargs, total=False):
    """Per-call options of the shared crop, forwarded to :meth:`FourMImageProcessor.__call__`.

    crop: ``None``, ``"center"`` (the image processor's default) or ``"random"``.
    crop_box: explicit (left, top, right, bottom) pixel boxes, (4,) or (B, 4).
    flip: explicit horizontal flips, a bool or B bools.
    flip_probability: probability of a flip when ``flip`` is not given.
    generator: ``numpy.random.Generator`` for random crops and flips (used, never copied).
    """

    crop: str | None
    crop_box: Any
    flip: Any
    flip_probability: float | None
    generator: Any


class FourMProcessorKwargs(ProcessingKwargs, total=False):
    """:meth:`FourMProcessor.__call__` keywords: ``text_kwargs`` (transformers' ``TextKwargs``; the sequence
    options are used, see the module docstring), ``images_kwargs`` (the image processor's plus
    :class:`FourMImagesKwargs`); defaults are the class attributes (transformers 5 deprecates ``_defaults``)."""

    images_kwargs: FourMImagesKwargs


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
            ``max_length``; 256 in 4M-7); ``max_length=`` of a call overrides it for that call.
    """

    valid_processor_kwargs = FourMProcessorKwargs
    # Call defaults (lowest priority in _merge_kwargs): 4M's sequences are right-padded to the
    # longest row, and the token dict goes to the model as torch tensors.
    text_kwargs = {"padding": "longest", "return_tensors": "pt"}
    images_kwargs = {"return_tensors": "pt"}

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
        self.vqvaes, self._offload_device = {}, None  # offload_tokenizers() sets the device
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

    # ------------------------------------------------------------------------------- properties

    @property
    def image_size(self) -> int:
        return self.image_processor.image_size

    @property
    def model_input_names(self) -> list[str]:
        """The keys of a call with ``images`` and ``text`` (transformers' processor contract): ``pixel_values``, the
        token modalities the loaded tokenizers compute from the image (in ``vqvaes`` order) and ``caption``. The
        other arguments each add their own modality's key (``boxes`` -> ``det``, ``depth`` -> ``tok_depth``, ...)."""
        from_image = [name for name, vqvae in self.vqvaes.items()
                      if vqvae.config.target == PIXELS_MODALITY and getattr(vqvae.config, "can_encode", True)]
        return ["pixel_values", *from_image, CAPTION_MODALITY]

    def vqvaes_for(self, target: str) -> dict[str, FourMVQVAE]:
        """The loaded VQ-VAEs that read the dense map ``target`` ("rgb", "depth", ...), by modality."""
        return {name: vqvae for name, vqvae in self.vqvaes.items() if vqvae.config.target == target}

    def to(self, device) -> "FourMProcessor":
        """Move the VQ-VAEs to ``device`` (inputs follow them) and keep them there; returns self."""
        for vqvae in self.vqvaes.values():
            vqvae.to(device)
        self._offload_device = None
        return self

    def offload_tokenizers(self, device) -> "FourMProcessor":
        """Rest the VQ-VAEs on the CPU; each moves to ``device`` only while it encodes or decodes, and
        back afterwards, also after an error (``tokenizer_placement.placed``). Returns self."""
        self.to("cpu")._offload_device = None if device is None else torch.device(device)
        return self

    # ----------------------------------------------------------------------------------- encode

    def __call__(
        self,
        images: ImageInput | None = None,
        depth: ImageInput | None = None,
        normal: ImageInput | None = None,
        semseg: ImageInput | None = None,
        boxes: list[dict] | list[list[dict]] | None = None,
        text: str | list[str] | None = None,
        vectors: Mapping | None = None,
        edges: Mapping | None = None,
        metadata=None,
        color_palette=None,
        human_poses=None,
        sam_instance=None,
        maps: Mapping | None = None,
        **kwargs: Unpack[FourMProcessorKwargs],
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
            edges: ``{modality: edge maps}`` for the loaded edge tokenizers (``tok_sam_edge``, ``tok_canny_edge``):
                (S, S) or (B, S, S) in [0, 1] at the processor's size S (not cropped); each gives
                ``{modality: (B, G*G) int64}``.
            metadata / color_palette / human_poses / sam_instance: 4M-21's text-serialised
                modalities as structured data (or their text), one sample's or a list of them; see
                :mod:`~fourm_hf.text.sequence_modalities`.
            maps: ``{modality: map(s)}`` for modalities with a dense map of their own (a registered
                ``ModalitySpec(processor_argument="maps")``), read as its VQ-VAE's ``input_kind`` says and
                cropped with the sample's shared crop; each gives ``{modality: (B, G*G) int64}``.
            kwargs: :class:`FourMProcessorKwargs`, flat or as ``text_kwargs`` / ``images_kwargs`` /
                ``common_kwargs``: the shared crop (``crop``, ``crop_box``, ``flip``, ``generator``;
                random crops and flips need ``generator``) and the image processor's RGB settings
                go to the image processor; ``padding`` / ``max_length`` / ``truncation`` /
                ``pad_to_multiple_of`` shape ``caption`` and ``det``; ``return_tensors``.
        """
        for name in ("videos", "audio"):
            if kwargs.get(name) is not None:
                raise ValueError(f"FourMProcessor: 4M takes no {name}; its inputs are images, depth, normal, semseg, "
                                 "boxes and text")
        generator = take_generator(kwargs)
        merged = self._merge_kwargs(FourMProcessorKwargs, tokenizer_init_kwargs=self.tokenizer.init_kwargs, **kwargs)
        images_kwargs = merged["images_kwargs"]
        return_tensors = tensor_type(merged["text_kwargs"].pop("return_tensors", None),
                                      images_kwargs.pop("return_tensors", None))
        if generator is not None:
            images_kwargs["generator"] = generator
        text_options = sequence_options(merged["text_kwargs"], self.max_text_length)

        if maps is not None and not isinstance(maps, Mapping):
            raise ValueError(f"maps: expected a dict {{modality: map}}, got {type(maps).__name__}")
        own_maps = dict(maps or {})
        sequences = {name: value for name, value in (("metadata", metadata), ("color_palette", color_palette),
                                                     ("human_poses", human_poses), ("sam_instance", sam_instance))
                     if value is not None}
        maps = {name: value for name, value in (("images", images), ("depth", depth), ("normal", normal), ("semseg", semseg))
                if value is not None}
        if not maps and not own_maps and boxes is None and text is None and not vectors and not edges and not sequences:
            raise ValueError("FourMProcessor: give at least one of images, depth, normal, semseg, boxes, text, vectors, edges, "
                             f"maps, {', '.join(SEQUENCE_MODALITIES)}")
        targets = map_arguments()
        for argument, value in maps.items():
            target = targets.get(argument, argument)
            if target != "rgb" and not self.vqvaes_for(target):
                raise ValueError(
                    f"{argument}: no VQ-VAE is loaded for the {target!r} map (loaded: {sorted(self.vqvaes) or 'none'}); "
                    f"add one to vqvaes to tokenize it"
                )
        batched = is_batch({**maps, **{f"maps[{name!r}]": value for name, value in own_maps.items()}}, boxes, text)
        outputs, processed = {}, None
        if maps:
            processed = self.image_processor(**maps, boxes=boxes, **images_kwargs, return_tensors=None)
            outputs.update(self.encode_maps(processed))
            if "pixel_values" in processed:
                outputs["pixel_values"] = torch.from_numpy(np.ascontiguousarray(processed["pixel_values"], dtype=np.float32))
            if boxes is not None:
                outputs[DET_MODALITY] = self.encode_box_lists(processed["boxes"], **text_options)
        elif boxes is not None:
            outputs[DET_MODALITY] = self.encode_box_lists(list(boxes) if batched else [boxes], **text_options)
        if own_maps:
            cropped = crop_own_maps(self.image_processor, self.vqvaes, own_maps, processed, images_kwargs)
            outputs.update({name: self.encode_map(name, batch) for name, batch in cropped.items()})
        if text is not None:
            outputs[CAPTION_MODALITY] = self.encode_texts(list(text) if batched else [text], **text_options)
        if vectors:
            outputs.update(self.encode_vectors(vectors))
        if edges:
            outputs.update(self.encode_vectors(edges, EDGE_TARGET))
        outputs.update(encode_sequences(self.tokenizer, sequences))
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
        tokens, keys = {}, map_keys()
        for name, vqvae in self.vqvaes.items():
            key = keys.get(vqvae.config.target)
            if key is None or key not in processed or not getattr(vqvae.config, "can_encode", True):  # decode-only
                continue
            tokens[name] = self.encode_map(name, processed[key])
        return tokens

    def encode_map(self, name: str, batch) -> torch.Tensor:
        """One cropped map batch as the image processor returns it (channels first) -> (B, G*G) int64
        ids of the VQ-VAE of modality ``name``."""
        vqvae = self.vqvaes[name]
        batch = torch.as_tensor(np.asarray(batch))
        batch = batch.long() if vqvae.config.input_kind == "semseg" else batch.float()
        with placed(vqvae, self._offload_device), torch.inference_mode():
            ids = vqvae.encode(batch.to(next(vqvae.parameters()).device))
        return ids.reshape(ids.shape[0], -1).cpu().clone()

    def encode_vectors(self, vectors: Mapping, target: str = VECTOR_TARGET) -> dict[str, torch.Tensor]:
        """``{modality: vectors}`` -> ``{modality: (B, num_tokens) int64}`` with the loaded vector tokenizers;
        with ``target="edge"``, ``{modality: edge maps}`` (the ``edges=`` argument) with the edge tokenizers."""
        argument = "vectors" if target == VECTOR_TARGET else "edges"
        if not isinstance(vectors, Mapping):
            raise ValueError(f"{argument}: expected a dict {{modality: {argument}}}, got {type(vectors).__name__}")
        loaded = sorted(name for name, vqvae in self.vqvaes.items() if vqvae.config.target == target)
        tokens = {}
        for name, value in vectors.items():
            if name not in loaded:
                raise ValueError(f"{argument}[{name!r}]: no {target} tokenizer is loaded for it; this processor tokenizes "
                                 f"{argument} for {loaded or 'no modality'}")
            vqvae = self.vqvaes[name]
            prepare = vqvae.prepare_vectors if target == VECTOR_TARGET else vqvae.prepare_edges
            batch = prepare(value, f"{argument}[{name!r}]")
            with placed(vqvae, self._offload_device), torch.inference_mode():
                ids = vqvae.encode(batch.to(next(vqvae.parameters()).device))
            tokens[name] = ids.reshape(ids.shape[0], -1).cpu().clone()
        return tokens

    def encode_texts(self, texts: Sequence[str], padding: str = "longest", max_length: int | None = None,
                     truncation: bool = False, pad_to_multiple_of: int | None = None) -> torch.Tensor:
        """Captions -> (B, L) int64: ids followed by [EOS], right-padded with [PAD] (options: ``sequence_format.py``)."""
        max_length = self.max_text_length if max_length is None else max_length
        eos = self.tokenizer.eos_token_id
        rows = [fit_sequence(self.tokenizer.encode_for_model(text, CAPTION_MODALITY), max_length, truncation,
                             CAPTION_MODALITY, eos) for text in texts]
        return pad_sequences(rows, padding, max_length, pad_to_multiple_of, CAPTION_MODALITY)

    def encode_box_lists(self, box_lists: Sequence[Sequence[dict]], padding: str = "longest",
                         max_length: int | None = None, truncation: bool = False,
                         pad_to_multiple_of: int | None = None) -> torch.Tensor:
        """Box lists (normalised xyxy) -> (B, L) int64 ``det`` ids followed by [EOS], padded with [PAD]."""
        max_length = self.max_text_length if max_length is None else max_length
        rows = []
        for index, box_list in enumerate(box_lists):
            if not isinstance(box_list, (list, tuple)):
                raise ValueError(f"boxes[{index}]: expected a list of box dicts, got {type(box_list).__name__}")
            plain = [{"label": entry.get("label"), "box": entry.get("box")} if isinstance(entry, dict) else entry
                     for entry in box_list]
            name = f"{DET_MODALITY}[{index}]"
            ids = self.tokenizer.encode_boxes(plain, name)
            rows.append(fit_sequence(ids, max_length, truncation, name, self.tokenizer.eos_token_id))
        return pad_sequences(rows, padding, max_length, pad_to_multiple_of, DET_MODALITY)

    # ----------------------------------------------------------------------------------- decode

    def decode(self, tokens=None, *args, image=None, box_scores=None, box_token_probs=None, num_diffusion_steps=None,
               generator=None, **kwargs):
        """Turn a (generated) token dict back into arrays, images, text and boxes (``token_decoding.py``).

        Given anything but a dict, behaves like ``tokenizer.decode`` (the ProcessorMixin contract).

        Args:
            tokens: ``{modality: ids}``; image modalities (B, G*G) or (G*G,), sequences (B, L) padded
                with [PAD] or (L,); ``pixel_values`` (B, 3, S, S) may be included.
            image: PIL image(s) (one, or one per sample) to draw ``det`` boxes on. Default: the
                decoded ``tok_rgb``, else the image in ``pixel_values``, else a grey canvas.
            box_scores: optional scores: one number for every box, or one list per sample with one value
                per decoded box.
            box_token_probs: instead of ``box_scores``, the generated ``det`` tokens' probabilities, (B, L) or
                one list per sample: a box's score is the mean over its tokens (``text/box_scores.py``).
            num_diffusion_steps / generator: DDIM steps and noise seed (a ``torch.Generator`` or an int)
                for released DiVAE tokenizers (RGB, depth, normals); default: each tokenizer's own
                ``num_diffusion_steps``.

        Returns a dict with, per modality present:

        - image-token modality: ``{"array", "image": [PIL RGB per sample]}``, ``array`` rgb uint8 (B, S, S, 3),
          depth float32 metres (B, S, S), normal float32 (B, S, S, 3), semseg int64 (B, S, S), feature
          float32 (B, S, S, C) (features have ``image`` None);
        - vector modality (released MLP tokenizers, (B, num_tokens) ids): ``{"array": float32 (B, C)
          or poses (B, 23, 3, 3), "image": None}``;
        - ``"rgb"`` (from ``pixel_values``): ``{"array": uint8 (B, S, S, 3), "image": [...]}``;
        - ``"caption"``: list of B strings;
        - ``"det"``: ``{"boxes": [[{"label", "score", "box"}]], "image": [PIL with the boxes drawn]}``;
        - ``metadata`` / ``color_palette`` / ``human_poses`` / ``sam_instance``: B dicts ``{"text", "data",
          "error"}``, the parsed structure in ``data`` or, where the text does not parse, None and the
          message in ``error`` (``sequence_modalities.decode_sequences``).
        """
        if not isinstance(tokens, Mapping):
            return self.tokenizer.decode(tokens, *args, **kwargs)
        unknown = [name for name in tokens if name not in self.vqvaes and name not in
                   (CAPTION_MODALITY, DET_MODALITY, "pixel_values", *SEQUENCE_MODALITIES)]
        if unknown:
            raise ValueError(
                f"decode: no decoder for {unknown}; this processor decodes {sorted(self.vqvaes)}, "
                f"'caption', 'det', {', '.join(repr(n) for n in SEQUENCE_MODALITIES)} and 'pixel_values'"
            )
        decoded = {}
        for name in tokens:
            if name in self.vqvaes:
                decoded[name] = self.decode_image_tokens(name, tokens[name], num_diffusion_steps=num_diffusion_steps,
                                                         generator=generator)
        if "pixel_values" in tokens:
            decoded[PIXELS_MODALITY] = self.decode_pixel_values(tokens["pixel_values"])
        if CAPTION_MODALITY in tokens:
            rows = sequence_rows(tokens[CAPTION_MODALITY], CAPTION_MODALITY)
            decoded[CAPTION_MODALITY] = [self.tokenizer.decode_text(row) for row in rows]
        if DET_MODALITY in tokens:
            rows = sequence_rows(tokens[DET_MODALITY], DET_MODALITY)
            backgrounds = box_backgrounds(len(rows), decoded, image, self.vqvaes, self.image_size)
            probs = None if box_token_probs is None else [list(map(float, row)) for row in box_token_probs]
            decoded[DET_MODALITY] = decode_boxes(self.tokenizer, rows, backgrounds, box_scores, probs)
        for name in SEQUENCE_MODALITIES:
            if name in tokens:
                decoded[name] = decode_sequences(self.tokenizer, name, sequence_rows(tokens[name], name))
        return decoded

    postprocess = decode

    def decode_image_tokens(self, name: str, ids, num_diffusion_steps=None, generator=None) -> dict:
        """(B, N) or (N,) ids of modality ``name`` (N = G*G, or ``num_tokens`` of a vector tokenizer) -> ``{"array": ..., "image": [PIL]}``
        (``token_decoding.decode_image_tokens``)."""
        with placed(self.vqvaes[name], self._offload_device):
            return decode_image_tokens(self.vqvaes[name], name, ids, num_diffusion_steps, generator)

    def decode_pixel_values(self, pixel_values) -> dict:
        """ImageNet-normalised (B, 3, S, S) -> ``{"array": uint8 (B, S, S, 3), "image": [PIL]}``."""
        return decode_pixel_values(pixel_values, self.image_processor.image_mean, self.image_processor.image_std)

    # ----------------------------------------------------------------------------- save / load

    def to_dict(self):
        # The VQ-VAEs are saved as their own folders, not in processor_config.json; leave them out
        # of the base class's deep copy of __dict__.
        vqvaes = self.__dict__.pop("vqvaes", {})
        sequence_tokenizers = self.__dict__.pop("sequence_tokenizers", None)
        try:
            output = super().to_dict()
        finally:
            self.vqvaes = vqvaes
            if sequence_tokenizers is not None:
                self.sequence_tokenizers = sequence_tokenizers
        output["vqvae_modalities"] = sorted(vqvaes)
        loaded = [name for name, tokenizer in (sequence_tokenizers or {}).items() if getattr(tokenizer, "is_loaded", True)]
        if loaded:
            output["sequence_tokenizer_modalities"] = sorted(loaded)
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
        save_sequence_tokenizers(save_directory, getattr(self, "sequence_tokenizers", None))
        write_class_code(save_directory, type(self))
        if push_to_hub:
            push_folder(save_directory, repo_id, **kwargs)
        return files

    def push_to_hub(self, repo_id: str, **kwargs):
        """Upload the processor (with ``vqvae/<modality>/``) in one commit; a repo without a card gets the
        generated 4M model card (``fourm_hf.hub.push_checkpoint``, same keywords)."""
        import tempfile

        with tempfile.TemporaryDirectory() as folder:
            self.save_pretrained(folder)
            return push_folder(folder, repo_id, **kwargs)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs) -> "FourMProcessor":
        """Load a folder written by :meth:`save_pretrained` (or a Hub repo holding one), or a released 4M repo id
        (``PRETRAINED_SOURCE_LOADERS``; ``docs/loading-by-name.md``). Keywords, as transformers processors take them:

        - ``image_processor=`` / ``tokenizer=`` / ``vqvaes=``: these components instead of the saved ones;
        - ``max_text_length``: overrides the saved value; ``device``: where the loaded VQ-VAEs go;
        - Hub options (``revision``, ``cache_dir``, ``token``, ``local_files_only``, ``subfolder``, ...);
        - the image processor's settings (``do_normalize=False``, ``crop_scale=...``) go to its ``from_pretrained``;
        - every other keyword goes to the tokenizer's ``from_pretrained``, which keeps it as an init kwarg
          (``cls_token="(CLS)"``; ``padding`` / ``max_length`` then become call defaults, as in transformers).
        """
        for loader in PRETRAINED_SOURCE_LOADERS:
            processor = loader(cls, pretrained_model_name_or_path, kwargs)
            if processor is not None:
                return processor
        folder = local_folder(pretrained_model_name_or_path, kwargs)
        device = kwargs.pop("device", None)
        for key in _LOADING_KWARGS:
            kwargs.pop(key, None)
        config_file = folder / PROCESSOR_CONFIG_NAME
        if not config_file.is_file():
            raise ValueError(f"{folder}: no {PROCESSOR_CONFIG_NAME}; not a saved FourMProcessor")
        config = json.loads(config_file.read_text(encoding="utf-8"))
        components = {name: kwargs.pop(name) for name in _COMPONENTS if name in kwargs}
        options = {name: kwargs.pop(name, config.get(name)) for name in _INIT_OPTIONS if name in kwargs or name in config}
        # Image processor settings go to it alone: in the tokenizer's init kwargs they would become call
        # defaults of every image (transformers' _merge_kwargs reads those), e.g. crop_scale=... at call time.
        image_options = {key: kwargs.pop(key) for key in list(kwargs) if key in FourMImageProcessor.valid_kwargs.__annotations__}
        if "image_processor" not in components:
            components["image_processor"] = FourMImageProcessor.from_pretrained(str(folder), **image_options)
        if "tokenizer" not in components:
            components["tokenizer"] = FourMTextTokenizer.from_pretrained(str(folder), **kwargs)
        if "vqvaes" not in components:
            components["vqvaes"] = load_vqvaes(folder, config.get("vqvae_modalities", []), device)
        processor = cls(**components, **options)
        if config.get("sequence_tokenizer_modalities"):  # the pose / SAM-instance tokenizers (sequence_tokens.py)
            processor.sequence_tokenizers = SequenceTokenizers(
                load_sequence_tokenizers(folder, config["sequence_tokenizer_modalities"], device))
        return processor


__all__ = ["FourMProcessor", "FourMProcessorKwargs", "FourMImagesKwargs", "VQVAE_FOLDER"]
