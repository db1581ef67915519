"""Segmentation heads. Each head's `forward(feats)` takes the backbone's feature list and returns
`(logits, features)`: class logits and the pre-classifier feature map a distiller may use."""
from lakd.models.heads.aspp import ASPPHead
from lakd.models.heads.fcn import FCNHead
from lakd.models.heads.psp import PSPHead

__all__ = ["ASPPHead", "FCNHead", "PSPHead"]
