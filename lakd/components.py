"""The names of lakd's registered components, without torch: ``lakd.config`` checks a config's names against
these when it loads one (``lakd train --show-config``, sweep planning and reports stay torch-free), and the
modules that build the components take their registries from here (one list each)."""

# lakd.models.registry: model families and the backbones each is built with
MODELS = ("fcn", "pspnet", "deeplabv3", "stdc", "ocrnet")
_DILATED = ("resnet18", "resnet50", "resnet101", "mobilenetv2", "hrnetv2_w18")
COMBINATIONS: dict[str, tuple[str, ...]] = {
    "fcn": _DILATED + ("plaincnn",),
    "pspnet": _DILATED + ("plaincnn",),
    "deeplabv3": _DILATED + ("plaincnn",),
    "stdc": ("stdc1", "stdc2"),
    "ocrnet": _DILATED,
}
# lakd.optim
OPTIMIZERS = ("sgd", "adamw")
IMPLS = ("native", "apex")
# lakd.method.objectives: the teacher's consistency term, the student's distillation term
CONSISTENCY_KINDS = ("cwd", "kl", "mse", "none")
KD_KINDS = ("cwd", "pixel", "none")
# lakd.evaluation.inference
EVAL_MODES = ("whole", "slide", "msflip")
