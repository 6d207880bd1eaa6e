#!/bin/bash
# Generate trajectories for a list of proteins with a SLURM job array: task i of n takes the
# proteins at positions i, i+n, i+2n, ... of the list (--shard i/n), so the array covers the
# list exactly once. A rerun of a task continues its interrupted trajectories (--resume).
#
#   proteins.csv:  name,structure
#                     16pk_A,structures/16pk_A.pdb
#                     ...
#   sbatch --array=0-15 examples/slurm_generate_array.sh proteins.csv gen/
#
#SBATCH --job-name=starmd-generate
#SBATCH --gpus=1
#SBATCH --cpus-per-task=4
#SBATCH --time=04:00:00
#SBATCH --output=%x-%A_%a.log
set -euo pipefail
LIST=${1:?CSV (name,structure) or folder of structures}
OUT=${2:?output folder}
starmd generate "$LIST" -o "$OUT" --shard "${SLURM_ARRAY_TASK_ID}/${SLURM_ARRAY_TASK_COUNT}" \
    --frames 1000 --replicas 3 --device cuda --resume
