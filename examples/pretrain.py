"""Pretrain 4M from Python: the same run as ``fourm-hf train --config CONFIG.yaml``.

    python examples/pretrain.py --config examples/configs/tiny_scenes.yaml training.max_steps=100
    python examples/pretrain.py --config examples/configs/tiny_scenes.yaml --random-corpus 256   # smoke test

``--random-corpus N`` trains on N random samples in the corpus format instead of ``data.train``
(no corpus needed; the loss falls only as far as random tokens allow). Under several processes:
``torchrun --nproc_per_node 2 examples/pretrain.py --config ...``.
"""

import argparse

from fourm_hf.training.pretrain import build_model_config, build_trainer, load_settings, random_corpus

parser = argparse.ArgumentParser()
parser.add_argument("--config", required=True)
parser.add_argument("--random-corpus", type=int, default=0, metavar="N")
parser.add_argument("overrides", nargs="*", help="section.key=value, e.g. training.max_steps=100")
args = parser.parse_args()

settings = load_settings(args.config, args.overrides)
train_dataset = eval_dataset = None
if args.random_corpus:
    config = build_model_config(settings["model"], settings["masking"])
    train_dataset = random_corpus(config, args.random_corpus, seed=0)
    eval_dataset = random_corpus(config, max(8, args.random_corpus // 10), seed=1)

# Checks the corpus (columns, ids, budgets) before any step, builds model, collator and Trainer.
trainer = build_trainer(settings, train_dataset=train_dataset, eval_dataset=eval_dataset)
trainer.train()  # resume with trainer.train(resume_from_checkpoint=True)
trainer.save_model()
if trainer.eval_dataset is not None:
    metrics = trainer.evaluate()  # eval_loss and eval_loss_<modality>
    print({key: round(value, 4) for key, value in metrics.items() if key.startswith("eval_loss")})
