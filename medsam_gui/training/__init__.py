"""Fine-tuning on reviewed annotations: samples from workspaces, split by volume, trainer."""

from medsam_gui.training.dataset import (
    DataCounts,
    Sample,
    check_enough,
    collect_samples,
    count,
    split_by_volume,
)
from medsam_gui.training.finetune import TrainConfig, TrainResult, mode_warning, plan, train

__all__ = [
    "DataCounts", "Sample", "TrainConfig", "TrainResult", "check_enough", "collect_samples",
    "count", "mode_warning", "plan", "split_by_volume", "train",
]
