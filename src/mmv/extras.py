"""Optional dependencies: the extras of ``pip install 'mmv[...]'`` and the error that names the one to install.

``pip install mmv`` installs what loading, converting and embedding need (torch, numpy, safetensors, pyyaml, tqdm,
av, pillow; pooch, requests, platformdirs and filelock for the released models by name). The rest comes with an extra (``pyproject.toml``):

=========  ===============================  ==============================================================
extra      packages                         needed by
=========  ===============================  ==============================================================
eval       scikit-learn, scipy              linear probes and classifiers (``mmv eval``)
train      tensorboard                      TensorBoard logging of ``mmv train`` (``run.tensorboard``)
shards     webdataset                       WebDataset shards (``mmv prepare``, training from shards)
demo       matplotlib, scikit-learn, scipy  ``mmv demo`` and ``mmv demo-data``
parquet    pyarrow                          ``mmv embed --format parquet``
asr        pocketsphinx, scipy              ``mmv transcribe``
word2vec   gensim                           reading word2vec files with gensim
search     faiss-cpu                        approximate search over large libraries (``mmv search``)
all        all of the above
=========  ===============================  ==============================================================

Library code imports an optional package with :func:`require`, where it needs it, so that a missing one ends in a
:class:`MissingDependencyError` whose one-line message names the extra; the ``mmv`` command prints that line.
"""
from __future__ import annotations

import importlib
import types

__all__ = ["MissingDependencyError", "require"]

# Import name -> the name pip installs it under, where the two differ.
PIP_NAMES = {"sklearn": "scikit-learn", "faiss": "faiss-cpu"}


class MissingDependencyError(ImportError):
    """An optional dependency is not installed; the message says which extra installs it."""


def require(module: str, extra: str, purpose: str) -> types.ModuleType:
    """Imports and returns ``module``, an optional dependency that ``pip install 'mmv[EXTRA]'`` installs.

    Args:
        module: The module to import, e.g. ``"sklearn.svm"``.
        extra: The extra of ``pyproject.toml`` that installs it, e.g. ``"eval"``.
        purpose: What needs it, as the subject of the message, e.g. ``"the demo"``.

    Raises:
        MissingDependencyError: The module, or a package it imports, is not installed. Its message is one line,
            e.g. ``the demo needs matplotlib, which is not installed: pip install 'mmv[demo]'``.
    """
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as err:
        top = module.partition(".")[0]
        package = PIP_NAMES.get(top, top)
        missing = (err.name or module).partition(".")[0]
        if missing == top:
            reason = "which is not installed"
        else:  # installed, but without a package of its own (a broken install): the extra installs that one too
            reason = f"which cannot be imported without {PIP_NAMES.get(missing, missing)}"
        raise MissingDependencyError(f"{purpose} needs {package}, {reason}: pip install 'mmv[{extra}]'",
                                     name=top) from err
