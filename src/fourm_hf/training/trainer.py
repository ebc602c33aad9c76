"""FourMTrainer: ``transformers.Trainer`` with the few changes 4M pretraining needs.

What differs from the stock ``Trainer`` and why:

1. **The loss of one optimizer step is the 4M loss of the whole global batch.** 4M averages the
   cross-entropy per modality (then over modalities). The mean of per-process (or per-micro-batch)
   means is *not* that when processes hold different numbers of target tokens of a modality,
   which the Dirichlet budgets make the rule. So when ``world_size > 1`` or
   ``gradient_accumulation_steps > 1`` (and ``global_loss_normalization`` is on, the default),
   :meth:`FourMTrainer.get_batch_samples` counts each output modality's target tokens over all
   micro-batches of the step and all-reduces the counts across processes; then
   :meth:`FourMTrainer.compute_loss` divides each process's *summed* per-modality loss by the
   global count and multiplies by the world size (DDP averages gradients over processes). The
   gradients then equal those of one process that sees the whole global batch at once. The model
   sets ``accepts_loss_kwargs = False``, so the Trainer's own ``num_items_in_batch`` scaling never
   touches this loss.
2. **Evaluation reports the loss per modality** (``eval_loss_tok_rgb``, ..., token-weighted over
   the whole eval set, summed across processes) and ``eval_loss`` combines them the way the model
   does (mean over output modalities, or over tokens with ``loss_averaging="token"``). The stock
   evaluation loop would try to concatenate the logits, which here are dicts of tensors of
   different lengths; :meth:`prediction_step` returns the loss only.
3. **Training logs show per-modality losses** (``loss_tok_rgb``, ...), token-weighted over the
   logging window and across processes.
4. **Masks**: with a :class:`~fourm_hf.data.masking.FourMMaskingCollator`, the
   :class:`~fourm_hf.data.masking.MaskingEpochCallback` is added automatically (masks change per
   epoch and a resumed run is identical), and evaluation uses its own copy of the collator frozen
   at epoch 0, so eval masks are the same at every evaluation.

5. **Sharding** (FSDP2 / DeepSpeed through ``accelerate launch``): on a machine without GPUs, where
   accelerate 1.16 would silently train DDP under an FSDP config, the accelerator is switched to FSDP2
   (:mod:`fourm_hf.training.sharding`); a requested sharding that did not happen is an error; under
   ``SHARDED_STATE_DICT`` the final :meth:`save_model` still writes one full ``model.safetensors``.
6. **Checkpoints are complete or absent**: each ``checkpoint-N`` is written under
   ``<output_dir>/.checkpoint-staging`` and renamed into place when complete; a kill during a save
   leaves only a staging folder, removed by the next save or run, and ``resume_from_checkpoint=True``
   takes the last complete checkpoint (:mod:`fourm_hf.training.checkpoints`). The model saved at the end
   (``save_model``) is staged the same way and each of its files renamed into ``output_dir``.

6. **Frozen warm-up** (:class:`~fourm_hf.training.finetune.FrozenWarmupCallback`, ``model.frozen_model_steps``):
   the frozen parameters' gradients are dropped before gradient clipping, so they neither move nor
   shrink the clipped update of the parameters that train.

Not supported: ``torch.nn.DataParallel`` (several GPUs in one process); launch one process per
device with ``torchrun`` / ``accelerate launch`` instead. ``predict`` returns no logits.
"""

from __future__ import annotations

import copy
import os
import shutil

import torch
from accelerate.utils import DistributedType
from transformers import Trainer
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, rotate_checkpoints

from ..data.masking import FourMMaskingCollator, MaskingEpochCallback
from ..data.masking.mixture_collator import MixtureCollator
from .checkpoints import FINAL_MODEL_STAGING, clean_staging, last_checkpoint, publish_checkpoint, publish_files, staging_root
from .finetune import FrozenWarmupCallback
from .sharding import check_requested_sharding, enable_fsdp_on_cpu

IGNORE_INDEX = -100


def target_token_counts(batch: dict, modality_ids: torch.Tensor) -> torch.Tensor:
    """Number of target tokens (labels != -100, not padding) per modality in a packed batch.

    Args:
        batch: packed batch with ``labels``, ``decoder_modality_ids``, ``decoder_attention_mask`` (B, T).
        modality_ids: (M,) model modality ids to count.
    Returns:
        (M,) int64 counts, counted exactly like ``FourMModel.compute_loss`` does.
    """
    labels = batch["labels"]
    valid = (labels != IGNORE_INDEX) & batch["decoder_attention_mask"].bool()
    modality_ids = modality_ids.to(labels.device)
    matches = (batch["decoder_modality_ids"][..., None] == modality_ids) & valid[..., None]
    return matches.sum(dim=(0, 1))


class FourMTrainer(Trainer):
    """``Trainer`` for 4M pretraining (see the module docstring for what it changes).

    Args (besides the ``Trainer`` ones):
        eval_data_collator: collator for evaluation; default: a copy of ``data_collator`` fixed at
            epoch 0 when that is a :class:`FourMMaskingCollator`, else ``data_collator`` itself.
        global_loss_normalization: normalise each modality's loss by its token count over the whole
            global batch (all processes, all accumulation steps), so distributed / accumulated
            training computes exactly the single-process full-batch loss. Only acts when
            ``world_size > 1`` or ``gradient_accumulation_steps > 1``; otherwise the model's loss
            is used as is.
    """

    def __init__(self, *args, eval_data_collator=None, global_loss_normalization: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        if self.args.remove_unused_columns:
            raise ValueError(
                "TrainingArguments.remove_unused_columns must be False for 4M: the modality columns "
                "(tok_rgb, caption, ...) are read by the masking collator, not by the model's forward."
            )
        if int(os.environ.get("WORLD_SIZE", "1")) > 1 and self.accelerator.distributed_type == DistributedType.NO:
            raise ValueError(
                f"Launched with WORLD_SIZE={os.environ['WORLD_SIZE']} but the Trainer is not distributed, so every "
                "process would train alone. On a machine without GPUs pass TrainingArguments(use_cpu=True) "
                "(fourm-hf train does this by default)."
            )
        if self.args.n_gpu > 1:
            raise ValueError(
                f"FourMTrainer does not support torch.nn.DataParallel ({self.args.n_gpu} GPUs in one process); "
                "launch one process per GPU with torchrun or accelerate launch."
            )
        config = self.accelerator.unwrap_model(self.model).config
        self.output_modality_names = list(config.output_modalities)
        self.loss_averaging = config.loss_averaging
        self._modality_ids = torch.tensor([config.modality_id(name) for name in self.output_modality_names])
        self.global_loss_normalization = bool(global_loss_normalization)
        # Our globally normalised loss already covers all accumulation steps: the Trainer must not
        # divide it again; the model's own per-batch mean must be divided (stock behaviour).
        self.loss_is_scaled_for_ga = self.normalizes_globally

        if eval_data_collator is None and isinstance(self.data_collator, FourMMaskingCollator):
            eval_data_collator = copy.copy(self.data_collator)
            eval_data_collator.set_epoch(0)
        self.eval_data_collator = eval_data_collator if eval_data_collator is not None else self.data_collator
        if isinstance(self.data_collator, (FourMMaskingCollator, MixtureCollator)) and not any(
            isinstance(cb, MaskingEpochCallback) and cb.collator is self.data_collator
            for cb in self.callback_handler.callbacks
        ):
            self.add_callback(MaskingEpochCallback(self.data_collator))

        self._step_target_counts = None
        self._log_sums, self._log_counts = self._zeros()
        self._eval_sums, self._eval_counts = self._zeros()
        self._saving_to_staging = False

    # ---- checkpoints: complete or absent (training/checkpoints.py) ---------------------------------------
    def train(self, resume_from_checkpoint=None, *args, **kwargs):
        """Stock ``train``; ``resume_from_checkpoint=True`` takes the last complete ``checkpoint-N`` and
        what a killed save left in the staging folder is removed first."""
        if self.args.should_save:
            clean_staging(self.args.output_dir)
        if resume_from_checkpoint is True:
            resume_from_checkpoint = last_checkpoint(self.args.output_dir)
            if resume_from_checkpoint is None:
                raise ValueError(f"resume_from_checkpoint=True but {self.args.output_dir} holds no checkpoint-N folder.")
        return super().train(resume_from_checkpoint, *args, **kwargs)

    def _get_output_dir(self, trial) -> str:
        run_dir = super()._get_output_dir(trial)
        return staging_root(run_dir) if self._saving_to_staging else run_dir

    def _save_checkpoint(self, model, trial) -> None:
        """The stock checkpoint, written under ``.checkpoint-staging`` and renamed into place when complete."""
        run_dir = self._get_output_dir(trial)
        name = f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        if self.args.should_save:
            clean_staging(run_dir)
        self.accelerator.wait_for_everyone()
        self._saving_to_staging = True
        try:
            super()._save_checkpoint(model, trial)
        finally:
            self._saving_to_staging = False
        self.accelerator.wait_for_everyone()  # every rank's shard is written
        if self.args.should_save:
            publish_checkpoint(run_dir, name)
            clean_staging(run_dir)
            if self.state.best_global_step:
                best = os.path.join(run_dir, f"{PREFIX_CHECKPOINT_DIR}-{self.state.best_global_step}")
                self.state.best_model_checkpoint = best if os.path.isdir(best) else self.state.best_model_checkpoint
            rotate_checkpoints(output_dir=run_dir, save_total_limit=self.args.save_total_limit,
                               best_model_checkpoint=self.state.best_model_checkpoint, use_mtime=True)
        self.accelerator.wait_for_everyone()

    def _clip_grad_norm(self, model):
        """Clip as the Trainer does, after a frozen warm-up dropped the trunk's gradients (``FrozenWarmupCallback``)."""
        for callback in self.callback_handler.callbacks:
            if isinstance(callback, FrozenWarmupCallback):
                callback.drop_frozen_gradients(self.model, self.state.global_step)
        return super()._clip_grad_norm(model)

    def create_accelerator_and_postprocess(self) -> None:
        """The stock accelerator, switched to FSDP2 on a GPU-less machine when FSDP was asked for (see ``sharding``)."""
        super().create_accelerator_and_postprocess()
        if enable_fsdp_on_cpu(self.accelerator, self.args):
            self.is_fsdp_enabled = True
        check_requested_sharding(self.accelerator, self.args)

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """Stock ``save_model``, with every file of a model saved by the user (``_internal_call=False``) written
        whole or not at all, and under FSDP with sharded checkpoints one full safetensors file.

        The files are written under ``<output_dir>/.checkpoint-staging/final-model`` and each is then renamed
        into ``output_dir`` (``os.replace``), so a kill during the save leaves the earlier files (or none) and a
        staging folder that the next save or run removes, never a truncated ``model.safetensors``. A save
        inside a checkpoint (``_internal_call=True``) writes directly: the checkpoint folder itself is staged.
        The push to the Hub that ``push_to_hub`` asks for happens after the files are in place.
        """
        if _internal_call:
            self._write_model(output_dir, _internal_call=True)
            return
        output_dir = output_dir if output_dir is not None else self.args.output_dir
        staged = os.path.join(staging_root(output_dir), FINAL_MODEL_STAGING)
        if self.args.should_save:
            shutil.rmtree(staged, ignore_errors=True)
        self.accelerator.wait_for_everyone()
        self._write_model(staged, _internal_call=False)
        self.accelerator.wait_for_everyone()  # every rank has written what it writes
        if self.args.should_save:
            publish_files(staged, output_dir)
            clean_staging(output_dir)
        self.accelerator.wait_for_everyone()
        if self.args.push_to_hub:
            self.push_to_hub(commit_message="Model save", revision=self.args.hub_revision)

    def _write_model(self, output_dir: str, _internal_call: bool) -> None:
        """The stock save without its Hub push; under FSDP with ``SHARDED_STATE_DICT`` the final model is
        gathered on every rank and written by the main process (the stock Trainer writes no model then),
        so the output folder loads with ``from_pretrained``. Checkpoints stay sharded."""
        if self.is_fsdp_enabled and not _internal_call and (
            "FULL_STATE_DICT" not in str(self.accelerator.state.fsdp_plugin.state_dict_type)
        ):
            state_dict = self.accelerator.get_state_dict(self.model)  # a collective: all ranks take part
            self._save(output_dir, state_dict=state_dict)
            return
        super().save_model(output_dir, _internal_call=True)

    # ---- helpers -------------------------------------------------------------------------------------
    @property
    def normalizes_globally(self) -> bool:
        """True when the loss is normalised by global per-modality token counts (see the class docstring)."""
        return self.global_loss_normalization and (
            self.accelerator.num_processes > 1 or self.args.gradient_accumulation_steps > 1
        )

    def _zeros(self) -> tuple[torch.Tensor, torch.Tensor]:
        size = len(self.output_modality_names)
        return (
            torch.zeros(size, dtype=torch.float64, device=self.args.device),
            torch.zeros(size, dtype=torch.int64, device=self.args.device),
        )

    def _sum_across_processes(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.accelerator.num_processes == 1:
            return tensor
        return self.accelerator.reduce(tensor.contiguous(), reduction="sum")

    def _modality_sums(self, outputs, counts: torch.Tensor) -> torch.Tensor:
        """(M,) summed cross-entropy per output modality = the model's per-modality mean x its count."""
        return torch.stack(
            [outputs.modality_losses[name] * counts[i] for i, name in enumerate(self.output_modality_names)]
        )

    def _combine(self, sums: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        """Total loss from (M,) summed losses and (M,) token counts, as ``FourMModel.compute_loss`` combines them."""
        counts = counts.to(sums.dtype)
        if self.loss_averaging == "modality":
            return (sums / counts.clamp(min=1)).sum() / len(self.output_modality_names)
        return sums.sum() / counts.sum().clamp(min=1)

    # ---- training ------------------------------------------------------------------------------------
    def get_batch_samples(self, epoch_iterator, num_batches, device):
        """Fetch the micro-batches of one optimizer step; count their target tokens per modality globally."""
        batch_samples, num_items_in_batch = super().get_batch_samples(epoch_iterator, num_batches, device)
        if self.normalizes_globally:
            counts = torch.zeros(len(self.output_modality_names), dtype=torch.int64, device=self.args.device)
            for batch in batch_samples:
                counts += target_token_counts(batch, self._modality_ids).to(counts.device)
            self._step_target_counts = self._sum_across_processes(counts)
        return batch_samples, num_items_in_batch

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """The model's loss, or (distributed / accumulated) its globally normalised version; logs per modality."""
        outputs = model(**inputs)
        counts = target_token_counts(inputs, self._modality_ids)
        sums = self._modality_sums(outputs, counts)
        self._log_sums += sums.detach().to(self._log_sums)
        self._log_counts += counts.to(self._log_counts)
        if self.normalizes_globally and model.training:
            if self._step_target_counts is None:
                raise RuntimeError("FourMTrainer.compute_loss: global token counts of this step were not computed.")
            loss = self._combine(sums, self._step_target_counts) * self.accelerator.num_processes
        else:
            loss = outputs.loss
        return (loss, outputs) if return_outputs else loss

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Add ``loss_<modality>`` (token-weighted over the logging window, all processes) to training logs."""
        if "loss" in logs:
            sums = self._sum_across_processes(self._log_sums)
            counts = self._sum_across_processes(self._log_counts)
            for name, total, count in zip(self.output_modality_names, sums.tolist(), counts.tolist()):
                if count > 0:
                    logs[f"loss_{name}"] = total / count
            self._log_sums, self._log_counts = self._zeros()
        super().log(logs, start_time)

    # ---- evaluation ----------------------------------------------------------------------------------
    def get_eval_dataloader(self, eval_dataset=None):
        """The stock eval dataloader, built with the eval collator (masks fixed across evaluations)."""
        train_collator = self.data_collator
        self.data_collator = self.eval_data_collator
        try:
            return super().get_eval_dataloader(eval_dataset)
        finally:
            self.data_collator = train_collator

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        """Loss of one eval batch; accumulates per-modality summed losses and counts. Returns no logits."""
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad():
            outputs = model(**inputs)
        counts = target_token_counts(inputs, self._modality_ids)
        self._eval_sums += self._modality_sums(outputs, counts).to(self._eval_sums)
        self._eval_counts += counts.to(self._eval_counts)
        return outputs.loss.detach(), None, None

    def evaluation_loop(self, dataloader, description, prediction_loss_only=None, ignore_keys=None, metric_key_prefix="eval"):
        """Stock loop with ``prediction_loss_only``; then ``<prefix>_loss`` and ``<prefix>_loss_<modality>``.

        Per-modality losses are token-weighted over the whole eval set and all processes (a modality
        with no target tokens in the eval set gets no key). Under several processes, accelerate may
        repeat a few samples to even out the last batch; they count like the others.
        """
        self._eval_sums, self._eval_counts = self._zeros()
        output = super().evaluation_loop(
            dataloader, description, prediction_loss_only=True, ignore_keys=ignore_keys, metric_key_prefix=metric_key_prefix
        )
        sums = self._sum_across_processes(self._eval_sums)
        counts = self._sum_across_processes(self._eval_counts)
        metrics = output.metrics
        if int(counts.sum()) > 0:
            metrics[f"{metric_key_prefix}_loss"] = float(self._combine(sums, counts))
        for name, total, count in zip(self.output_modality_names, sums.tolist(), counts.tolist()):
            if count > 0:
                metrics[f"{metric_key_prefix}_loss_{name}"] = total / count
        metrics[f"{metric_key_prefix}_target_tokens"] = int(counts.sum())
        return output


__all__ = ["FourMTrainer", "target_token_counts"]
