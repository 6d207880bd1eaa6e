#!/bin/bash
# Reference MD for a list of proteins with a SLURM job array (--shard i/n as in
# slurm_generate_array.sh). Each protein goes to OUT/NAME/ in the ATLAS layout; resubmitting a
# task continues every replica from its last saved state.
#
#   sbatch --array=0-31 examples/slurm_simulate_array.sh src/starmd/assets/corpus/manifest_large.csv md/
#
#SBATCH --job-name=starmd-md
#SBATCH --gpus=1
#SBATCH --cpus-per-task=2
#SBATCH --time=24:00:00
#SBATCH --output=%x-%A_%a.log
set -euo pipefail
LIST=${1:?CSV (name,structure) or folder of structures}
OUT=${2:?output folder}
starmd simulate "$LIST" -o "$OUT" --shard "${SLURM_ARRAY_TASK_ID}/${SLURM_ARRAY_TASK_COUNT}" \
    --protocol explicit --ns 100 --replicas 3 --platform CUDA
