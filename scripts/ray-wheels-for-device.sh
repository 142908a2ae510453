#!/usr/bin/env bash
# Ray for a GPU machine that cannot reach a package registry: Ray 2.60 and what it
# needs, as Python 3.12 x86-64 wheels in .whl-ray/ (git-ignored), for
# `benchmarks/device_session.sh SECONDS PLAN@ray` to install there.
# Ray's wheel is 79 MB and a device call carries at most 64 MiB, so the parts a runner task
# never imports (the Java jars, RLlib, Serve, Tune, Train, Data, LLM and the dashboard's web
# client) are left out of a repacked wheel (41 MB); its RECORD is trimmed to match.
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.whl-ray/' .git/info/exclude 2>/dev/null || echo /.whl-ray/ >> .git/info/exclude
download=$(mktemp -d)
python3 -m pip download -q --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  --platform manylinux_2_5_x86_64 --platform manylinux1_x86_64 -d "$download" ray==2.60.0
rm -rf .whl-ray && mkdir .whl-ray
find "$download" -name '*.whl' ! -name 'ray-*' -exec cp {} .whl-ray/ \;
python3 - "$download"/ray-*.whl .whl-ray <<'PY'
import pathlib, sys, zipfile
src, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
drop = ("ray/jars/", "ray/rllib/", "ray/dashboard/client/build/", "ray/llm/", "ray/serve/",
        "ray/tune/", "ray/train/", "ray/data/")
with zipfile.ZipFile(src) as zin, zipfile.ZipFile(out / src.name, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zout:
    for info in zin.infolist():
        if info.filename.startswith(drop):
            continue
        data = zin.read(info.filename)
        if info.filename.endswith(".dist-info/RECORD"):
            data = ("\n".join(l for l in data.decode().splitlines() if not l.startswith(drop)) + "\n").encode()
        zout.writestr(info, data, compress_type=zipfile.ZIP_DEFLATED, compresslevel=9)
PY
rm -rf "$download"
du -sh .whl-ray
