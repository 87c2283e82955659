"""mmv: Self-Supervised MultiModal Versatile Networks (Alayrac et al., NeurIPS 2020) in PyTorch.

>>> import mmv
>>> model = mmv.create_model("mmv_tiny_s3dg").eval()      # or mmv.load("converted_dir")
>>> out = model(video=clips, audio=log_mel, word_ids=ids)  # dict: vid_repr, vid_embd_toaud, ...
"""
from __future__ import annotations

__version__ = "0.1.0"

from .checkpoint import load as load
from .checkpoint import save as save
from .models import MMV as MMV
from .models import MMVConfig as MMVConfig
from .models import create_model as create_model
from .models import deflate as deflate
from .models import list_models as list_models
