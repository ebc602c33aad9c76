"""Generating any modality with a 4M model: decoding schedules and the sampler.

A generation run turns a batch of token dicts ``{modality: (B, N) LongTensor}`` (plus an optional
``known`` mask per modality and ``pixel_values`` for the raw-RGB input) into the same dicts with
the target modalities filled in, one target after the other:

* image-token targets decode in a few steps: **MaskGIT** (every still-unknown position is
  predicted; the most confident predictions are kept, as many as a cosine or linear schedule says)
  or **ROAR** (a random order fixed up front, a fixed number of positions revealed per step). The
  tokens revealed so far (and tokens given for in-/out-painting) are encoder inputs of the next step.
* sequence targets (captions, boxes) decode **autoregressively**: the encoder reads the given
  prefix followed by the sentinel ``[S_1]`` (with no prefix, nothing of the sequence: that is how
  ``FourMMaskingCollator`` trains a sequence that gets no input budget, the common case of a
  fully generated caption); the decoder starts from ``[S_1]`` and stops at
  ``[EOS]``, at the end sentinel ``[S_2]`` (stored as ``[EOS]``) or at the length limit; ``[PAD]``
  is never generated. The encoder runs once; the decoder keeps a self-attention KV cache and the
  cross-attention keys/values of the fixed encoder output, so each step processes one token.
* **guidance**: the logits are ``l_u + sum_i w_i (l_i - l_u)`` where ``l_u`` sees the inputs minus
  every condition modality and ``l_i`` adds back condition set ``i`` (classifier-free guidance is
  one condition set holding all conditioning modalities, with weight = the guidance scale;
  negative weights steer away from a condition). A condition may also be a *variant* of an input,
  ``"caption#negative"``: the caption modality with other tokens (``generate(variant_tokens=...)``);
  with a negative weight that is a negative prompt. Each pass is encoded at its own length, then ONE
  decoder forward runs all (1 + K) * B rows.
* **chaining**: a finished target is an input of every later target.

``naive=True`` runs the same algorithm without any of the speed-ups (full recomputation of the
decoder prefix and its cross-attention keys/values at every autoregressive step, one forward per
guidance pass); tests and ``benchmarks/bench_generate.py`` compare both. Randomness only comes from
the ``torch.Generator`` passed in (one uniform number per sampled token, so both paths draw the
same numbers).

Text ids follow the 4M layout: 0 ``[PAD]``, 3 ``[EOS]``, ``[S_i]`` = 4 + i.

Layout: ``schedules`` (planning), ``sampling`` (logits -> ids), ``state`` (the batch being filled),
``packing`` (state -> encoder inputs), ``guidance`` (passes and their combination),
``image_decoding`` (MaskGIT, ROAR), ``sequence_decoding`` (autoregressive), ``sampler`` (:func:`generate`),
``planning`` (:func:`build_generation_schedule`, :func:`build_preset_schedule`), ``presets`` (the reference
demo's decoding recipes and the package's own defaults, ``DEFAULT_DECODING``),
``options`` (the one place call options are checked: type, finiteness, range).
"""

from .guidance import combine_guidance, guidance_views
from .image_decoding import decode_image_target, image_target_logits
from .packing import context_key_values, pack_encoder_inputs
from .planning import build_generation_schedule, build_preset_schedule
from .presets import DEFAULT_DECODING, PRESETS, get_preset
from .sampler import generate, model_device
from .sampling import Randomness, filter_logits, sample_tokens
from .schedules import (
    CONVENTION_CHOICES,
    CONVENTIONS,
    ENCODER_ORDERS,
    GUIDANCE_SCHEDULES,
    SCHEMES,
    TEMPERATURE_SCHEDULES,
    TOKEN_SCHEDULES,
    VARIANT_SEPARATOR,
    GenerationSchedule,
    TargetSchedule,
    guidance_scale_schedule,
    is_variant,
    resolve_conventions,
    reveal_counts,
    temperature_schedule,
    variant_base,
)
from .sequence_decoding import decode_sequence_target
from .special_ids import END_SENTINEL_ID, EOS_ID, PAD_ID, START_SENTINEL_ID
from .state import GenerationState, prepare_state

__all__ = [
    "CONVENTIONS",
    "CONVENTION_CHOICES",
    "DEFAULT_DECODING",
    "ENCODER_ORDERS",
    "END_SENTINEL_ID",
    "EOS_ID",
    "GUIDANCE_SCHEDULES",
    "PAD_ID",
    "SCHEMES",
    "START_SENTINEL_ID",
    "TEMPERATURE_SCHEDULES",
    "TOKEN_SCHEDULES",
    "VARIANT_SEPARATOR",
    "PRESETS",
    "GenerationSchedule",
    "GenerationState",
    "Randomness",
    "TargetSchedule",
    "build_generation_schedule",
    "build_preset_schedule",
    "combine_guidance",
    "get_preset",
    "context_key_values",
    "decode_image_target",
    "decode_sequence_target",
    "filter_logits",
    "generate",
    "guidance_scale_schedule",
    "guidance_views",
    "image_target_logits",
    "is_variant",
    "model_device",
    "pack_encoder_inputs",
    "prepare_state",
    "resolve_conventions",
    "reveal_counts",
    "sample_tokens",
    "temperature_schedule",
    "variant_base",
]
