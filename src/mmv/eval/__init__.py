"""Downstream evaluation of frozen MMV models: the paper's protocols, feature extraction and deflation.

Modules (one protocol each; every function is usable in-process and by ``mmv eval``):

* :mod:`mmv.eval.features`: windows of videos, audio, text and images through a model (``embed_videos`` ...).
* :mod:`mmv.eval.linear_probe`: video linear probe on UCF101, HMDB51 and folder datasets.
* :mod:`mmv.eval.audio_probe`: audio linear probe on ESC-50 (5 folds) and folder datasets.
* :mod:`mmv.eval.retrieval`: zero-shot text→video, text→audio and audio→video retrieval (MSR-VTT, YouCook2).
* :mod:`mmv.eval.deflation`, :mod:`mmv.eval.images`: deflation with trained BN, image probes and VOC 2007 mAP.
* :mod:`mmv.eval.embed`: ``mmv embed`` output (resumable parts with an index).
* :mod:`mmv.eval.metrics`, :mod:`mmv.eval.classifiers`, :mod:`mmv.eval.datasets`, :mod:`mmv.eval.io`: shared parts.

The demo corpus's evaluation, which combines these protocols, is :mod:`mmv.demo.evaluate`.

Submodules are imported on use, so ``import mmv.eval`` stays light.
"""
