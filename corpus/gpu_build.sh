#!/usr/bin/env bash
# Grow the bundled corpus (or the large one) on a CUDA GPU, resuming from the committed states.
#
#   corpus/gpu_build.sh                      # bundled corpus, 2 replicas x 2 ns, 4 replicas at once
#   NS=5 WORKERS=8 corpus/gpu_build.sh
#   MANIFEST=src/starmd/assets/corpus/manifest_large.csv PROTOCOL=explicit NS=100 REPLICAS=3 \
#       STEP_NS=10 EQUILIBRATE_PS=1000 OUT=corpus_large/md corpus/gpu_build.sh     # ATLAS-like, not run on CPU machines
#
# Small implicit-solvent proteins leave a GPU mostly idle, so several replicas share it
# (--workers); each replica keeps its own portable XML state, so CPU and GPU runs can alternate.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
"$PY" -m starmd.simulate.cli build \
    --manifest "${MANIFEST:-src/starmd/assets/corpus/manifest.csv}" \
    --out "${OUT:-corpus/md}" \
    --protocol "${PROTOCOL:-implicit}" \
    --ns "${NS:-2.0}" --step-ns "${STEP_NS:-0.5}" --replicas "${REPLICAS:-2}" \
    --equilibrate-ps "${EQUILIBRATE_PS:-20}" --platform CUDA --workers "${WORKERS:-4}" 2>&1 | tee -a "${LOG:-corpus/gpu_build.log}"
