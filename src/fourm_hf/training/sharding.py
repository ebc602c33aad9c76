"""FSDP / DeepSpeed under ``fourm-hf train``: what accelerate was asked for, and FSDP2 on CPU.

``accelerate launch --config_file fsdp.yaml`` and ``deepspeed_zero2.yaml`` ask for sharding through
environment variables (``ACCELERATE_USE_FSDP``, ``ACCELERATE_USE_DEEPSPEED``); ``TrainingArguments(fsdp=...)``
asks through the arguments. accelerate 1.16 honours neither on a machine without GPUs: with
``use_cpu`` its state is ``MULTI_CPU`` and the model is silently wrapped in DDP, which trains but
shards nothing. (DeepSpeed does run on CPU, over its own gloo group; ``fourm-hf train`` only has to
name the backend, see ``build_training_arguments``.) Two things here:

* :func:`enable_fsdp_on_cpu` turns that ``MULTI_CPU`` state into an FSDP one before the Trainer
  prepares the model. torch's FSDP2 (``fully_shard``) runs on CPU over gloo; only accelerate's
  state machine refuses it. Everything after (wrapping by ``_no_split_modules``, sharded optimizer,
  checkpoints through ``torch.distributed.checkpoint``) is accelerate's and the Trainer's own FSDP2
  code, unchanged, so a CPU run exercises the same path as a GPU run, in fp32.
* :func:`check_requested_sharding` refuses to train when sharding was asked for but the
  accelerator ended up with something else, instead of training with plain DDP under a sharding config.
"""

from __future__ import annotations

import os

from accelerate.state import PartialState
from accelerate.utils import DistributedType


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "false").lower() == "true"


def requested_sharding(args) -> str | None:
    """``"fsdp"``, ``"deepspeed"`` or ``None``: what the launcher config or ``TrainingArguments`` ask for."""
    if _env_flag("ACCELERATE_USE_DEEPSPEED") or getattr(args, "deepspeed", None):
        return "deepspeed"
    if _env_flag("ACCELERATE_USE_FSDP") or getattr(args, "fsdp_plugin_args", None) is not None:
        return "fsdp"
    return None


def enable_fsdp_on_cpu(accelerator, args) -> bool:
    """Switch a ``MULTI_CPU`` accelerator to FSDP when FSDP was requested; returns whether it did.

    Must run right after the ``Accelerator`` is built and before anything is prepared. The plugin is
    the one accelerate would have used: from ``TrainingArguments.fsdp_plugin_args`` when given,
    otherwise from the ``FSDP_*`` variables of ``accelerate launch``. (FSDP1 never gets here: accelerate's
    plugin refuses it on CPU, "FSDP parameter initialization with `sync_module_states=True` is not
    supported on cpu".)
    """
    from accelerate.utils import FullyShardedDataParallelPlugin

    state = accelerator.state
    if requested_sharding(args) != "fsdp" or state.distributed_type != DistributedType.MULTI_CPU:
        return False
    if args.fsdp_plugin_args is not None:
        plugin = FullyShardedDataParallelPlugin(**args.fsdp_plugin_args)
    else:
        plugin = FullyShardedDataParallelPlugin()
    if state.mixed_precision != "no":
        plugin.set_mixed_precision(state.mixed_precision)
    # AcceleratorState and PartialState are shared-state singletons; accelerate itself keeps them in step.
    state.fsdp_plugin = plugin
    state.distributed_type = DistributedType.FSDP
    PartialState._shared_state["distributed_type"] = DistributedType.FSDP
    return True


def check_requested_sharding(accelerator, args) -> None:
    """Raise when FSDP or DeepSpeed was requested but the accelerator does something else."""
    wanted = requested_sharding(args)
    expected = {"fsdp": DistributedType.FSDP, "deepspeed": DistributedType.DEEPSPEED}.get(wanted)
    if expected is None or accelerator.distributed_type == expected:
        return
    raise ValueError(
        f"The launch asked for {wanted} but accelerate set up {accelerator.distributed_type.value}: training would "
        "replicate the model instead of sharding it. Check the accelerate config (distributed_type, use_cpu) and "
        "docs/distributed.md."
    )


__all__ = ["check_requested_sharding", "enable_fsdp_on_cpu", "requested_sharding"]
