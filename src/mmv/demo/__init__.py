"""``mmv demo``: MMV trained and evaluated end to end on the generated demo corpus, on a CPU.

* :class:`DemoConfig` (:mod:`mmv.demo.config`): the corpus, model, training and evaluation settings;
* :func:`run_demo` / :func:`run_compare` (:mod:`mmv.demo.run`): the default run and the Table-1 comparison;
* :mod:`mmv.demo.report` (Markdown/JSON, the comparison table) and :mod:`mmv.demo.plots` (figures).
"""
from .config import VARIANTS as VARIANTS
from .config import DemoConfig as DemoConfig
from .config import Variant as Variant
from .run import run_compare as run_compare
from .run import run_demo as run_demo

__all__ = ["VARIANTS", "DemoConfig", "Variant", "run_compare", "run_demo"]
