"""lakd: Label-Assisted Distillation (LAD) for semantic segmentation at HPC scale."""

__version__ = "0.1.0"

# Train-id value of pixels that carry no label, everywhere in lakd (shards, loaders, losses, metrics).
IGNORE_INDEX = 255
