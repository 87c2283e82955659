"""mmv: Self-Supervised MultiModal Versatile Networks (Alayrac et al., NeurIPS 2020) in PyTorch.

>>> import mmv
>>> model = mmv.create_model("mmv_tiny_s3dg").eval()      # or mmv.load("converted_dir")
>>> out = model(video=clips, audio=log_mel, word_ids=ids)  # dict: vid_repr, vid_embd_toaud, ...
"""
from __future__ import annotations

__version__ = "0.1.0"

import os as _os
import sys as _sys

# NOTE: a forward pass at 32x224x224 allocates gigabytes of fresh activations, and on CPU every new page costs a
# page fault (the CPU allocator keeps no cache): 100 MB take 90 ms to fault in against 15 ms to write. With this
# variable PyTorch backs large CPU tensors with transparent huge pages, 512x fewer faults: TSM-ResNet50 inference
# runs about 1.3x faster (docs/models.md, "Speed"). torch reads it once, at import, so it only takes effect when
# mmv is imported first (the ``mmv`` command always is); set THP_MEM_ALLOC_ENABLE=0 to opt out.
if "torch" not in _sys.modules:
    _os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")

from . import runtime as runtime
from .checkpoint import load as load
from .checkpoint import save as save
from .models import MMV as MMV
from .models import MMVConfig as MMVConfig
from .models import create_model as create_model
from .models import deflate as deflate
from .models import list_models as list_models
