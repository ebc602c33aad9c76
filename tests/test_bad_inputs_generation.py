"""Bad call options of the pipeline and of ``generate``: each is a named TypeError / ValueError, never a
silent result (nan guidance used to turn every token into 1023) and never a raw library error."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import pipeline

from fourm_hf import FourMModel
from fourm_hf.checkpoints import BUNDLED_CHECKPOINT
from fourm_hf.errors import WrongTypeError
from fourm_hf.modeling.generation import build_generation_schedule, generate
from fourm_hf.testing_utils import tiny_config

torch.set_num_threads(1)
NAN, INF = float("nan"), float("inf")
FAST = {"num_steps": 1}


@pytest.fixture(scope="module")
def pipe():
    return pipeline("any-to-any", model=str(BUNDLED_CHECKPOINT))


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return FourMModel(tiny_config()).eval()


# option, value, exception, what the message must say
PIPELINE_CASES = [
    ("cfg_scale", NAN, ValueError, r"cfg_scale must be a finite number"),
    ("cfg_scale", INF, ValueError, r"cfg_scale must be a finite number"),
    ("cfg_scale", -INF, ValueError, r"cfg_scale must be a finite number"),
    ("cfg_scale", "2", TypeError, r"cfg_scale must be a number.*'2'"),
    ("guidance", {"caption": NAN}, ValueError, r"guidance\['caption'\] must be a finite number"),
    ("guidance", {"caption": "high"}, TypeError, r"guidance\['caption'\] must be a number"),
    ("temperature", INF, ValueError, r"temperature must be a finite number"),
    ("temperature", NAN, ValueError, r"temperature must be a finite number"),
    ("temperature", "hot", TypeError, r"temperature must be a number.*'hot'"),
    ("temperature", 0.0, ValueError, r"temperature must be a finite number > 0\.0"),
    ("temperature", {"depth": -1.0}, ValueError, r"temperature\['depth'\] must be a finite number > 0\.0"),
    ("greedy", "False", TypeError, r"greedy must be True or False, got 'False'"),
    ("greedy", 1, TypeError, r"greedy must be True or False"),
    ("greedy", {"depth": "yes"}, TypeError, r"greedy\['depth'\] must be True or False"),
    ("seed", 2**70, ValueError, r"seed must be an integer in \[0, 9223372036854775807\]"),
    ("seed", -1, ValueError, r"seed must be an integer in \[0"),
    ("seed", 1.5, TypeError, r"seed must be an integer"),
    ("seed", True, TypeError, r"seed must be an integer"),
    ("top_p", 1.5, ValueError, r"top_p must lie in \[0\.0, 1\.0\]"),
    ("top_p", NAN, ValueError, r"top_p must be a finite number"),
    ("top_k", -1, ValueError, r"top_k must be an integer >= 0"),
    ("top_k", 1.5, ValueError, r"top_k must lie in \(0\.0, 1\.0\)"),
    ("top_k", "5", TypeError, r"top_k must be a number"),
    ("num_steps", 0, ValueError, r"num_steps must be an integer >= 1"),
    ("num_steps", 2.0, TypeError, r"num_steps must be an integer >= 1"),
    ("negative_scale", NAN, ValueError, r"negative_scale must be a finite number"),
    ("negative_scale", -1.0, ValueError, r"negative_scale must be a finite number >= 0\.0"),
    ("num_diffusion_steps", 2**70 + 0.5, TypeError, r"num_diffusion_steps must be an integer >= 1"),
    ("progress", "no", TypeError, r"progress must be True or False"),
    ("return_tokens", "no", TypeError, r"return_tokens must be True or False"),
    ("generator", 5, TypeError, r"generator must be a torch.Generator"),
]


@pytest.mark.parametrize("option, value, error, message", PIPELINE_CASES,
                         ids=[f"{case[0]}={case[1]!r}" for case in PIPELINE_CASES])
def test_pipeline_call_options_are_checked(pipe, option, value, error, message):
    with pytest.raises(error, match=message):
        pipe(text="a red cube.", target_modalities=["depth"], **{**FAST, option: value})


def test_wrong_types_are_type_errors_that_value_error_handlers_still_catch(pipe):
    with pytest.raises(WrongTypeError) as caught:
        pipe(text="a red cube.", target_modalities=["depth"], greedy="False", **FAST)
    assert isinstance(caught.value, TypeError) and isinstance(caught.value, ValueError)


def test_the_largest_seed_runs(pipe):
    out = pipe(text="a red cube.", target_modalities=["depth"], seed=2**63 - 1, return_tokens=True, **FAST)
    assert out["tokens"]["tok_depth"].shape[-1] > 0


def test_finite_guidance_still_gives_varied_tokens(pipe):
    """The regression the nan check guards: a sane scale gives tokens, not one id everywhere."""
    out = pipe(text="a red cube on a blue floor.", target_modalities=["rgb"], cfg_scale=3.0, seed=0, return_tokens=True,
               **FAST)
    assert len(set(out["tokens"]["tok_rgb"].flatten().tolist())) > 1


# ---- the same checks at build_generation_schedule / generate -------------------------------------------
SCHEDULE_CASES = [
    (dict(cfg_scales=NAN), ValueError, r"cfg_scales must be a finite number"),
    (dict(cfg_scales=[1.0, INF]), ValueError, r"cfg_scales must be a finite number"),
    (dict(guidance={"caption": NAN}), ValueError, r"guidance weight of \('caption',\) must be a finite number"),
    (dict(temps=INF), ValueError, r"temperature for 'tok_rgb' must be a finite number"),
    (dict(temps="hot"), TypeError, r"temperature for 'tok_rgb' must be a number"),
    (dict(greedy="False"), TypeError, r"greedy for 'tok_rgb' must be True or False"),
    (dict(top_p=-0.1), ValueError, r"top_p for 'tok_rgb' must lie in"),
    (dict(decoding_steps=0), ValueError, r"decoding_steps for 'tok_rgb' must be an integer >= 1"),
    (dict(tokens_per_target=1000), ValueError, r"tokens_per_target for 'tok_rgb' must be an integer in \[1, 16\]"),
    (dict(cfg_grow_conditioning="yes"), TypeError, r"cfg_grow_conditioning must be True or False"),
]


@pytest.mark.parametrize("kwargs, error, message", SCHEDULE_CASES, ids=[str(case[0]) for case in SCHEDULE_CASES])
def test_schedule_options_are_checked(kwargs, error, message):
    with pytest.raises(error, match=message):
        build_generation_schedule(tiny_config(), ["caption"], ["tok_rgb", "tok_depth"], **kwargs)


GENERATE_CASES = [
    (dict(seed=2**70), ValueError, r"seed must be an integer in \[0"),
    (dict(seed="1"), TypeError, r"seed must be an integer"),
    (dict(naive="yes"), TypeError, r"naive must be True or False"),
    (dict(batch_guidance="yes"), TypeError, r"batch_guidance must be True, False or None"),
    (dict(return_known=1), TypeError, r"return_known must be True or False"),
    (dict(num_sentinels=-1), ValueError, r"num_sentinels must be an integer >= 0"),
    (dict(generator="cpu"), TypeError, r"generator must be a torch.Generator"),
]


@pytest.mark.parametrize("kwargs, error, message", GENERATE_CASES, ids=[str(case[0]) for case in GENERATE_CASES])
def test_generate_options_are_checked(model, kwargs, error, message):
    schedule = build_generation_schedule(model.config, ["caption"], ["tok_rgb"], decoding_steps=1)
    caption = torch.tensor([[5, 6, 3]])
    with pytest.raises(error, match=message):
        generate(model, {"caption": caption}, schedule, **kwargs)


def test_generate_with_the_largest_seed_and_a_finite_scale_runs(model):
    schedule = build_generation_schedule(model.config, ["caption"], ["tok_rgb"], decoding_steps=2, cfg_scales=2.0)
    out = generate(model, {"caption": torch.tensor([[5, 6, 3]])}, schedule, seed=2**63 - 100)
    assert out["tok_rgb"].shape == (1, 16) and not math.isnan(out["tok_rgb"].float().mean().item())
