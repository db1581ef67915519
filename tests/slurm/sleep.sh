#!/bin/bash
# a job that only sleeps $1 seconds (the preempting job of tests/slurm/test_sbatch.py)
sleep "${1:-5}"
