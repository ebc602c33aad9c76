"""The sampler on another device and in half precision, as far as a CPU-only CI can check, and
batched guidance equal to sequential guidance when the context projection has a bias.

* No tensor of a generation run is created on another device than the model's: the default device
  is switched to ``meta`` while generating (any tensor made without an explicit device would land
  there) and a ``TorchFunctionMode`` records the device of every tensor every torch call returns.
* bf16 / fp16 models generate (greedy argmax and sampling in float32 logits).
* An unconditional guidance view with no token at all: its cross-attention reads zero values, so
  its logits do not depend on whether it runs alone or padded in a batch with the conditional view
  (a random model with a non-zero ``decoder_proj_context.bias``, and the bundled checkpoint).
"""

from __future__ import annotations

import pytest
import torch
from torch.overrides import TorchFunctionMode

from fourm_hf import FourMModel
from fourm_hf.checkpoints import bundled_checkpoint
from fourm_hf.modeling.generation import (
    build_generation_schedule,
    generate,
    guidance_views,
    image_target_logits,
    prepare_state,
)
from fourm_hf.testing_utils import tiny_config

BATCH = 2


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    model = FourMModel(tiny_config()).eval()
    with torch.no_grad():  # trained checkpoints have one; random init starts it at zero
        model.decoder_proj_context.bias.normal_(0.0, 0.5, generator=torch.Generator().manual_seed(1))
    return model


def rgb_tokens(config, seed=3):
    grid = config.grid_size**2
    generator = torch.Generator().manual_seed(seed)
    return {"tok_rgb": torch.randint(config.modality("tok_rgb").vocab_size, (BATCH, grid), generator=generator)}


class RecordDevices(TorchFunctionMode):
    """Records the device of every tensor a torch function returns."""

    def __init__(self):
        super().__init__()
        self.devices = {}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        result = func(*args, **(kwargs or {}))
        outputs = result if isinstance(result, (tuple, list)) else (result,)
        for output in outputs:
            if isinstance(output, torch.Tensor):
                self.devices.setdefault(output.device.type, getattr(func, "__name__", str(func)))
        return result


def test_every_tensor_of_a_generation_run_lives_on_the_models_device(model):
    config = model.config
    schedule = build_generation_schedule(config, ["tok_rgb"], ["tok_depth", "caption"], decoding_steps=3,
                                         tokens_per_target=[None, 6], cfg_scales=[2.0, 1.5], top_p=0.9,
                                         autoregression_schemes=["roar", None])
    tokens = rgb_tokens(config)
    recorder = RecordDevices()
    with torch.device("meta"), recorder:  # a tensor made without device=... would be a meta tensor
        out = generate(model, tokens, schedule, generator=torch.Generator().manual_seed(0))
    assert set(recorder.devices) == {"cpu"}, f"tensors created elsewhere (first by): {recorder.devices}"
    assert out["tok_depth"].device.type == "cpu" and out["caption"].device.type == "cpu"


def test_inputs_on_another_device_are_moved_to_the_models(model):
    """Tokens on meta (standing in for a tensor the user left on another device) end up on the model's."""
    from fourm_hf.modeling.generation.sampler import model_device

    schedule = build_generation_schedule(model.config, ["tok_rgb"], ["tok_depth"], greedy=True, decoding_steps=2)
    tokens = {"tok_rgb": rgb_tokens(model.config)["tok_rgb"]}
    state = prepare_state(model.config, tokens, schedule, device=model_device(model))
    assert state.tokens["tok_rgb"].device == torch.device("cpu")
    meta_tokens = {"tok_rgb": torch.zeros(BATCH, model.config.grid_size**2, dtype=torch.long, device="meta")}
    with pytest.raises(NotImplementedError):  # data-dependent checks cannot run on meta: the state refuses it
        prepare_state(model.config, meta_tokens, schedule, device="meta")


def test_default_generator_is_made_on_the_models_device_and_results_match_an_explicit_one(model):
    schedule = build_generation_schedule(model.config, ["tok_rgb"], ["tok_depth"], decoding_steps=2)
    tokens = rgb_tokens(model.config)
    first = generate(model, tokens, schedule, seed=5)
    second = generate(model, tokens, schedule, generator=torch.Generator(device="cpu"), seed=5)
    assert torch.equal(first["tok_depth"], second["tok_depth"])


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_models_generate(model, dtype):
    half = FourMModel(model.config).eval()
    half.load_state_dict(model.state_dict())
    half = half.to(dtype)
    schedule = build_generation_schedule(model.config, ["tok_rgb"], ["tok_depth", "caption"], decoding_steps=3,
                                         tokens_per_target=[None, 5], temps=[1.0, 0.7], top_k=[5, 0], top_p=[0.0, 0.9])
    tokens = rgb_tokens(model.config)
    out = generate(half, tokens, schedule, generator=torch.Generator().manual_seed(0))
    depth_vocab = model.config.modality("tok_depth").vocab_size
    assert out["tok_depth"].shape == (BATCH, model.config.grid_size**2)
    assert int(out["tok_depth"].min()) >= 0 and int(out["tok_depth"].max()) < depth_vocab
    greedy = build_generation_schedule(model.config, ["tok_rgb"], ["tok_depth"], decoding_steps=2, greedy=True)
    ours = generate(half, tokens, greedy)["tok_depth"]
    reference = generate(model, tokens, greedy)["tok_depth"]
    assert (ours == reference).float().mean() > 0.5  # half precision flips only near-ties


def _guidance_logits(model, tokens, target="tok_depth"):
    """Per view (unconditional, conditional) logits of every position, stacked and one view at a time."""
    config = model.config
    schedule = build_generation_schedule(config, ["tok_rgb"], [target], cfg_scales=2.0, greedy=True, decoding_steps=2)
    state = prepare_state(config, tokens, schedule)
    views = guidance_views(state, schedule.targets[0])
    assert views[0] == [], f"the unconditional view should see nothing yet, sees {views[0]}"
    count = config.grid_size**2
    positions = torch.arange(count).expand(BATCH, -1)
    mask = torch.ones(BATCH, count, dtype=torch.bool)
    with torch.no_grad():
        stacked = image_target_logits(model, state, target, positions, mask, views, naive=False)
        alone = image_target_logits(model, state, target, positions, mask, views, naive=True)
    return stacked, alone


def test_batched_guidance_equals_sequential_with_a_context_bias(model):
    assert model.decoder_proj_context.bias.abs().max() > 0.1
    stacked, alone = _guidance_logits(model, rgb_tokens(model.config))
    for view in range(2):
        torch.testing.assert_close(stacked[view], alone[view], atol=1e-5, rtol=0)
    schedule = build_generation_schedule(model.config, ["tok_rgb"], ["tok_depth", "caption"], cfg_scales=3.0,
                                         greedy=True, decoding_steps=3, tokens_per_target=[None, 8])
    tokens = rgb_tokens(model.config)
    batched = generate(model, tokens, schedule, batch_guidance=True)
    sequential = generate(model, tokens, schedule, batch_guidance=False)
    for name in ("tok_depth", "caption"):
        assert torch.equal(batched[name], sequential[name]), name


def test_guidance_views_run_one_at_a_time_on_the_cpu_by_default(model, monkeypatch):
    """``batch_guidance=None`` (the default) is False on the CPU: as many decoder forwards as with False."""
    schedule = build_generation_schedule(model.config, ["tok_rgb"], ["tok_depth", "caption"], cfg_scales=3.0,
                                         greedy=True, decoding_steps=3, tokens_per_target=[None, 4])
    calls, real_decode = [], model.decode
    monkeypatch.setattr(model, "decode", lambda *a, **k: calls.append(1) or real_decode(*a, **k))
    counts = {}
    for batch_guidance in (None, False, True):
        calls.clear()
        generate(model, rgb_tokens(model.config), schedule, batch_guidance=batch_guidance)
        counts[batch_guidance] = len(calls)
    assert counts[None] == counts[False] > counts[True], counts


def test_unconditional_view_without_tokens_reads_a_zero_context(model):
    """Cross-attention over no real key returns 0 (the reference's empty encoder), not the bias."""
    stacked, _ = _guidance_logits(model, rgb_tokens(model.config))
    blind = FourMModel(model.config).eval()
    blind.load_state_dict(model.state_dict())
    with torch.no_grad():
        for block in blind.decoder:
            block.cross_attn.proj.weight.zero_()  # no cross-attention at all
    stacked_blind, _ = _guidance_logits(blind, rgb_tokens(model.config))
    torch.testing.assert_close(stacked[0], stacked_blind[0], atol=1e-5, rtol=0)


def test_bundled_checkpoint_batched_and_sequential_guidance_give_the_same_logits():
    model = FourMModel.from_pretrained(bundled_checkpoint()).eval()
    assert model.decoder_proj_context.bias.abs().max() > 0  # trained: the padding context is not zero
    stacked, alone = _guidance_logits(model, rgb_tokens(model.config, seed=9))
    for view in range(2):
        torch.testing.assert_close(stacked[view], alone[view], atol=1e-4, rtol=0)
