"""mmv: Self-Supervised MultiModal Versatile Networks (Alayrac et al., NeurIPS 2020) in PyTorch."""
from __future__ import annotations

__version__ = "0.1.0"
