#!/bin/bash
# Multi-node, multi-GPU training of the paper-sized denoiser with Lightning DDP under SLURM.
# Lightning reads SLURM's variables (SLURM_NTASKS, SLURM_PROCID, ...) itself: launch one task
# per GPU with srun, and give --devices / --num-nodes matching the allocation.
#
#   sbatch examples/slurm_train.sh data/atlas runs/base
#
#SBATCH --job-name=starmd-train
#SBATCH --nodes=4
#SBATCH --ntasks-per-node=8
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=8
#SBATCH --time=48:00:00
#SBATCH --output=%x-%j.log
set -euo pipefail
DATA=${1:-data/atlas}
RUN=${2:-runs/base}
# Resume from the run's last checkpoint when the job is requeued (exact: optimizer, EMA, step).
RESUME=()
[ -f "$RUN/checkpoints/last.ckpt" ] && RESUME=(--resume last)
srun starmd train "$DATA" -o "$RUN" --config configs/base_gpu.yaml \
    --devices "$SLURM_NTASKS_PER_NODE" --num-nodes "$SLURM_NNODES" \
    --strategy ddp --precision bf16-mixed "${RESUME[@]}"
# Sharded parameters/optimizer state for models too large for one GPU: --strategy fsdp
