"""Training MMV: typed configs, the training loop and exactly resumable checkpoints (``mmv train``).

>>> from mmv.train import load_config, train
>>> summary = train(load_config("configs/synthetic_tiny.yaml", ["run.steps=20"]))
"""
from __future__ import annotations

from .config import ConfigError as ConfigError
from .config import TrainConfig as TrainConfig
from .config import load_config as load_config
from .loop import NonFiniteLossError as NonFiniteLossError
from .loop import lr_at as lr_at
from .loop import train as train
from .synthetic import SyntheticClips as SyntheticClips
