"""The LAD method: label noising (`label_noise`) and the teacher / student objectives (`objectives`)."""
from lakd.method.label_noise import LabelNoiser, check_labels, fixed_codes
from lakd.method.objectives import LossOutput, StudentObjective, TeacherObjective

__all__ = ["LabelNoiser", "check_labels", "fixed_codes", "LossOutput", "StudentObjective", "TeacherObjective"]
