#!/usr/bin/env bash
# Assemble a Hugging Face Space folder from this checkout: examples/space/ (app.py, README.md with the
# Space's settings, requirements.txt) and the package source next to it under fourm-hf/ (setup.py,
# README.md, src/ with the bundled checkpoint), which requirements.txt installs as ./fourm-hf[web].
# Upload the folder as a Gradio Space, e.g. hf upload USER/SPACE NEW_FOLDER --repo-type space
# (the upload stores the .safetensors files with Git LFS as Spaces require).
set -euo pipefail
out="${1:?usage: scripts/make_space.sh NEW_FOLDER}"
root="$(cd "$(dirname "$0")/.." && pwd)"
if [ -e "$out" ]; then
  echo "make_space: $out already exists; choose a new folder" >&2
  exit 1
fi
mkdir -p "$out/fourm-hf"
cp "$root/examples/space/app.py" "$root/examples/space/README.md" "$root/examples/space/requirements.txt" "$out/"
cp "$root/setup.py" "$root/README.md" "$out/fourm-hf/"
(cd "$root" && tar --exclude='__pycache__' --exclude='*.pyc' --exclude='*.egg-info' -cf - src) | tar -xf - -C "$out/fourm-hf"
echo "make_space: wrote $out (app.py, README.md, requirements.txt, fourm-hf/)"
