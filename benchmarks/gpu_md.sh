#!/usr/bin/env bash
# Grow the bundled corpus on one GPU for MD_SECONDS: GROUPS build processes side by side (MD_GROUPS), each
# taking its share of the proteins round-robin in stages of STEP_NS (2 replicas each).
# Measured on an H100 (session 2): one OpenMM CUDA context runs 1ENH at ~4,000 ns/day, but 34
# contexts at once share the GPU by time-slicing and gave only ~3,400 ns/day together, so a few
# groups beat one process per protein. Carry .whl (see benchmarks/gpu_session.sh) on the device.
set -u
OUT=${OUT:-/tmp/gpu_out}; mkdir -p "$OUT"; LOG=/tmp/gpu_logs; mkdir -p "$LOG"
# (MD_GROUPS, not GROUPS: bash reserves GROUPS for the user's group ids)
MD_SECONDS=${MD_SECONDS:-240}; GROUPS_N=${MD_GROUPS:-4}; STEP_NS=${STEP_NS:-0.25}; NS=${NS:-3}
T0=$(date +%s)
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl >"$LOG/pip.log" 2>&1
export PYTHONPATH=/tmp/site:$PWD/src:$PWD OMP_NUM_THREADS=1 PYTHONUNBUFFERED=1
LIBS=$(python3 -c "import glob,os,site; print(':'.join(sorted({os.path.dirname(p) for r in site.getsitepackages()+['/tmp/site'] for p in glob.glob(os.path.join(r,'nvidia','**','lib*.so*'),recursive=True)})))")
export LD_LIBRARY_PATH=${LIBS}:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
NAMES=($(python3 -c "from starmd.simulate.corpus import load_manifest; print(' '.join(e.name for e in load_manifest()))"))
PIDS=()
for g in $(seq 0 $((GROUPS_N - 1))); do
    ONLY=(); for i in "${!NAMES[@]}"; do [ $((i % GROUPS_N)) = "$g" ] && ONLY+=(--only "${NAMES[$i]}"); done
    setsid python3 -m starmd.cli.simulate build --out corpus/md --ns "$NS" --step-ns "$STEP_NS" \
        --replicas 2 "${ONLY[@]}" --platform CUDA --threads 1 --workers 2 >"$LOG/md_$g.log" 2>&1 &
    PIDS+=($!)
done
sleep $(( MD_SECONDS - ( $(date +%s) - T0 ) ))
for p in "${PIDS[@]}"; do kill -TERM -- "-$p" 2>/dev/null; done; sleep 3
for p in "${PIDS[@]}"; do kill -KILL -- "-$p" 2>/dev/null; done; sleep 1
python3 benchmarks/settle_corpus.py corpus/md | tee "$OUT/index.csv"
find corpus/md -name "*.lock" -delete
tar czf "$OUT/corpus_md.tgz" corpus/md
tar czf "$OUT/logs.tgz" -C /tmp gpu_logs
echo "done in $(( $(date +%s) - T0 )) s"
