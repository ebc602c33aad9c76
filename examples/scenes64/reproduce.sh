#!/usr/bin/env bash
# Reproduce the bundled checkpoint src/fourm_hf/checkpoints/fourm-scenes64 from nothing, on a CPU.
# Run from the repository root. Every step writes atomically and resumes where it stopped, so the
# script can be re-run after an interruption. Outputs go to runs/scenes64/ (git-ignored).
#
# Cost on the 2-core development machine (shared with other work; see benchmarks/RESULTS.md):
# scenes 0.5 min, tokenizers 8 CPU-min, corpus 2 min, 4M stage 1 41 min (on 1 thread, beside a
# specialist on the other core), stage 2 46 min (2 threads), stage 3 121 min (1 thread, 2026-12-06),
# 40,000 scenes 2 min and their corpus 5 min (2 cores), stage 4 108 min (1 thread, 2026-12-06),
# each specialist 27 min (1 thread), evaluation 6 min (measured 2026-12-01 from each run's train_runtime).
set -euo pipefail
RUN=runs/scenes64
THREADS="--num-threads 1"
mkdir -p "$RUN"

# 1. Data: 10,000 training scenes and 256 validation scenes (different seeds: no shared scene).
fourm-hf make-scenes --num 10000 --size 64 --seed 0 --num-proc 2 --out "$RUN/scenes"
fourm-hf make-scenes --num 256 --size 64 --seed 1 --out "$RUN/scenes_val"
#    Stage 4 trains on 40,000 scenes of the same seed (the first 10,000 are the ones above: each scene is seeded
#    by its index).
fourm-hf make-scenes --num 40000 --size 64 --seed 0 --num-proc 2 --out "$RUN/scenes_40k"

# 2. Tokenizers: WordPiece for captions and boxes (class names as single tokens, 64 coordinate
#    bins = one per pixel), and one FSQ VQ-VAE (1024 codes, 8x8 grid) per dense modality.
fourm-hf train-text-tokenizer --dataset "$RUN/scenes" --columns caption --class-names-from boxes \
    --vocab-size 100 --num-sentinels 64 --coord-bins 64 --out "$RUN/text_tokenizer"
for modality in depth normal rgb; do
    fourm-hf train-tokenizer --modality $modality --dataset "$RUN/scenes" --out "$RUN/tok_$modality" \
        --steps 500 --batch-size 16 --lr 2e-3 --warmup-steps 25 --patch-size 8 --vocab-size 1024 \
        --eval-size 200 --eval-every 250 --checkpoint-every 100 $THREADS --resume
done
for modality in semseg; do
    fourm-hf train-tokenizer --modality $modality --dataset "$RUN/scenes" --out "$RUN/tok_$modality" \
        --steps 900 --batch-size 16 --lr 2e-3 --warmup-steps 30 --patch-size 8 --vocab-size 1024 \
        --eval-size 200 --eval-every 450 --checkpoint-every 100 $THREADS --resume
done
fourm-hf assemble-processor --text-tokenizer "$RUN/text_tokenizer" \
    --vqvae "$RUN/tok_rgb" "$RUN/tok_depth" "$RUN/tok_normal" "$RUN/tok_semseg" \
    --max-text-length 64 --out "$RUN/processor"

# 3. The tokenized corpus (the scenes are already 64 px: no crop).
fourm-hf build-corpus --dataset "$RUN/scenes" --processor "$RUN/processor" --crop none --out "$RUN/corpus/train"
fourm-hf build-corpus --dataset "$RUN/scenes_val" --processor "$RUN/processor" --crop none --out "$RUN/corpus/validation"
fourm-hf build-corpus --dataset "$RUN/scenes_40k" --processor "$RUN/processor" --crop none --out "$RUN/corpus_40k/train"

# 4. The 4M in four stages, then the two single-task specialists of the evaluation table. Give each run
#    the cores it may use alone (torch threads fighting over a core run several times slower). A
#    re-run resumes from the last checkpoint.
train() {  # CONFIG OUTPUT_SUBDIR THREADS
    local resume=()
    if compgen -G "$RUN/$2/checkpoint-*" > /dev/null; then resume=(--resume-from-checkpoint); fi
    OMP_NUM_THREADS=$3 fourm-hf train --config "$1" "${resume[@]}"
}
train examples/scenes64/fourm_scenes64.yaml fourm 2
train examples/scenes64/fourm_scenes64_stage2.yaml fourm_stage2 2
train examples/scenes64/fourm_scenes64_stage3.yaml fourm_stage3 2
train examples/scenes64/fourm_scenes64_stage4.yaml fourm_stage4 2
train examples/scenes64/specialist_depth.yaml specialist_depth 2
train examples/scenes64/specialist_semseg.yaml specialist_semseg 2

# 5. The evaluation table (benchmarks/RESULTS.md, the model card), then the bundled folder.
OMP_NUM_THREADS=1 fourm-hf evaluate --checkpoint "$RUN/fourm_stage4" --processor "$RUN/processor" --num-scenes 200 \
    --compare "4M after stage 3 (15,500 steps)=$RUN/fourm_stage3" \
    --compare "4M after stage 2 (9000 steps)=$RUN/fourm_stage2" \
    --compare "4M after stage 1 (3000 steps: the specialists' compute)=$RUN/fourm" \
    --specialist depth="$RUN/specialist_depth" --specialist semseg="$RUN/specialist_semseg" \
    --train-stats "$RUN/scenes" --out "$RUN/eval.json" --markdown "$RUN/eval.md"
cp "$RUN/eval.json" examples/scenes64/eval.json   # the committed record (and the card's table)
fourm-hf assemble-checkpoint --model "$RUN/fourm_stage4" --processor "$RUN/processor" --evaluation "$RUN/eval.json" \
    --bundled --no-remote-code --out src/fourm_hf/checkpoints/fourm-scenes64
