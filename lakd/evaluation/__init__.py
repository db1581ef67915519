"""Metrics (confusion matrix, mIoU), inference modes and the evaluation loop."""
from lakd.evaluation.evaluate import evaluate, label_input_fn
from lakd.evaluation.inference import predict
from lakd.evaluation.metrics import ConfusionMatrix, metrics_from_confusion

__all__ = ["ConfusionMatrix", "metrics_from_confusion", "predict", "evaluate", "label_input_fn"]
