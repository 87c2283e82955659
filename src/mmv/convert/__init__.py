"""Conversion of the released MMV checkpoints (Haiku/JAX, dill pickles) to this library's format.

``pickle_io`` reads the released files safely and without JAX, Haiku or dill; ``haiku`` maps their Haiku
parameter names onto the PyTorch modules.
"""
from __future__ import annotations

from mmv.convert.pickle_io import CheckpointFormatError as CheckpointFormatError
from mmv.convert.pickle_io import UnsafePickleError as UnsafePickleError
from mmv.convert.pickle_io import load_released_checkpoint as load_released_checkpoint

from mmv.convert.haiku import ConversionError as ConversionError
from mmv.convert.released import arch_from_filename as arch_from_filename
from mmv.convert.released import convert_checkpoint as convert_checkpoint

__all__ = [
    "ConversionError",
    "arch_from_filename",
    "convert_checkpoint",
    "CheckpointFormatError",
    "UnsafePickleError",
    "load_released_checkpoint",
]
