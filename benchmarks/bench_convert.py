"""Peak memory of ``convert-ml4m`` on a synthetic released-size checkpoint, against its file size.

Writes a reference-layout checkpoint of the chosen size (zeros; the registry's vocabularies; the
released 4M-21 or 4M-7 domain set), then converts it in a fresh process while a thread samples the
process's memory. Prints the file size, the peak resident set (VmHWM: includes the pages of the
memory-mapped input file the kernel keeps resident while they are read) and the peak anonymous
memory (RssAnon: the process's own allocations, i.e. the weights it holds).

``--mode eager`` measures the previous way of converting instead (``safetensors.load_file`` of the
whole file, then a freshly initialised model and ``load_state_dict``) for comparison.

    python benchmarks/bench_convert.py --size L --layout 4m21
    python benchmarks/bench_convert.py --size B --layout 4m21 --mode eager
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

SIZES = {"B": (768, 12, 12), "L": (1024, 24, 24), "XL": (2048, 24, 24)}  # dim, encoder, decoder depth (head dim 64)
FOURM7 = ["caption", "det", "tok_rgb@224", "tok_depth@224", "tok_normal@224", "tok_semseg@224", "tok_clip@224"]
FOURM21 = ["caption", "t5_caption", "det", "metadata", "human_poses", "color_palette", "sam_instance", "tok_rgb@224",
           "tok_normal@224", "tok_depth@224", "tok_semseg@224", "tok_clip@224", "tok_dinov2@224", "tok_dinov2_global",
           "tok_imagebind@224", "tok_imagebind_global", "tok_sam_edge@224", "tok_canny_edge@224"]


def released_config(size: str, layout: str) -> dict:
    dim, encoder_depth, decoder_depth = SIZES[size]
    outputs = FOURM21 if layout == "4m21" else FOURM7
    inputs = outputs[:1] + ["rgb@224"] + outputs[1:] if layout == "4m21" else ["rgb@224"] + outputs
    return dict(domains_in=inputs, domains_out=list(outputs), dim=dim, encoder_depth=encoder_depth,
                decoder_depth=decoder_depth, num_heads=dim // 64, mlp_ratio=4, image_size=224, patch_size=16,
                act_layer="SiLU", gated_mlp=True, qkv_bias=False, proj_bias=False, mlp_bias=False, norm_bias=False,
                share_modality_embeddings=layout != "4m21")


def write_checkpoint(folder: Path, size: str, layout: str) -> None:
    """config.json + model.safetensors of a meta-device model (zeros: no weights are materialised first)."""
    import torch
    from safetensors.torch import save_file

    from fourm_hf.ml4m.conversion import config_from_reference
    from fourm_hf.modeling.modeling_fourm import FourMModel
    from fourm_hf.ml4m.reference_export import reference_state_dict

    config_dict = released_config(size, layout)
    with torch.device("meta"):
        model = FourMModel(config_from_reference(config_dict, {}))
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config_dict))
    save_file(reference_state_dict(model, config_dict), str(folder / "model.safetensors"))


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def convert_and_measure(folder: Path, output: Path, mode: str) -> dict:
    """Convert in this process while sampling RssAnon; return peak memory figures in bytes."""
    from fourm_hf.ml4m.conversion import convert_ml4m_checkpoint

    peak_anon, done = [0], threading.Event()

    def sample():
        while not done.is_set():
            peak_anon[0] = max(peak_anon[0], _status_kib("RssAnon"))
            time.sleep(0.005)

    baseline_anon = _status_kib("RssAnon")
    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    start = time.perf_counter()
    if mode == "streaming":
        convert_ml4m_checkpoint(folder / "model.safetensors", folder / "config.json", output)
    else:
        _eager_convert(folder, output)
    seconds = time.perf_counter() - start
    done.set()
    thread.join()
    return {"seconds": seconds, "peak_rss": _status_kib("VmHWM") * 1024, "peak_anon": peak_anon[0] * 1024,
            "anon_before": baseline_anon * 1024}


def _eager_convert(folder: Path, output: Path) -> None:
    """The previous conversion: the whole file in memory, then a freshly initialised model beside it."""
    from safetensors.torch import load_file

    from fourm_hf.ml4m.conversion import config_from_reference, convert_reference_state_dict
    from fourm_hf.modeling.modeling_fourm import FourMModel

    state_dict = load_file(str(folder / "model.safetensors"))
    config = config_from_reference(json.loads((folder / "config.json").read_text()), state_dict)
    model = FourMModel(config)
    model.load_state_dict(convert_reference_state_dict(state_dict, config), strict=False)
    model.save_pretrained(output)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="L")
    parser.add_argument("--layout", choices=["4m21", "4m7"], default="4m21")
    parser.add_argument("--mode", choices=["streaming", "eager"], default="streaming")
    parser.add_argument("--workdir", default=None, help="where the synthetic checkpoint goes (default: a temp folder)")
    parser.add_argument("--child", nargs=2, metavar=("FOLDER", "OUTPUT"), help=argparse.SUPPRESS)
    parser.add_argument("--write", metavar="FOLDER", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.write:
        write_checkpoint(Path(args.write), args.size, args.layout)
        return 0
    if args.child:
        print(json.dumps(convert_and_measure(Path(args.child[0]), Path(args.child[1]), args.mode)))
        return 0
    with tempfile.TemporaryDirectory(dir=args.workdir) as work:
        folder = Path(work) / "released"
        # both steps in fresh processes, so the measured one holds nothing but the conversion
        subprocess.run([sys.executable, __file__, "--size", args.size, "--layout", args.layout, "--write", str(folder)],
                       check=True)
        file_size = (folder / "model.safetensors").stat().st_size
        result = subprocess.run([sys.executable, __file__, "--mode", args.mode, "--child", str(folder), str(Path(work) / "out")],
                                check=True, capture_output=True, text=True)
        measured = json.loads(result.stdout.strip().splitlines()[-1])
    gib = 1024**3
    print(f"4M-{args.layout[2:].upper()} {args.size} layout, {args.mode} conversion")
    print(f"  checkpoint file      {file_size / gib:7.2f} GiB")
    print(f"  peak RSS (VmHWM)     {measured['peak_rss'] / gib:7.2f} GiB  = {measured['peak_rss'] / file_size:.2f} x file")
    print(f"  peak anonymous (RssAnon) {measured['peak_anon'] / gib:7.2f} GiB  = {measured['peak_anon'] / file_size:.2f} x file"
          f"  (before converting: {measured['anon_before'] / gib:.2f} GiB)")
    print(f"  time                 {measured['seconds']:7.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
