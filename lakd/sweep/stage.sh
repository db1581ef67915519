#!/bin/bash
# Train one lakd stage with Slurm: one task per GPU (srun), on every node of the job. Shipped with the package;
# `lakd sweep script` prints its path (`lakd sweep script --out FILE` writes a copy).
#
#   sbatch "$(lakd sweep script)" --stage teacher --config cityscapes run.name=cs-dlv3 run.runs_dir=/shared/runs
#   sbatch -p gpu --nodes=2 --gpus-per-node=4 --ntasks-per-node=4 --time=48:00:00 "$(lakd sweep script)" \
#          --stage student --config cityscapes run.name=cs-dlv3 run.runs_dir=/shared/runs
#
# The arguments go to `lakd train` unchanged, one argument each (--stage teacher|student|baseline, --config
# PRESET|FILE, dotted overrides). The #SBATCH defaults below are overridden by sbatch options or SBATCH_*
# variables; keep --ntasks-per-node equal to --gpus-per-node (on CPU nodes: --gpus-per-node=0 and
# --ntasks-per-node=N). Without -p the cluster's default partition is used.
#
# The batch step is `python -m lakd.sweep.batch`: USR1/USR2 sent to it (`scancel --batch --signal=USR2`,
# `--signal=B:USR2@N`) are passed on to every task, like those Slurm sends to the tasks (`--signal=USR2@N`,
# `scancel --signal=USR2`); the ranks save a checkpoint and exit with 75, and the job is requeued (same id)
# up to LAKD_MAX_REQUEUES (50) times; so is a job that reaches its time limit without such a signal (the batch
# step requeues it when Slurm's SIGTERM comes). A failed attempt (a rank crashed, a node died) is requeued up to
# LAKD_RETRIES (2) times. Every attempt resumes from the newest complete checkpoint of the run directory.
# Environment: LAKD_PYTHON (python with lakd installed; default python3 on PATH), LAKD_RETRIES,
# LAKD_MAX_REQUEUES, LAKD_SRUN_WAIT (seconds the other ranks get once one ended; 120), LAKD_EVENTS (a file
# that gets one JSON line per requeue decision).
#SBATCH --job-name=lakd-stage
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=1
#SBATCH --cpus-per-task=8
#SBATCH --time=24:00:00
#SBATCH --requeue
#SBATCH --signal=USR2@300
#SBATCH --open-mode=append
#SBATCH --output=slurm-%x-%j.out
exec "${LAKD_PYTHON:-python3}" -m lakd.sweep.batch train "$@"
