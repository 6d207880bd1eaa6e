#!/usr/bin/env bash
# One prepared GPU session (about 9 minutes on one H100/H200), in order:
#   1. install the carried wheels (OpenMM + CUDA plugin, mdtraj, zarr, ...) into /tmp/site;
#   2. grow the bundled corpus on CUDA for MD_SECONDS (every protein in parallel, from the
#      committed portable states), while benchmarks/cuda_check.py checks the model on CUDA;
#   3. settle the corpus (cut every XTC back to its last saved chunk) and pack it;
#   4. prepare it and train the bundled "small" model on the GPU for TRAIN_TIME;
#   5. starmd bench on CUDA (speed vs OpenMM-CUDA, scaling, training throughput).
# Outputs (at most 8 files) go to $OUT. Locally (no GPU): LOCAL=1 MD_SECONDS=20 ... for a smoke run.
# The device image has Python 3.12 + torch but no OpenMM/mdtraj/zarr: fetch wheels into the
# git-ignored .whl/ first (and carry .whl), as done in session 2:
#   P="--no-deps --only-binary=:all: --python-version 3.12 --implementation cp -d .whl
#      --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64"
#   pip download $P openmm==8.4.0b0 openmm-cuda-13==8.4.0b0 mdtraj==1.11.1.post2 zarr==3.1.6 \
#       numcodecs==0.16.6 donfig==0.8.1.post1 google-crc32c==1.9.0 typer==0.29.2 rich==15.0.0 \
#       pydantic==2.14.4 pydantic-core==2.50.5 annotated-types typing-inspection typing_extensions
#   .venv/bin/pip wheel --no-deps -w .whl pdbfixer==1.12.0        # sdist only on PyPI
set -u
OUT=${OUT:-/tmp/gpu_out}
mkdir -p "$OUT"
LOG=/tmp/gpu_logs
mkdir -p "$LOG"
MD_SECONDS=${MD_SECONDS:-270}
TRAIN_TIME=${TRAIN_TIME:-00:00:02:00}
BENCH_SECONDS=${BENCH_SECONDS:-120}
PLATFORM=${PLATFORM:-CUDA}
DEVICE=${DEVICE:-cuda}
T0=$(date +%s)
stamp() { echo "[$(( $(date +%s) - T0 )) s] $*" | tee -a "$OUT/session.log"; }

if [ "${LOCAL:-0}" = 1 ]; then
    PY=${PY:-.venv/bin/python}
    export PYTHONPATH=$PWD/src:$PWD
else
    PY=python3
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl >"$LOG/pip.log" 2>&1 || { stamp "wheel install failed"; tail -5 "$LOG/pip.log"; }
    export PYTHONPATH=/tmp/site:$PWD/src:$PWD
    # CUDA 13 runtime libraries of the image's nvidia-* wheels, for OpenMM's CUDA plugin
    LIBS=$(python3 - <<'EOF'
import glob, os, site
dirs = set()
for root in site.getsitepackages() + ["/tmp/site"]:
    for lib in glob.glob(os.path.join(root, "nvidia", "**", "lib*.so*"), recursive=True):
        dirs.add(os.path.dirname(lib))
print(":".join(sorted(dirs)))
EOF
)
    export LD_LIBRARY_PATH=${LIBS}:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee -a "$OUT/session.log"
fi
export OMP_NUM_THREADS=1 PYTHONUNBUFFERED=1
stamp "python: $($PY -c 'import sys, torch; print(sys.version.split()[0], torch.__version__, torch.cuda.is_available())')"
$PY - <<'EOF' 2>&1 | tee -a "$OUT/session.log"
import openmm
names = [openmm.Platform.getPlatform(i).getName() for i in range(openmm.Platform.getNumPlatforms())]
print("openmm", openmm.__version__, "platforms:", names)
for failure in openmm.Platform.getPluginLoadFailures():
    print("plugin load failure:", failure.splitlines()[0][:300])
EOF
if ! $PY -c "import openmm, sys; sys.exit(0 if '$PLATFORM' in [openmm.Platform.getPlatform(i).getName() for i in range(openmm.Platform.getNumPlatforms())] else 1)"; then
    stamp "OpenMM platform $PLATFORM unavailable: MD on CPU cores instead"
    PLATFORM=CPU
fi

# 2. corpus MD: one process per protein (2 replicas each), all at once
stamp "MD start ($PLATFORM, ${MD_SECONDS} s)"
NAMES=$($PY -c "from starmd.simulate.corpus import load_manifest; print(' '.join(e.name for e in load_manifest()))")
GROUPS_=()
for name in $NAMES; do
    # own session + process group: the replica worker processes are killed with it
    setsid $PY -m starmd.cli.simulate build --out corpus/md --ns 20 --step-ns 20 --replicas 2 \
        --only "$name" --platform "$PLATFORM" --threads 1 --workers 2 >"$LOG/md_$name.log" 2>&1 &
    GROUPS_+=($!)
done
sleep 5
if [ "$DEVICE" = cuda ]; then
    $PY benchmarks/cuda_check.py --out "$OUT/cuda_check.json" >"$LOG/cuda_check.log" 2>&1
    stamp "cuda_check rc=$? all_ok=$(grep -o '"all_ok": [a-z]*' "$OUT/cuda_check.json" 2>/dev/null)"
fi
sleep $(( MD_SECONDS - ( $(date +%s) - T0 ) > 0 ? MD_SECONDS - ( $(date +%s) - T0 ) : 1 ))
for g in "${GROUPS_[@]}"; do kill -TERM -- "-$g" 2>/dev/null; done
sleep 3
for g in "${GROUPS_[@]}"; do kill -KILL -- "-$g" 2>/dev/null; done
sleep 1
stamp "MD processes left: $(ps -eo pgid= | grep -c -w -F "$(printf '%s\n' "${GROUPS_[@]}")")"
stamp "MD stopped"
grep -h "ns/day" "$LOG"/md_*.log | tail -40 > "$LOG/md_tail.txt"

# 3. settle: cut each XTC back to the bytes its progress record vouches for, refresh metadata
$PY benchmarks/settle_corpus.py corpus/md 2>&1 | tee -a "$OUT/session.log"
find corpus/md -name "*.lock" -delete
tar czf "$OUT/corpus_md.tgz" corpus/md
stamp "corpus packed: $(du -h "$OUT/corpus_md.tgz" | cut -f1)"

# 4. prepare + train on the GPU
rm -rf /tmp/data /tmp/run
$PY -m starmd.cli prepare corpus/md -o /tmp/data --split-file src/starmd/assets/corpus/manifest.csv >"$LOG/prepare.log" 2>&1 \
    || $PY -m starmd.cli prepare corpus/md -o /tmp/data >>"$LOG/prepare.log" 2>&1
stamp "prepare rc=$? $(tail -1 "$LOG/prepare.log")"
TRAIN_ARGS=(--config configs/small_gpu.yaml --max-time "$TRAIN_TIME")
[ "$DEVICE" = cuda ] || TRAIN_ARGS+=(--accelerator cpu --set data.num_workers=0 --set data.batch_size=4 --set data.samples_per_epoch=16 --set data.val_samples=8)
$PY -m starmd.cli train /tmp/data -o /tmp/run "${TRAIN_ARGS[@]}" >"$LOG/train.log" 2>&1
stamp "train rc=$?"
cp /tmp/run/model.safetensors "$OUT/model.safetensors" 2>/dev/null
tar czf "$OUT/train_run.tgz" -C /tmp run/config.yaml run/logs 2>/dev/null

# 5. bench on the device with the model just trained
timeout "$BENCH_SECONDS" $PY -m starmd.cli bench -o /tmp/bench --device "$DEVICE" \
    --model /tmp/run/model.safetensors --sections speed,scaling,train >"$LOG/bench.log" 2>&1
stamp "bench rc=$?"
cp /tmp/bench/bench.md /tmp/bench/bench.json "$OUT/" 2>/dev/null
tar czf "$OUT/logs.tgz" -C /tmp gpu_logs
stamp "done"
