"""Training: TOML recipes, the papers' losses and schedules, resumable and distributed runs."""

from anyrestore.training.config import Config, load_config
from anyrestore.training.export import export_checkpoint
from anyrestore.training.loop import TrainResult, train

__all__ = ["Config", "TrainResult", "export_checkpoint", "load_config", "train"]
