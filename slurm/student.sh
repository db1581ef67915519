#!/bin/bash
# `lakd train --stage student` with Slurm: the package's stage batch script (`lakd sweep script`, documented there
# and in slurm/README.md) with --stage student.
# LAKD_STAGE=baseline trains a baseline instead.
#   sbatch slurm/student.sh --config cityscapes run.name=cs-dlv3 run.runs_dir=/shared/runs   # teacher: <run>/teacher/
#SBATCH --job-name=lakd-student
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=1
#SBATCH --cpus-per-task=8
#SBATCH --time=24:00:00
#SBATCH --requeue
#SBATCH --signal=USR2@300
#SBATCH --open-mode=append
#SBATCH --output=slurm-%x-%j.out
exec "${LAKD_PYTHON:-python3}" -m lakd.sweep.batch train --stage "${LAKD_STAGE:-student}" "$@"
