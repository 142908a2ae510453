#!/usr/bin/env bash
# One GPU-machine session: install the carried wheels, run plans, tar the run directories
# into $OUT. Usage: bash benchmarks/device_session.sh SECONDS PLAN [PLAN...]
# Runs under .gpu/runs (carried back and forth, so an unfinished run resumes next time).
set -u
budget=$1; shift
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
mkdir -p .gpu/runs
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,temperature.gpu,power.draw,utilization.gpu --format=csv | tee "$OUT/nvidia-smi.csv"
deadline=$(( $(date +%s) + budget ))
for plan in "$@"; do
  left=$(( deadline - $(date +%s) ))
  [ "$left" -gt 30 ] || break
  unfinished=$(python3 - "$plan" <<'PY'
import json, sys, pathlib
for meta in sorted(pathlib.Path(".gpu/runs").glob("*/meta.json")):
    m = json.loads(meta.read_text())
    if m["plan_name"] == pathlib.Path(sys.argv[1]).stem and m["status"] != "finished" and m["device_kind"] == "cuda":
        print(m["run_id"]); break
PY
)
  if [ -n "$unfinished" ]; then
    timeout -s INT "$left" python3 -m runner run "$plan" --resume "$unfinished" --runs-dir .gpu/runs --no-ingest
  else
    timeout -s INT "$left" python3 -m runner run "$plan" --runs-dir .gpu/runs --no-ingest
  fi
done
tar czf "$OUT/runs.tgz" .gpu/runs
