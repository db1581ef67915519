#!/bin/bash
# Train the label-assisted TEACHER stage of LAD with Slurm: one task per GPU (srun), every node of the job.
#
#   sbatch slurm/teacher.sh --config cityscapes run.name=cs-dlv3 [key=value ...]
#   sbatch --nodes=2 --gpus-per-node=8 --ntasks-per-node=8 --time=48:00:00 slurm/teacher.sh --config my.yaml
#
# Arguments after the script go to `lakd train --stage teacher` unchanged (preset or config file + dotted
# overrides); #SBATCH defaults below are overridden by sbatch options or SBATCH_* variables (SBATCH_PARTITION,
# SBATCH_TIMELIMIT, ...). Keep --ntasks-per-node equal to --gpus-per-node (one process per GPU); on CPU nodes
# use --gpus-per-node=0 and --ntasks-per-node=N.
#
# Preemption / time limit: Slurm sends USR2 300 s before the limit (--signal); every rank saves a checkpoint
# at the next step boundary and exits with lakd's "requeue" status (75), and this script requeues the job
# (same job id). A failed attempt (a rank crashed, a node died: srun --wait ends the others) is requeued up to
# LAKD_RETRIES times. Every attempt resumes from the newest complete checkpoint of the shared run directory
# <run.runs_dir>/<run.name>/teacher/. The log (--output) is appended to across attempts.
#
# Environment: LAKD_PYTHON (python with lakd installed; default python3 from PATH), LAKD_RETRIES (2),
# LAKD_MAX_REQUEUES (50), LAKD_SRUN_WAIT (seconds the other ranks get once one ended; 120).
#SBATCH --job-name=lakd-teacher
#SBATCH --partition=gpu
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=4
#SBATCH --gpus-per-node=4
#SBATCH --cpus-per-task=8
#SBATCH --time=24:00:00
#SBATCH --requeue
#SBATCH --signal=USR2@300
#SBATCH --open-mode=append
#SBATCH --output=slurm-%x-%j.out
set -uo pipefail
stage=teacher
py=${LAKD_PYTHON:-python3}
# sbatch exports the submitting shell's environment: launcher variables left there (a torchrun or an
# in-process run) would make every task think it is rank 0 of 1. Inside the job, Slurm is the launcher.
unset RANK LOCAL_RANK WORLD_SIZE LOCAL_WORLD_SIZE GROUP_RANK MASTER_ADDR MASTER_PORT
echo "lakd: attempt $(( ${SLURM_RESTART_COUNT:-0} + 1 )) of job ${SLURM_JOB_ID:-?}: $stage stage, nodes ${SLURM_JOB_NODELIST:-?}, $(date -Is)"
srun --kill-on-bad-exit=0 --wait="${LAKD_SRUN_WAIT:-120}" "$py" -m lakd.cli train --stage "$stage" "$@"
rc=$?
"$py" -m lakd.sweep.requeue --rc "$rc" --retries "${LAKD_RETRIES:-2}" --max-requeues "${LAKD_MAX_REQUEUES:-50}"
