"""``pipeline("any-to-any")`` for 4M: any set of input modalities in, any set of modalities out.

::

    import fourm_hf
    from transformers import pipeline
    pipe = pipeline("any-to-any", model="path/to/folder")  # the model and its FourMProcessor, side by side
    out = pipe(image)                                      # every default target
    out = pipe(image, target_modalities=["depth", "caption"], seed=0)
    out = pipe(text="a red cube left of a blue sphere.", target_modalities=["rgb"])
    out = pipe(text="a cube.", negative_prompt="a red cube", target_modalities=["rgb"], seed=0)
    outs = pipe([image1, image2], target_modalities=["depth"], batch_size=2)

One call reads top-down (:meth:`FourMAnyToAnyPipeline.__call__`): check the inputs -> encode them with
the ``FourMProcessor`` ONCE per batch (one shared centre crop, VQ-VAE codes, text ids) -> plan the decoding
schedule -> ``modeling/generation.generate`` (targets decoded one after the other, each finished target
an input of the next, as 4M chains them) -> ONE ``FourMProcessor.decode`` of the targets (nothing else
is decoded: the input image only when boxes are drawn on it) -> arrays, PIL images, text, boxes.

Modalities go by their public names, which come from the modality registry
(``ModalitySpec.public_name``, see ``modalities.py``; ``pipelines/modality_names.py`` derives them for
a model): ``rgb``, ``depth``, ``normal``, ``semseg``, ``caption``, ``det`` and, for 4M-21,
``human_poses``, ``sam_instance``, ``color_palette``, ``metadata``, ... (the model's ``tok_rgb``,
``tok_depth``, ... name the same things), and a modality registered with ``register_modality`` by
its own. As an input, ``rgb`` is the image: the model's pixel modality ``rgb`` and also its
``tok_rgb`` tokens when the model reads them; as a target it is ``tok_rgb``. Each input goes to the
processor keyword its spec names (``processor_argument``); the default targets are the model's outputs
the processor decodes, in the registry's order.

Output per sample, keyed by the public names of the generated targets:

* ``rgb`` / ``depth`` / ``normal`` / ``semseg``: ``{"image": PIL RGB for viewing, "array": ...}``
  with rgb uint8 (S, S, 3), depth float32 metres (S, S), normal float32 (S, S, 3), semseg int64 (S, S);
* ``caption``: str;
* ``det``: ``{"boxes": [{"label", "score", "box": [x0, y0, x1, y1] normalised}], "image": PIL}``
  with the boxes drawn on the input image (else the generated RGB, else grey). 4M writes boxes as
  text; a box's ``score`` in (0, 1] is the mean probability the model gave the tokens it generated
  for that box (``text/box_scores.py``);
* ``human_poses`` / ``sam_instance`` / ``color_palette`` / ``metadata``: ``{"text", "data", "error"}``:
  the generated text, its parsed structure (``HumanPose`` list, ``SamPoint`` list, ``ColorPalette``,
  ``{key id: value}``; see ``text/sequence_modalities.py``) or, where the text does not
  parse, ``data`` None and the parser's message in ``error``. As inputs they take that structured
  data (or its text). With the released pose / SAM-instance tokenizers (``processor.sequence_tokenizers``,
  set by loading a released model by name), parsed ``human_poses`` also have ``rotations`` (P, 23, 3, 3) and
  ``sam_instance`` ``masks`` (bool (S, S) per mask, per point): ``processing/sequence_tokens.py``;
* ``clip`` / ``dinov2`` / ``imagebind`` (vision-model feature maps, each on its model grid: 4M-21's
  DINOv2 / ImageBind 16x16) and ``dinov2_global`` / ``imagebind_global`` (global embeddings, 16 tokens):
  ``{"image": None, "array": float32 (g, g, C) or (C,)}``, when the processor holds their tokenizer. As
  inputs, the feature maps are computed from the ``rgb`` image by the processor (where it holds the
  vision model) and the global embeddings are given as a (C,) vector;
* ``sam_edge`` / ``canny_edge`` (4M-21's edges, the released edge DiVAE): ``{"image": PIL grayscale ("L"),
  "array": float32 (S, S) in [0, 1]}``; as inputs, an (S, S) map in [0, 1] at the processor's size;
* ``tokens`` (with ``return_tokens=True``): ``{model modality: int64 ids}`` of inputs and targets.

A caption enters as WordPiece ids; ``caption_encoding="t5"`` / ``"both"`` gives 4M-21 its T5 embeddings instead
/ too (``pipelines/t5_condition.py``). Negative prompts (``negative_prompt=``, one str or one per sample) are
the reference's multimodal weighted guidance with a second condition: the logits are
``l_u + s (l_c - l_u) - n (l_neg - l_u)`` where ``l_c`` sees the given inputs (``s`` = ``cfg_scale``,
default 1; or the ``guidance`` weights), ``l_neg`` sees only the negative caption (in the model's
caption slot) and ``l_u`` nothing, ``n`` = ``negative_scale`` (default 1). An empty negative prompt
adds no term.

Any model other than a 4M model gets transformers' own ``AnyToAnyPipeline``, unchanged
(:func:`register_any_to_any_pipeline`, run on ``import fourm_hf``).

Randomness comes only from ``generator`` / ``seed`` (one ``torch.Generator`` for the whole call,
drawn from batch after batch: token sampling, then the diffusion noise of released DiVAE
tokenizers, which decode with ``num_diffusion_steps`` DDIM steps). With sampling, a sample's draws
depend on the other samples of its batch (the sampler draws for the batch at once); with
``greedy=True`` the batch size changes nothing (except for diffusion-decoded targets, whose noise is
drawn per batch too).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import numpy as np
import torch
from transformers import AutoModelForMultimodalLM
from transformers.models.auto.video_processing_auto import AutoVideoProcessor
from transformers.pipelines import PIPELINE_REGISTRY
from transformers.pipelines.any_to_any import AnyToAnyPipeline

from ..configuration_fourm import FourMConfig
from ..modeling.generation import (DEFAULT_DECODING, build_generation_schedule, build_preset_schedule, generate,
                                   get_preset)
from ..modeling.generation.options import check_int, check_pipeline_options
from ..modeling.modeling_fourm import FourMModel
from ..processing.sequence_tokens import add_sequence_decodings
from .call_inputs import batch_indices, load_image
from .modality_names import IMAGE_ARGUMENT, ModalityNames
from .t5_condition import check_caption_encoding, t5_conditions
from .model_check import check_model_and_processor, is_fourm_model, is_fourm_processor

SAMPLING_OPTIONS = ("temperature", "top_k", "top_p", "greedy")
NEGATIVE_PROMPT = "negative_prompt"  # the sample key of a (non-empty) negative prompt
NEGATIVE_VARIANT = "caption#negative"  # the guidance variant it becomes (modeling/generation/schedules.py)
DEFAULT_NEGATIVE_SCALE = 1.0


class FourMAnyToAnyPipeline(AnyToAnyPipeline):
    """Any-to-any generation with a 4M model (see the module docstring).

    Built by ``pipeline("any-to-any", model=folder_or_model, processor=...)``; given any model that
    is not a 4M model (:func:`is_fourm_model`), constructing this class returns transformers'
    ``AnyToAnyPipeline``.

    Args:
        model: a :class:`FourMModel`.
        processor: the :class:`FourMProcessor` that tokenizes its inputs and decodes its outputs.
        device: where the model runs, as in transformers' pipelines (default: the first accelerator
            if there is one, else the CPU; a model loaded with ``device_map=`` stays where it is).
        offload_tokenizers: keep the processor's neural tokenizers on the CPU and move each to ``device``
            only while it encodes or decodes (default: True on an accelerator; see docs/performance.md).
        Other keyword arguments are call defaults (``target_modalities``, ``seed``, ``num_steps``, ...).
    """

    _pipeline_calls_generate = False  # 4M decodes with fourm_hf.generate, not GenerationMixin.generate

    def __new__(cls, *args, **kwargs):
        model = kwargs.get("model", args[0] if args else None)
        if cls is FourMAnyToAnyPipeline and not is_fourm_model(model):
            return AnyToAnyPipeline(*args, **kwargs)  # not 4M: the parent, exactly as without fourm_hf
        return super().__new__(cls)

    def __init__(self, model, processor=None, device=None, offload_tokenizers=None, **kwargs):
        if not is_fourm_processor(processor):
            raise ValueError(
                f"processor: the 4M any-to-any pipeline needs a FourMProcessor, got {type(processor).__name__}; "
                "save the processor into the model folder (processor.save_pretrained(folder)) or pass processor=..."
            )
        # Pipeline.__init__, not AnyToAnyPipeline's (which checks for GenerationMixin-style multimodal LMs).
        super(AnyToAnyPipeline, self).__init__(model=model, processor=processor, device=device, **kwargs)
        self.model.eval()
        offload = self.device.type != "cpu" if offload_tokenizers is None else bool(offload_tokenizers)
        if offload:  # tokenizers rest on the CPU, each on the device only while it encodes or decodes
            self.processor.offload_tokenizers(self.device)
        else:
            self.processor.to(self.device)
        check_model_and_processor(self.model.config, self.processor)
        self.names = ModalityNames(self.model.config, self.processor.vqvaes)  # public names, from the registry

    # ---- parameters --------------------------------------------------------------------------------
    def _sanitize_parameters(self, target_modalities=None, num_steps=None, temperature=None, top_k=None, top_p=None,
                             greedy=None, cfg_scale=None, guidance=None, seed=None, generator=None, progress=None,
                             return_tokens=None, num_diffusion_steps=None, negative_scale=None, caption_encoding=None,
                             **unknown):
        if unknown:
            raise TypeError(f"FourMAnyToAnyPipeline: unexpected arguments {sorted(unknown)}; expected target_modalities, "
                            "num_steps, temperature, top_k, top_p, greedy, cfg_scale, guidance, negative_prompt, "
                            "negative_scale, seed, generator, num_diffusion_steps, batch_size, progress, return_tokens, "
                            "caption_encoding")
        check_pipeline_options(num_steps=num_steps, temperature=temperature, top_k=top_k, top_p=top_p, greedy=greedy,
                               cfg_scale=cfg_scale, guidance=guidance, negative_scale=negative_scale, seed=seed,
                               generator=generator, num_diffusion_steps=num_diffusion_steps, progress=progress,
                               return_tokens=return_tokens)
        preprocess_params = {key: value for key, value in (
            ("target_modalities", target_modalities), ("num_steps", num_steps), ("temperature", temperature),
            ("top_k", top_k), ("top_p", top_p), ("greedy", greedy), ("cfg_scale", cfg_scale), ("guidance", guidance),
            ("negative_scale", negative_scale), ("caption_encoding", None if caption_encoding is None
                                                 else check_caption_encoding(caption_encoding))) if value is not None}
        forward_params = {key: value for key, value in (("seed", seed), ("generator", generator), ("progress", progress))
                          if value is not None}
        postprocess_params = {} if return_tokens is None else {"return_tokens": return_tokens}
        if num_diffusion_steps is not None:
            postprocess_params["num_diffusion_steps"] = int(num_diffusion_steps)
        return preprocess_params, forward_params, postprocess_params

    # ---- the call ----------------------------------------------------------------------------------
    def __call__(self, inputs=None, text=None, negative_prompt=None, batch_size=None, **kwargs):
        """Generate for one sample or a list of samples.

        Args:
            inputs: an image (PIL, path, or (H, W, 3) uint8 / float-in-[0, 1] array), a dict
                ``{modality: value}`` (``rgb`` image, ``depth`` (H, W) metres, ``normal`` (H, W, 3),
                ``semseg`` (H, W) class ids, ``caption`` str, ``det`` list of box dicts, 4M-21's
                ``metadata`` / ``color_palette`` / ``human_poses`` / ``sam_instance`` as structured data),
                or a list of those.
            text: a caption (str) or one per sample; joins ``inputs`` as the ``caption`` input.
            negative_prompt: a caption to steer away from (str, or one per sample; empty = none): a
                second guidance condition with weight ``-negative_scale`` (module docstring). Needs a
                model that reads captions, and caption must not be a target.
            batch_size: samples per generation batch (default 1).
            target_modalities: public names to generate, in order (default: every output modality
                of the model the processor decodes and not given as input, in the registry's order:
                depth, normal, semseg, rgb, caption, det, clip, human_poses, sam_instance, ...).
            num_steps: image decoding steps, an int or ``{modality: int}``.
            temperature / top_k / top_p / greedy: a value or ``{modality: value}``; targets missing
                from a dict use ``DEFAULT_DECODING`` (entries for modalities that are not targets of
                this call are not used).
            cfg_scale: classifier-free guidance scale on all given inputs (1 = off).
            guidance: ``{input modality: weight}`` multimodal guidance (negative weights steer away).
            negative_scale: weight of the negative prompt's term (default 1; 0 = no term).
            seed / generator: the randomness (a torch.Generator; never the global RNG): token
                sampling, then the diffusion noise of released DiVAE tokenizers.
            num_diffusion_steps: DDIM steps of released diffusion (DiVAE) tokenizers decoding the image
                targets (default: each tokenizer's own ``num_diffusion_steps``, 25); other tokenizers
                ignore it. An integer >= 1.
            progress: a tqdm bar over decoding steps.
            return_tokens: also return the token ids under ``"tokens"``.
        Returns: one dict per sample (a list for a list input).
        """
        samples, single = self._samples(inputs, text)
        _add_negative_prompts(samples, negative_prompt)
        batch_size = batch_size if batch_size is not None else (self._batch_size or 1)
        check_int("batch_size", batch_size, low=1, accepts="samples per generation batch")
        preprocess_params, forward_params, postprocess_params = self._sanitize_parameters(**kwargs)
        preprocess_params = {**self._preprocess_params, **preprocess_params}
        forward_params = {**self._forward_params, **forward_params}
        postprocess_params = {**self._postprocess_params, **postprocess_params}
        generator = forward_params.pop("generator", None)
        seed = forward_params.pop("seed", None)
        if generator is None:  # a seed, else fresh entropy: never the global RNG (diffusion decoding included)
            start = int(seed) if seed is not None else int.from_bytes(os.urandom(8), "little") >> 1
            generator = torch.Generator(device=self.device).manual_seed(start)
        results = [None] * len(samples)
        for indices in batch_indices(samples, batch_size):
            model_inputs = self.preprocess([samples[i] for i in indices], **preprocess_params)
            model_outputs = self.forward(model_inputs, generator=generator, **forward_params)
            for index, result in zip(indices, self.postprocess(model_outputs, generator=generator, **postprocess_params)):
                results[index] = result
        return results[0] if single else results

    def _samples(self, inputs, text) -> tuple[list[dict], bool]:
        """Normalise the call's inputs into a list of ``{public name: value}`` dicts."""
        single = not isinstance(inputs, (list, tuple)) and not (inputs is None and isinstance(text, (list, tuple)))
        if inputs is None:
            samples = [{} for _ in text] if isinstance(text, (list, tuple)) else [{}]
        elif isinstance(inputs, (list, tuple)):
            if not inputs:
                raise ValueError("inputs: the list of samples is empty.")
            samples = [self._sample(value, f"inputs[{i}]") for i, value in enumerate(inputs)]
        else:
            samples = [self._sample(inputs, "inputs")]
        if text is not None:
            texts = list(text) if isinstance(text, (list, tuple)) else [text]
            if len(texts) != len(samples):
                raise ValueError(f"text: {len(texts)} captions for {len(samples)} samples; give one per sample.")
            for index, (sample, caption) in enumerate(zip(samples, texts)):
                if "caption" in sample:
                    raise ValueError(f"sample {index}: a caption is given both in inputs and as text=.")
                sample["caption"] = caption
        for index, sample in enumerate(samples):
            if not sample:
                raise ValueError("No inputs: give an image, a dict of modalities and/or text=.")
            self._check_sample(sample, index)
        return samples, single

    def _sample(self, value, where: str) -> dict:
        if isinstance(value, Mapping):
            sample = {}
            for name, item in value.items():
                public = self.names.public(name, f"{where} key")
                if public in sample:
                    raise ValueError(f"{where}: {public!r} is given twice (as {name!r} too).")
                if item is None:
                    raise ValueError(f"{where}[{name!r}] is None; leave the modality out instead.")
                sample[public] = item
            return sample
        return {"rgb": value}  # an image, or a path to one (text goes in text=)

    def _check_sample(self, sample: dict, index: int) -> None:
        """Load image paths and reject inputs the processor would misread (empty text, bad arrays)."""
        where = f"sample {index}"
        for name, value in sample.items():
            if name == NEGATIVE_PROMPT:
                continue
            self.names.check_input(name, where)
            if any(spec.processor_argument == IMAGE_ARGUMENT for spec in self.names.input_specs(name)):
                sample[name] = load_image(value, f"{where}: {name}")
            elif isinstance(value, np.ndarray) and value.size == 0:
                raise ValueError(f"{where}: {name} is an empty array {value.shape}; expected a map with H, W >= 1.")
        if "caption" in sample:
            caption = sample["caption"]
            if not isinstance(caption, str):
                raise ValueError(f"{where}: caption must be a str, got {type(caption).__name__}.")
            if not caption.strip():
                raise ValueError(f"{where}: the caption / text prompt is empty; expected at least one word.")

    # ---- the three stages --------------------------------------------------------------------------
    def preprocess(self, samples: list[dict], target_modalities=None, num_steps=None, temperature=None, top_k=None,
                   top_p=None, greedy=None, cfg_scale=None, guidance=None, negative_scale=None,
                   caption_encoding="ids") -> dict:
        """A batch of samples with the same input modalities -> processor tokens + the decoding schedule.

        The processor encodes the batch once; the input image's ``pixel_values`` travel on to
        :meth:`postprocess`, where they are decoded only if boxes are drawn on them."""
        config = self.model.config
        given = [name for name in samples[0] if name != NEGATIVE_PROMPT]
        targets = self.resolve_targets(given, target_modalities)
        processed = self.processor(**self.names.processor_arguments(samples, given))  # the one encoding
        input_image = processed.pop("pixel_values", None)
        pixel_values = input_image if input_image is not None and "rgb" in config.input_modalities else None
        tokens, cond_domains = {}, ["rgb"] if pixel_values is not None else []
        model_targets = [self.names.target_model_name(name) for name in targets]
        for name, ids in processed.items():
            # a feature map the processor computed from the image is no condition when it is a target
            if name in config.input_modalities and name not in model_targets:
                tokens[name] = ids
                cond_domains.append(name)
        captions = [sample["caption"] for sample in samples] if "caption" in given else []
        tokens, cond_domains, continuous, known = t5_conditions(self.processor, config, captions, caption_encoding,
                                                                tokens, cond_domains)
        source_of = {m: "caption" if m == "t5_caption" else self.names.source_of(m, given) for m in cond_domains}
        conditions_of = {name: [m for m in cond_domains if source_of[m] == name] for name in given}
        for name, conditions in conditions_of.items():
            if not conditions:
                raise ValueError(f"input {name!r}: this model does not read it (its inputs are {config.input_modalities}).")
        condition_sets = self._guidance(guidance, conditions_of)
        negatives = [sample[NEGATIVE_PROMPT] for sample in samples if NEGATIVE_PROMPT in sample]
        scale = DEFAULT_NEGATIVE_SCALE if negative_scale is None else float(negative_scale)
        variant_tokens = {}
        if negatives and scale != 0.0:
            self._check_negative_prompt(targets)
            if condition_sets and cfg_scale is not None and float(cfg_scale) != 1.0:
                raise ValueError("Give either cfg_scale or guidance weights, not both (the negative prompt joins either).")
            variant_tokens[NEGATIVE_VARIANT] = self.processor.encode_texts(negatives)
            positive = condition_sets or [(tuple(cond_domains), 1.0 if cfg_scale is None else float(cfg_scale))]
            condition_sets, cfg_scale = positive + [((NEGATIVE_VARIANT,), -scale)], None
        preset = getattr(config, "generation_preset", None)
        if preset is not None:
            schedule = self._preset_schedule(preset, cond_domains, model_targets, targets, num_steps, temperature,
                                             top_k, top_p, greedy, cfg_scale, condition_sets)
        else:
            schedule = build_generation_schedule(
                config, cond_domains, model_targets, guidance=condition_sets,
                cfg_scales=1.0 if cfg_scale is None else float(cfg_scale),
                **self._decoding_columns(targets, num_steps, temperature, top_k, top_p, greedy),
            )
        return {"tokens": tokens, "pixel_values": pixel_values, "schedule": schedule, "targets": targets,
                "input_image": input_image, "variant_tokens": variant_tokens, "continuous": continuous,
                "known": known}

    def _check_negative_prompt(self, targets: list[str]) -> None:
        """A negative prompt is a caption the model reads, so caption must be an input modality and no target."""
        if "caption" not in self.model.config.input_modalities:
            raise ValueError(f"negative_prompt: this model does not read captions (its inputs are "
                             f"{self.model.config.input_modalities}); a negative prompt needs a caption input.")
        if "caption" in targets:
            raise ValueError("negative_prompt: caption is a target of this call; a negative prompt is a caption "
                             "condition, so it cannot steer the caption being generated.")

    def _forward(self, model_inputs: dict, generator=None, progress=False) -> dict:
        score_boxes = "det" in model_inputs["targets"]  # box scores need the generated tokens' probabilities
        generated = generate(self.model, model_inputs["tokens"], model_inputs["schedule"], generator=generator,
                             pixel_values=model_inputs["pixel_values"], progress=bool(progress),
                             variant_tokens=model_inputs.get("variant_tokens") or None, return_token_probs=score_boxes,
                             continuous_inputs=model_inputs.get("continuous") or None,
                             known=model_inputs.get("known") or None)
        tokens, token_probs = generated if score_boxes else (generated, {})
        continuous = model_inputs.get("continuous") or {}  # t5_caption's tokens are row indices: not returned
        return {**model_inputs, "tokens": {name: ids.cpu() for name, ids in tokens.items() if name not in continuous},
                "token_probs": {name: probs.cpu() for name, probs in token_probs.items()}}

    def postprocess(self, model_outputs: dict, return_tokens=False, num_diffusion_steps=None, generator=None) -> list[dict]:
        """Generated tokens -> one output dict per sample (``num_diffusion_steps`` / ``generator``: the
        DDIM steps and noise of released diffusion tokenizers, see :meth:`FourMProcessor.decode`).

        One ``processor.decode`` call decodes the targets, each once, and nothing else: the input image
        (``model_outputs["input_image"]``, its ``pixel_values``) joins only when ``det`` is a target, as what
        its boxes are drawn on (else the generated RGB, else grey; ``model_outputs["backgrounds"]``, PIL
        images, override them)."""
        tokens, targets = model_outputs["tokens"], model_outputs["targets"]
        batch = next(iter(tokens.values())).shape[0]
        model_names = {name: self.names.target_model_name(name) for name in targets}
        decode_input = {model_name: tokens[model_name] for model_name in model_names.values()}
        draws_boxes = "det" in decode_input
        if draws_boxes and model_outputs.get("input_image") is not None:
            decode_input["pixel_values"] = model_outputs["input_image"]
        # a box's score is the mean probability of its generated tokens; without them (tokens decoded on their
        # own) boxes have no score
        det_probs = model_outputs.get("token_probs", {}).get("det") if draws_boxes else None
        decoded = self.processor.decode(decode_input, image=model_outputs.get("backgrounds"), box_token_probs=det_probs,
                                        num_diffusion_steps=num_diffusion_steps, generator=generator)
        add_sequence_decodings(decoded, getattr(self.processor, "sequence_tokenizers", None),  # SAM masks, poses
                               self.processor.image_size, self.processor.tokenizer.coord_bins)
        results = []
        for row in range(batch):
            result = {name: _sample_output(decoded[model_names[name]], row) for name in targets}
            if return_tokens:
                result["tokens"] = {name: _row_ids(self.model.config, name, ids[row]) for name, ids in tokens.items()}
            results.append(result)
        return results

    # ---- helpers -----------------------------------------------------------------------------------
    def available_targets(self) -> list[str]:
        """Public names this pipeline can generate with this model and processor, in default order (the
        registry's): the model's outputs the processor decodes."""
        return list(self.names.targets)

    def resolve_targets(self, given: list[str], target_modalities) -> list[str]:
        """The public target names of a call; checks them against the inputs, the model and the processor."""
        available = self.available_targets()
        if target_modalities is None:
            targets = [name for name in available if name not in given]
            if not targets:
                raise ValueError(f"Nothing to generate: every modality this pipeline can generate {available} is "
                                 f"already an input {given}.")
            return targets
        if isinstance(target_modalities, str):
            target_modalities = [target_modalities]
        if not target_modalities:
            raise ValueError(f"target_modalities is empty; name at least one of {available}.")
        targets = [self.names.public(name, "target_modalities") for name in target_modalities]
        if len(set(targets)) != len(targets):
            raise ValueError(f"target_modalities lists a modality twice: {list(target_modalities)}.")
        for name in targets:
            if name in given:
                raise ValueError(f"{name!r} is both an input and a target; a target must not be given as input "
                                 f"(inputs: {given}).")
            if name not in available:
                raise ValueError(f"target {name!r}: {self.names.why_not_a_target(name)}; this pipeline can generate "
                                 f"{available}.")
        return targets

    def _guidance(self, guidance, conditions_of: dict) -> list | None:
        """``{public input name: weight}`` -> ``[(model condition modalities, weight)]``."""
        if guidance is None:
            return None
        if not isinstance(guidance, Mapping) or not guidance:
            raise ValueError(f"guidance must be a non-empty dict {{input modality: weight}}, got {guidance!r}.")
        condition_sets = []
        for name, weight in guidance.items():
            public = self.names.public(name, "guidance")
            if public not in conditions_of:
                raise ValueError(f"guidance weight for {public!r}, which is not among the given inputs "
                                 f"{list(conditions_of)}; guidance steers towards (or away from) a given input.")
            condition_sets.append((tuple(conditions_of[public]), float(weight)))
        return condition_sets

    def _preset_schedule(self, preset, cond_domains, model_targets, targets, num_steps, temperature, top_k, top_p,
                         greedy, cfg_scale, guidance):
        """The schedule of a checkpoint that names a decoding preset (``config.generation_preset``, e.g.
        ``"ml4m_demo"`` for converted reference checkpoints); the call's options override the preset's."""
        recipe = get_preset(preset)
        overrides = {}
        for option, value in (("temps", temperature), ("top_k", top_k), ("top_p", top_p), ("greedy", greedy)):
            if value is not None:
                by_name = self._per_modality(value, option, targets)
                defaults = {"temps": None, "top_k": recipe["top_k"], "top_p": recipe["top_p"], "greedy": False}
                overrides[option] = [by_name[name] if by_name[name] is not None else defaults[option] for name in targets]
        if overrides.get("temps") and any(t is None for t in overrides["temps"]):
            base = build_preset_schedule(self.model.config, recipe, cond_domains, model_targets)
            overrides["temps"] = [t if t is not None else plan.temperatures[0]
                                  for t, plan in zip(overrides["temps"], base.targets)]
        if num_steps is not None:
            by_name = self._per_modality(num_steps, "num_steps", targets)
            base = build_preset_schedule(self.model.config, recipe, cond_domains, model_targets)
            overrides["decoding_steps"] = [by_name[name] if by_name[name] is not None and not self.names.is_sequence(name)
                                           else (None if plan.scheme == "autoregressive" else plan.num_steps)
                                           for name, plan in zip(targets, base.targets)]
        if guidance is not None:
            overrides.update(guidance=guidance, cfg_scales=1.0)
        elif cfg_scale is not None:
            overrides["cfg_scales"] = float(cfg_scale)
        return build_preset_schedule(self.model.config, recipe, cond_domains, model_targets, **overrides)

    def _per_modality(self, value, field: str, targets: list[str]) -> dict:
        """A single value for every target, or ``{modality: value}`` (missing targets -> None = default)."""
        if isinstance(value, Mapping):
            by_name = {}
            for name, item in value.items():
                by_name[self.names.public(name, field)] = item
            return {name: by_name.get(name) for name in targets}
        return {name: value for name in targets}

    def _decoding_columns(self, targets, num_steps, temperature, top_k, top_p, greedy) -> dict:
        """Per-target lists for build_generation_schedule from values, per-modality dicts and DEFAULT_DECODING."""
        options = {"temperature": temperature, "top_k": top_k, "top_p": top_p, "greedy": greedy}
        columns = {"autoregression_schemes": [], "decoding_steps": [], "token_decoding_schedules": [], "temps": [],
                   "temp_schedules": [], "top_k": [], "top_p": [], "greedy": []}
        steps_by_name = self._per_modality(num_steps, "num_steps", targets)
        named_steps = {self.names.public(n, "num_steps"): v for n, v in num_steps.items()} if isinstance(num_steps, Mapping) else {}
        for name, steps in named_steps.items():
            if self.names.is_sequence(name) and steps is not None:
                raise ValueError(f"num_steps[{name!r}]: {name} is a sequence, decoded one token per step; "
                                 "num_steps sets image decoding steps.")
        resolved = {key: self._per_modality(value, key, targets) for key, value in options.items()}
        for name in targets:
            kind = "sequence" if self.names.is_sequence(name) else "image"
            defaults = DEFAULT_DECODING[kind]
            steps = steps_by_name[name] if kind == "image" else None
            if steps is None and kind == "image":
                steps = defaults["num_steps"]
            pick = {key: resolved[key][name] if resolved[key][name] is not None else defaults[key] for key in options}
            columns["autoregression_schemes"].append(defaults["scheme"])
            columns["decoding_steps"].append(steps)
            columns["token_decoding_schedules"].append(defaults.get("token_schedule", "cosine"))
            columns["temps"].append(pick["temperature"])
            columns["temp_schedules"].append(defaults["temperature_schedule"])
            columns["top_k"].append(pick["top_k"])
            columns["top_p"].append(pick["top_p"])
            columns["greedy"].append(pick["greedy"])
        return columns


# ---- module helpers -------------------------------------------------------------------------------------
def _add_negative_prompts(samples: list[dict], negative_prompt) -> None:
    """Put each sample's non-empty negative prompt under ``NEGATIVE_PROMPT`` (empty or blank = none), so
    samples with and without one go to different batches."""
    if negative_prompt is None:
        return
    prompts = list(negative_prompt) if isinstance(negative_prompt, (list, tuple)) else [negative_prompt] * len(samples)
    if len(prompts) != len(samples):
        raise ValueError(f"negative_prompt: {len(prompts)} prompts for {len(samples)} samples; give one str, or one per sample.")
    for index, (sample, prompt) in enumerate(zip(samples, prompts)):
        if prompt is None:
            continue
        if not isinstance(prompt, str):
            raise ValueError(f"negative_prompt[{index}] must be a str (or None), got {type(prompt).__name__}.")
        if prompt.strip():
            sample[NEGATIVE_PROMPT] = prompt.strip()


def _sample_output(value, row: int):
    """One sample's share of a ``processor.decode`` entry: ``{"image", "array"}`` of a map (``image`` None
    for features and vectors), ``{"boxes", "image"}`` of ``det``, a caption's str or a 4M-21 sequence's dict."""
    if isinstance(value, Mapping) and "boxes" in value:
        return {"boxes": value["boxes"][row], "image": value["image"][row]}
    if isinstance(value, Mapping):
        return {"image": None if value["image"] is None else value["image"][row], "array": value["array"][row]}
    return value[row]


def _row_ids(config: FourMConfig, name: str, ids: torch.Tensor) -> np.ndarray:
    """One sample's ids as int64 numpy; sequences without their trailing [PAD]s."""
    ids = ids.detach().cpu().numpy().astype(np.int64)
    if config.modality(name).is_sequence:
        nonzero = np.flatnonzero(ids)
        ids = ids[: nonzero[-1] + 1] if nonzero.size else ids[:0]
    return ids


def register_any_to_any_pipeline() -> None:
    """Make ``pipeline("any-to-any", ...)`` build :class:`FourMAnyToAnyPipeline` (which hands every
    non-4M model to the parent) and let the task's model class, ``AutoModelForMultimodalLM``, load 4M folders."""
    AutoModelForMultimodalLM.register(FourMConfig, FourMModel, exist_ok=True)
    # 4M has no video processor. Saying so (an empty mapping) stops AutoVideoProcessor, which pipeline()
    # tries on every folder, from guessing one from the image processor's remote-code entry and asking
    # the user to trust remote code.
    AutoVideoProcessor.register(FourMConfig, video_processor_classes={}, exist_ok=True)
    entry = PIPELINE_REGISTRY.supported_tasks["any-to-any"]
    # Only the implementation changes; the task's model classes and default model stay the parent's.
    PIPELINE_REGISTRY.supported_tasks["any-to-any"] = {**entry, "impl": FourMAnyToAnyPipeline}


__all__ = ["DEFAULT_DECODING", "FourMAnyToAnyPipeline", "is_fourm_model", "is_fourm_processor",
           "register_any_to_any_pipeline"]
