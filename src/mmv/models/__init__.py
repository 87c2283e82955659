"""MMV models: backbones (one file per family), projection heads, embedding graphs, created by name."""
from ._registry import create_backbone as create_backbone
from ._registry import create_model as create_model
from ._registry import list_backbones as list_backbones
from ._registry import list_models as list_models
from .heads import HeadConfig as HeadConfig
from .mmv import MMV as MMV
from .mmv import MMVConfig as MMVConfig
from .mmv import deflate as deflate
