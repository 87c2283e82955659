"""mmv: Self-Supervised MultiModal Versatile Networks (Alayrac et al., NeurIPS 2020) in PyTorch.

>>> import mmv
>>> model = mmv.create_model("mmv_tiny_s3dg").eval()      # or mmv.load("converted_dir")
>>> out = model(video=clips, audio=log_mel, word_ids=ids)  # dict: vid_repr, vid_embd_toaud, ...

``import mmv`` imports neither torch nor anything else heavy and changes no process-wide state: each public name
is imported on first use. For the ``mmv`` command's fast CPU settings, call :func:`mmv.runtime.use_fast_cpu_settings`
before ``import torch``.
"""
from __future__ import annotations

import importlib as _importlib
import types as _types
from typing import TYPE_CHECKING as _TYPE_CHECKING
from typing import Any as _Any

__version__ = "0.1.0"

# Public name -> the module that defines it, imported on first access (PEP 562) so that ``import mmv`` stays light
# and leaves the process as it was: torch in particular reads settings such as THP_MEM_ALLOC_ENABLE when imported,
# and a library user decides when that happens.
_LAZY_NAMES = {
    "load": "mmv.checkpoint",
    "save": "mmv.checkpoint",
    "MMV": "mmv.models",
    "MMVConfig": "mmv.models",
    "create_model": "mmv.models",
    "deflate": "mmv.models",
    "list_models": "mmv.models",
    "embed_video": "mmv.embed",
    "embed_audio": "mmv.embed",
    "embed_text": "mmv.embed",
    "embed_image": "mmv.embed",
    "Preprocess": "mmv.preprocess",
}
_LAZY_SUBMODULES = ("runtime",)

__all__ = ["MMV", "MMVConfig", "Preprocess", "__version__", "create_model", "deflate", "embed_audio", "embed_image",
           "embed_text", "embed_video", "list_models", "load", "runtime", "save"]

if _TYPE_CHECKING:  # what the lazy names are, for type checkers and IDEs
    from . import runtime as runtime
    from .checkpoint import load as load
    from .checkpoint import save as save
    from .embed import embed_audio as embed_audio
    from .embed import embed_image as embed_image
    from .embed import embed_text as embed_text
    from .embed import embed_video as embed_video
    from .models import MMV as MMV
    from .models import MMVConfig as MMVConfig
    from .models import create_model as create_model
    from .models import deflate as deflate
    from .models import list_models as list_models
    from .preprocess import Preprocess as Preprocess


def __getattr__(name: str) -> _Any:
    if name in _LAZY_SUBMODULES:
        return _importlib.import_module(f"{__name__}.{name}")
    module_name = _LAZY_NAMES.get(name)
    if module_name is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    try:
        module = _importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if err.name != module_name:  # a dependency of that module is missing: that error says which
            raise
        raise AttributeError(f"module {__name__!r} has no attribute {name!r} ({module_name} is missing)") from err
    value = getattr(module, name)
    globals()[name] = value  # later accesses skip this function
    return value


def __dir__() -> list[str]:
    # The public names and the submodules imported so far, not the helpers above.
    submodules = (n for n, v in globals().items() if isinstance(v, _types.ModuleType) and not n.startswith("_"))
    return sorted({*__all__, *submodules})
