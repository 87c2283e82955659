"""Training MMV: typed configs, the training loop and exactly resumable checkpoints (``mmv train``)."""
from __future__ import annotations

from .config import TrainConfig as TrainConfig
from .config import load_config as load_config
