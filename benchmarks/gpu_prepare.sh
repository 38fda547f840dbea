#!/usr/bin/env bash
# Issue 35, step 1 of 2, here (with the network to PyPI and the mirror): fill .gpu/ (git-ignored, carried) with what
# the device lacks: the pinned pure-Python wheels, Qwen3's tokenizer and a 4B-recipe corpus slice built with it.
#   CYBERSECQWEN_DATA_DIR=../shared/data benchmarks/gpu_prepare.sh
# Then on the device (run tool, carry [".gpu"], timeout_s 420): bash benchmarks/gpu_check.sh
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
data=${CYBERSECQWEN_DATA_DIR:?set CYBERSECQWEN_DATA_DIR to the data mirror}
gpu="$root/.gpu"
rm -rf "$gpu" && mkdir -p "$gpu/wheels"
pin() { sed -n "s/.*\"$1==\([0-9.]*\)\".*/\1/p" "$root/pyproject.toml" | head -1; }
# The image has torch 2.11 + CUDA (NOTES.md); these are pure Python and small. Anything else it lacks, gpu_check.sh names.
"$root/.venv/bin/python" -m pip download --quiet --no-deps --only-binary=:all: -d "$gpu/wheels" \
  "transformers==$(pin transformers)" "peft==$(pin peft)" "trl==$(pin trl)" "liger-kernel==0.8.5" \
  "accelerate==$("$root/.venv/bin/python" -c 'import accelerate; print(accelerate.__version__)')"
cp -r "$data/qwen3-tokenizer" "$gpu/qwen3-tokenizer"
# A slice of the 4B recipe's corpus (400 examples, its 4,096-token limit) tokenized by Qwen3's tokenizer.
sed -e "s#^  tokenizer: null.*#  tokenizer: $gpu/qwen3-tokenizer#" -e "s#^  total: null#  total: 420#" \
  "$root/configs/recipes/cybersecqwen-4b.yaml" > "$gpu/recipe-slice.yaml"
"$root/.venv/bin/python" -m cybersecqwen data build --recipe "$gpu/recipe-slice.yaml" --out "$gpu/corpus-4b" --data-dir "$data"
du -sh "$gpu"/* | sed 's/^/  /'
echo "carry .gpu (limit 64 MiB with the tree): $(du -sm "$gpu" | cut -f1) MiB"
