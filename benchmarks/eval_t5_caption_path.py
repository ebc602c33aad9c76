"""Caption -> X through ``t5_caption`` against through ``caption``: do the two give the same tokens?

On every fixture trunk that reads both (``../shared/fixtures/ml4m``, discovered), with a tiny random T5
encoder of the trunk's ``t5_caption`` width (the real T5-XXL is 4.7 B parameters and cannot be downloaded
here): greedy MaskGIT, the same seed, the same captions; prints per target the share of equal tokens between
the two conditionings, and the share between two runs of the same one (1.0: the comparison is deterministic).

    python benchmarks/eval_t5_caption_path.py --target tok_rgb --captions 8
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch

ML4M = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "ml4m"
CAPTIONS = ["a small red cube on a table", "two blue spheres", "a green cylinder next to a box", "an empty room",
            "a yellow cone", "three cubes in a row", "a large metal sphere", "a purple torus on the floor"]


def tiny_t5(folder: Path, width: int, text_file: Path):
    from transformers import PreTrainedTokenizerFast, T5Config, T5EncoderModel

    from fourm_hf.processing.t5_captions import T5CaptionEncoder

    torch.manual_seed(0)
    tokenizer = PreTrainedTokenizerFast(tokenizer_file=str(text_file), pad_token="[PAD]", eos_token="[EOS]")
    T5EncoderModel(T5Config(vocab_size=len(tokenizer), d_model=width, d_kv=8, d_ff=32, num_layers=1,
                            num_heads=2)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return T5CaptionEncoder.from_pretrained(folder)


def generate_from(model, conditions: list[str], target: str, tokens: dict, continuous: dict, known: dict):
    from fourm_hf import build_generation_schedule, generate

    schedule = build_generation_schedule(model.config, conditions, [target], greedy=True)
    return generate(model, tokens, schedule, known=dict(known), continuous_inputs=continuous,
                    generator=torch.Generator().manual_seed(0))[target]


def main() -> int:
    from fourm_hf import FourMModel
    from fourm_hf.text.tokenization_fourm import FourMTextTokenizer

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", default="tok_rgb")
    parser.add_argument("--captions", type=int, default=8)
    args = parser.parse_args()
    captions = CAPTIONS[: args.captions]
    trunks = [f for f in sorted(ML4M.iterdir()) if (f / "config.json").is_file()
              and {"t5_caption", "caption"} <= set(json.loads((f / "config.json").read_text()).get("domains_in", []))]
    for trunk in trunks:
        model = FourMModel.from_pretrained(str(trunk))
        text_file = sorted(trunk.glob("text_tokenizer*.json"))[0]
        text = FourMTextTokenizer(tokenizer_file=str(text_file))
        with tempfile.TemporaryDirectory() as folder:
            encoder = tiny_t5(Path(folder), model.config.modality("t5_caption").num_channels, text_file)
        embeddings, mask = encoder(captions)
        rows = [text.encode_for_model(caption, "caption") + [text.eos_token_id] for caption in captions]
        ids = torch.zeros(len(rows), max(map(len, rows)), dtype=torch.long)
        for index, row in enumerate(rows):
            ids[index, : len(row)] = torch.tensor(row)
        t5 = {"t5_caption": embeddings}, {"t5_caption": mask}
        via_caption = generate_from(model, ["caption"], args.target, {"caption": ids}, {}, {})
        via_t5 = generate_from(model, ["t5_caption"], args.target, {}, *t5)
        via_t5_again = generate_from(model, ["t5_caption"], args.target, {}, *t5)
        both = generate_from(model, ["caption", "t5_caption"], args.target, {"caption": ids}, *t5)
        share = lambda a, b: (a == b).float().mean().item()  # noqa: E731
        print(f"{trunk.name}: caption -> {args.target}, {len(captions)} captions, greedy, seed 0, tiny random T5")
        print(f"  equal tokens, t5_caption vs caption path:          {share(via_t5, via_caption):.3f}")
        print(f"  equal tokens, caption + t5_caption vs caption path: {share(both, via_caption):.3f}")
        print(f"  equal tokens, t5_caption run twice:                 {share(via_t5, via_t5_again):.3f}")
        print(f"  samples with identical token grids (t5 vs caption): "
              f"{sum(torch.equal(a, b) for a, b in zip(via_t5, via_caption))} / {len(captions)}")
    if not trunks:
        print(f"no fixture trunk under {ML4M} reads both caption and t5_caption")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
