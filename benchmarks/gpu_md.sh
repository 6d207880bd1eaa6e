#!/usr/bin/env bash
# Grow the bundled corpus on one GPU for MD_SECONDS (counted from the start of this script).
# HELDOUT_GROUPS build processes take the validation + test proteins (target HELDOUT_NS per
# replica), TRAIN_GROUPS processes the training proteins (target TRAIN_NS), each in round-robin
# stages of STEP_NS; every process runs its 2 replicas side by side (2 CUDA contexts).
# The GPU is time-sliced between contexts, so the held-out share of the throughput is about
# HELDOUT_GROUPS / (HELDOUT_GROUPS + TRAIN_GROUPS).
# Measured on an H100 (session 2): one OpenMM CUDA context runs 1ENH (implicit solvent) at
# ~4,000 ns/day, 34 contexts at once only ~3,400 ns/day together.
# Outputs under $OUT (the device tool returns at most 8 files of 16 MiB): one tarball of protein
# folders per group (md_<group>.tgz), index.csv, logs.tgz.
# The image has Python 3.12 + torch but no OpenMM/mdtraj: carry wheels in the git-ignored .whl/
# (run's carry [".whl"]). Session 21 (H100, 18.70 ns in 525 s) fetched them with
#   P="--no-deps --only-binary=:all: --python-version 3.12 --implementation cp -d .whl
#      --platform manylinux_2_34_x86_64 --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64
#      --platform manylinux2014_x86_64"
#   pip download $P openmm==8.6.1 openmm-cuda-13==8.6.1 mdtraj==1.11.1.post2 typer==0.29.2 \
#       rich==15.0.0 pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 \
#       typing-inspection==0.4.5 typing_extensions==4.16.0 annotated-doc==0.0.7 shellingham==1.5.4 \
#       markdown-it-py==4.3.0 mdurl==0.1.2 Pygments==2.21.0 pyparsing
#   .venv/bin/pip wheel --no-deps -w .whl pdbfixer==1.12.0        # sdist only on PyPI
# (OpenMM 8.6.1 has manylinux_2_34 wheels only.) Working tree + carried paths must stay under
# 64 MiB: move the three bundled .safetensors files (20 MB; MD does not need them) out of the
# tree for the call and back afterwards.
# Locally (CPU platform, smoke test): LOCAL=1 PLATFORM=CPU MD_SECONDS=30 bash benchmarks/gpu_md.sh
set -u
OUT=${OUT:-/tmp/gpu_out}; mkdir -p "$OUT"; LOG=/tmp/gpu_logs; mkdir -p "$LOG"
MD_SECONDS=${MD_SECONDS:-240}; STEP_NS=${STEP_NS:-0.25}; PLATFORM=${PLATFORM:-CUDA}
HELDOUT_GROUPS=${HELDOUT_GROUPS:-3}; TRAIN_GROUPS=${TRAIN_GROUPS:-3}
HELDOUT_NS=${HELDOUT_NS:-2.0}; TRAIN_NS=${TRAIN_NS:-1.0}
T0=$(date +%s)
if [ "${LOCAL:-0}" = 1 ]; then
    PY=${PY:-.venv/bin/python}
    export PYTHONPATH=$PWD/src:$PWD
else
    PY=python3
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl >"$LOG/pip.log" 2>&1 || tail -5 "$LOG/pip.log"
    export PYTHONPATH=/tmp/site:$PWD/src:$PWD
    LIBS=$(python3 -c "import glob,os,site; print(':'.join(sorted({os.path.dirname(p) for r in site.getsitepackages()+['/tmp/site'] for p in glob.glob(os.path.join(r,'nvidia','**','lib*.so*'),recursive=True)})))")
    export LD_LIBRARY_PATH=${LIBS}:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
fi
export OMP_NUM_THREADS=1 PYTHONUNBUFFERED=1
$PY -c "
import openmm
print('openmm', openmm.__version__, [openmm.Platform.getPlatform(i).getName() for i in range(openmm.Platform.getNumPlatforms())])
for f in openmm.Platform.getPluginLoadFailures(): print('plugin load failure:', f.splitlines()[0][:300])"
if ! $PY -c "import openmm, sys; sys.exit('$PLATFORM' not in [openmm.Platform.getPlatform(i).getName() for i in range(openmm.Platform.getNumPlatforms())])"; then
    echo "OpenMM platform $PLATFORM unavailable: CPU platform, one process per core"
    PLATFORM=CPU; N=$(nproc); HELDOUT_GROUPS=$(( N / 4 )); TRAIN_GROUPS=$(( N / 2 - N / 4 ))
fi
# "name split" per line; held-out (val + test) proteins to the first HELDOUT_GROUPS groups
mapfile -t HELD < <($PY -c "from starmd.simulate.corpus import load_manifest; print('\n'.join(e.name for e in load_manifest() if e.split != 'train'))")
mapfile -t TRAIN < <($PY -c "from starmd.simulate.corpus import load_manifest; print('\n'.join(e.name for e in load_manifest() if e.split == 'train'))")
PIDS=(); GROUP_NAMES=()
launch() {  # group-id target-ns names...
    local g=$1 ns=$2; shift 2
    local only=(); for n in "$@"; do only+=(--only "$n"); done
    GROUP_NAMES+=("$g:$*")
    # one corpus folder per group (a build locks its folder): move the proteins there
    mkdir -p "corpus/groups/$g"; for n in "$@"; do mv "corpus/md/$n" "corpus/groups/$g/"; done
    setsid $PY -m starmd.simulate.cli build --out "corpus/groups/$g" --ns "$ns" --step-ns "$STEP_NS" \
        --split-ns "val=$ns" --split-ns "test=$ns" --replicas 2 "${only[@]}" \
        --platform "$PLATFORM" --threads 1 --workers 2 >"$LOG/md_$g.log" 2>&1 &
    PIDS+=($!)
}
for g in $(seq 0 $((HELDOUT_GROUPS - 1))); do
    names=(); for i in "${!HELD[@]}"; do [ $((i % HELDOUT_GROUPS)) = "$g" ] && names+=("${HELD[$i]}"); done
    [ ${#names[@]} -gt 0 ] && launch "h$g" "$HELDOUT_NS" "${names[@]}"
done
for g in $(seq 0 $((TRAIN_GROUPS - 1))); do
    names=(); for i in "${!TRAIN[@]}"; do [ $((i % TRAIN_GROUPS)) = "$g" ] && names+=("${TRAIN[$i]}"); done
    [ ${#names[@]} -gt 0 ] && launch "t$g" "$TRAIN_NS" "${names[@]}"
done
printf '%s\n' "${GROUP_NAMES[@]}"
LEFT=$(( MD_SECONDS - ( $(date +%s) - T0 ) )); [ "$LEFT" -gt 0 ] && sleep "$LEFT"
for p in "${PIDS[@]}"; do kill -TERM -- "-$p" 2>/dev/null; done; sleep 3
for p in "${PIDS[@]}"; do kill -KILL -- "-$p" 2>/dev/null; done; sleep 1
for entry in "${GROUP_NAMES[@]}"; do
    g=${entry%%:*}; names=(${entry#*:})
    find "corpus/groups/$g" -name "*.lock" -delete
    for n in "${names[@]}"; do mv "corpus/groups/$g/$n" corpus/md/; done
done
$PY benchmarks/settle_corpus.py corpus/md > "$OUT/index.csv"
for entry in "${GROUP_NAMES[@]}"; do
    g=${entry%%:*}; names=(${entry#*:})
    tar czf "$OUT/md_$g.tgz" -C corpus/md "${names[@]}"
done
tar czf "$OUT/logs.tgz" -C /tmp gpu_logs
grep -h "ns/day" "$LOG"/md_*.log | tail -n 40
echo "done in $(( $(date +%s) - T0 )) s"
