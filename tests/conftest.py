"""Shared pytest set-up: keep thread counts small (2-core CI) and make runs deterministic."""
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
# DeepSpeed picks its CPU accelerator by itself; saying so silences its detection warning.
os.environ.setdefault("DS_ACCELERATOR", "cpu")
