#!/usr/bin/env bash
# A time-boxed batch of plans on a GPU machine: install the carried wheels, run plans, tar the run directories
# into $OUT. Usage: bash benchmarks/device_session.sh SECONDS PLAN[@ray] [PLAN[@ray]...]
# A plan suffixed "@ray" runs through a local Ray instance (`--ray local`); Ray and its
# dependencies travel as wheels in .whl-ray (see docs/gpu-machines.md).
# Runs under .gpu/runs (carried back and forth, so an unfinished run resumes next time).
set -u
budget=$1; shift
deadline=$(( $(date +%s) + budget ))
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
case " $* " in *@ray*)
  # into the image's own environment, so pip resolves Ray's needs against what is installed
  python3 -m pip install -q --no-index --no-cache-dir --find-links .whl-ray ray==2.60.0 || exit 1 ;;
esac
mkdir -p .gpu/runs
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,temperature.gpu,power.draw,utilization.gpu --format=csv | tee -a "$OUT/nvidia-smi.csv"
for spec in "$@"; do
  left=$(( deadline - $(date +%s) ))
  [ "$left" -gt 30 ] || break
  plan=${spec%@ray}
  executor=direct; extra=()
  if [ "$plan" != "$spec" ]; then executor=ray; extra=(--ray local); fi
  unfinished=$(python3 - "$plan" "$executor" <<'PY'
import json, sys, pathlib
for meta in sorted(pathlib.Path(".gpu/runs").glob("*/meta.json")):
    m = json.loads(meta.read_text())
    if (m["plan_name"] == pathlib.Path(sys.argv[1]).stem and m["status"] != "finished"
            and m["device_kind"] == "cuda" and m.get("executor", "direct") == sys.argv[2]):
        print(m["run_id"]); break
PY
)
  echo "== $spec ($executor) $(date -u +%T) ${unfinished:+resuming $unfinished}"
  if [ -n "$unfinished" ]; then
    timeout -s INT "$left" python3 -m runner run "$plan" --resume "$unfinished" --runs-dir .gpu/runs --no-ingest "${extra[@]}"
    if [ $? -eq 2 ]; then  # refused (another GPU or host than the run began on): a new run instead
      left=$(( deadline - $(date +%s) ))
      timeout -s INT "$left" python3 -m runner run "$plan" --runs-dir .gpu/runs --no-ingest "${extra[@]}"
    fi
  else
    timeout -s INT "$left" python3 -m runner run "$plan" --runs-dir .gpu/runs --no-ingest "${extra[@]}"
  fi
done
tar czf "$OUT/runs.tgz" .gpu/runs
