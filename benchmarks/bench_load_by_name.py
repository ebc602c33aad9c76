"""Time and peak memory of ``FourMModel.from_pretrained(<released repo id>)``: first load (download already
in the Hub cache, conversion, caching) and second load (the cached safetensors).

Writes a synthetic released checkpoint (random weights in the reference's layout, the 4M-21 or 4M-7 domain
set of ``bench_convert.py``) into a Hugging Face cache folder as a Hub download would leave it
(``models--<org>--<name>/snapshots/<commit>/`` + ``refs/main``), registers the repo id in the catalogue, and
runs each load in a fresh process with ``HF_HUB_OFFLINE=1`` (no network: the Hub files come from the cache,
so the numbers are conversion and loading, not transfer). A thread samples the process's anonymous memory.

    python benchmarks/bench_load_by_name.py --size L --layout 4m21
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_convert import _status_kib, released_config  # noqa: E402

REPO_ID = "bench/4M-synthetic"
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def write_cached_checkpoint(cache: Path, size: str, layout: str) -> int:
    """The released files of a random-weight checkpoint where ``hf_hub_download`` finds them; returns the file size."""
    import torch
    from safetensors.torch import save_file

    from fourm_hf.ml4m.conversion import config_from_reference
    from fourm_hf.ml4m.reference_export import reference_state_dict
    from fourm_hf.modeling.modeling_fourm import FourMModel

    config_dict = released_config(size, layout)
    with torch.device("meta"):
        model = FourMModel(config_from_reference(config_dict, {}))
    generator = torch.Generator().manual_seed(0)
    state = reference_state_dict(model, config_dict, values=lambda t: torch.randn(t.shape, generator=generator) * 0.02)
    repo = cache / ("models--" + REPO_ID.replace("/", "--"))
    snapshot = repo / "snapshots" / COMMIT
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text(json.dumps(config_dict))
    save_file(state, str(snapshot / "model.safetensors"))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    return (snapshot / "model.safetensors").stat().st_size


def load_and_measure() -> dict:
    """One ``from_pretrained`` by repo id in this process, with its peak anonymous memory."""
    from fourm_hf import FourMModel
    from fourm_hf.ml4m.catalogue import ReleasedModel, register_released_model

    register_released_model(ReleasedModel(REPO_ID, "synthetic"))
    peak_anon, done = [0], threading.Event()

    def sample():
        while not done.is_set():
            peak_anon[0] = max(peak_anon[0], _status_kib("RssAnon"))
            time.sleep(0.005)

    before = _status_kib("RssAnon")
    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    start = time.perf_counter()
    model = FourMModel.from_pretrained(REPO_ID)
    seconds = time.perf_counter() - start
    done.set()
    thread.join()
    return {"seconds": seconds, "peak_anon": peak_anon[0] * 1024, "anon_before": before * 1024,
            "peak_rss": _status_kib("VmHWM") * 1024, "parameters": model.num_parameters()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=["B", "L", "XL"], default="L")
    parser.add_argument("--layout", choices=["4m21", "4m7"], default="4m21")
    parser.add_argument("--workdir", default=None, help="where the cache goes (default: a temp folder)")
    parser.add_argument("--child", choices=["write", "load"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child == "write":
        print(write_cached_checkpoint(Path(os.environ["HF_HUB_CACHE"]), args.size, args.layout))
        return 0
    if args.child == "load":
        print(json.dumps(load_and_measure()))
        return 0
    with tempfile.TemporaryDirectory(dir=args.workdir) as work:
        env = dict(os.environ, HF_HUB_CACHE=str(Path(work) / "hub"), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
        child = [sys.executable, __file__, "--size", args.size, "--layout", args.layout, "--child"]
        file_size = int(subprocess.run(child + ["write"], env=env, check=True, capture_output=True, text=True).stdout)
        loads = []
        for _ in ("first", "second"):
            result = subprocess.run(child + ["load"], env=env, check=True, capture_output=True, text=True)
            loads.append(json.loads(result.stdout.strip().splitlines()[-1]))
    gib = 1024**3
    print(f"FourMModel.from_pretrained(<released repo id>), 4M-{args.layout[2:].upper()} {args.size} layout, "
          f"{loads[0]['parameters']:,} parameters, file {file_size / gib:.2f} GiB")
    print(f"  {'load':<28}{'time':>9}{'peak anon':>12}{'x file':>8}{'peak RSS':>11}")
    for label, measured in zip(("first (convert + cache)", "second (cached safetensors)"), loads):
        print(f"  {label:<28}{measured['seconds']:8.1f}s{measured['peak_anon'] / gib:10.2f} GiB"
              f"{measured['peak_anon'] / file_size:8.2f}{measured['peak_rss'] / gib:8.2f} GiB")
    print(f"  second / first time: {loads[1]['seconds'] / loads[0]['seconds']:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
