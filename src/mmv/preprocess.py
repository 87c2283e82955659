"""What a model expects of its inputs, saved with the model: ``model.preprocess``.

A model learns on one kind of clip: so many frames at such a rate, resized and cropped so, sound at one sample rate
turned into one log-mel spectrogram, sentences cut to so many words of one vocabulary. :class:`Preprocess` holds all
of it, in the spirit of timm's ``pretrained_cfg`` and open_clip's preprocess configuration. :func:`mmv.save` writes
it into the model's JSON (the vocabulary as a file beside the weights), :func:`mmv.load` returns it as
``model.preprocess``, ``mmv train`` records it from the run's data settings and ``mmv convert`` records the released
models' settings (:meth:`Preprocess.released`). Evaluation, ``mmv embed``, the demo and ``mmv.embed_*`` read it from
the model, so a file always becomes the tensor the model was trained on; a caller's explicit setting overrides
it (:meth:`Preprocess.override`), and the override is reported.

>>> model = mmv.load("models/mmv_s3d")
>>> model.preprocess.video.fps, model.preprocess.audio.mel.n_mels
(12.5, 80)
"""
from __future__ import annotations

import dataclasses
import hashlib
import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from mmv.data.audio import MelConfig

__all__ = ["AudioPreprocess", "ImagePreprocess", "Preprocess", "TextPreprocess", "VideoPreprocess"]

log = logging.getLogger(__name__)

VOCAB_FILE = "vocab.json"  # the vocabulary's file name inside a model folder


@dataclass(frozen=True)
class VideoPreprocess:
    """One video window: ``num_frames`` frames sampled at ``fps``, short side resized to ``min_resize``, centre crop
    of ``crop`` (training draws random crops of the same size), RGB scaled to ``pixel_range``.

    Evaluation windows are these clips; training clips are these clips with augmentation.
    """

    num_frames: int = 32
    fps: float = 12.5
    min_resize: int = 224
    crop: int = 224
    pixel_range: tuple[float, float] = (0.0, 1.0)

    def __post_init__(self) -> None:
        object.__setattr__(self, "pixel_range", tuple(float(v) for v in self.pixel_range))
        if self.num_frames < 1 or not self.fps > 0:
            raise ValueError(f"need num_frames >= 1 and fps > 0, got {self.num_frames} and {self.fps}")
        if not 1 <= self.crop <= self.min_resize:
            raise ValueError(f"crop ({self.crop}) must be between 1 and the resized short side ({self.min_resize})")
        if len(self.pixel_range) != 2 or not self.pixel_range[0] < self.pixel_range[1]:
            raise ValueError(f"pixel_range must be (low, high) with low < high, got {self.pixel_range}")

    @property
    def seconds(self) -> float:
        """The span of one window."""
        return self.num_frames / self.fps


@dataclass(frozen=True)
class AudioPreprocess:
    """One audio window: ``clip_seconds`` of mono sound at ``mel.sample_rate`` as the log-mel spectrogram ``mel``."""

    clip_seconds: float = 3.2
    mel: MelConfig = field(default_factory=MelConfig)

    def __post_init__(self) -> None:
        if isinstance(self.mel, Mapping):
            object.__setattr__(self, "mel", MelConfig(**self.mel))
        if not self.clip_seconds > 0:
            raise ValueError(f"clip_seconds must be > 0, got {self.clip_seconds}")

    @property
    def sample_rate(self) -> int:
        return self.mel.sample_rate

    @property
    def num_samples(self) -> int:
        """Samples of one window."""
        return round(self.clip_seconds * self.mel.sample_rate)


@dataclass(frozen=True)
class ImagePreprocess:
    """A still image: short side resized to ``min_resize``, centre crop of ``crop``, pixels as for video."""

    min_resize: int = 256
    crop: int = 224

    def __post_init__(self) -> None:
        if not 1 <= self.crop <= self.min_resize:
            raise ValueError(f"crop ({self.crop}) must be between 1 and the resized short side ({self.min_resize})")


@dataclass(frozen=True)
class TextPreprocess:
    """A sentence: lower-cased words, stop words removed, at most ``max_words`` ids of ``vocabulary``.

    Attributes:
        max_words: Ids per sentence (padded with 0).
        stop_words: Words removed before encoding (None: the library's list, NLTK's 179 English stop words, which
            is then stored explicitly, so a model keeps its list if the library's default ever changes).
        drop_unknown: Leave out words not in the vocabulary instead of encoding them as the unknown id (always so
            with a table of rows, which has no unknown id).
        vocabulary: The word-to-id table (:class:`mmv.data.tokenizer.Vocabulary`); None when the model has none
            (the released models: their table was never published; ``mmv vocab recover`` rebuilds one).
    """

    max_words: int = 16
    stop_words: tuple[str, ...] | None = None  # normalised to a sorted tuple
    drop_unknown: bool = False
    vocabulary: Any = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if self.max_words < 1:
            raise ValueError(f"max_words must be >= 1, got {self.max_words}")
        from mmv.data.tokenizer import DEFAULT_STOP_WORDS

        stop_words = DEFAULT_STOP_WORDS if self.stop_words is None else self.stop_words
        object.__setattr__(self, "stop_words", tuple(sorted(set(stop_words))))

    def tokenizer(self) -> Any:
        """The :class:`mmv.data.tokenizer.Tokenizer` of these settings.

        Raises:
            ValueError: The model has no vocabulary.
        """
        from mmv.data.tokenizer import Tokenizer

        if self.vocabulary is None:
            raise ValueError("this model has no word vocabulary, so it cannot take text: give one (vocab=... in "
                             "Python, --vocab on the command line), or store one with the model (mmv.save with "
                             "preprocess=model.preprocess.with_vocabulary(...))")
        return Tokenizer(self.vocabulary, max_words=self.max_words, stop_words=self.stop_words,
                         drop_unknown=self.drop_unknown)


@dataclass(frozen=True)
class Preprocess:
    """Everything between a file and the model's input tensors (see the module docstring).

    Attributes:
        video: Video windows.
        audio: Audio windows and their spectrogram.
        image: Still images (through the deflated visual network).
        text: Tokenisation and vocabulary.
        windows: Evenly spaced windows per file when a whole file is embedded (``mmv.embed_*``, ``mmv embed``):
            the first starts at the start of the file, the last ends at its end.
        pooling: How the windows of one file become one embedding: in the embedding spaces (``va``, ``vt``)
            ``"normalized_mean"`` averages the L2-normalised windows (the retrieval protocol) and ``"mean"``
            averages them as they are; backbone features (``repr``) are always averaged as they are (the linear
            probe protocol).
        source: Where these settings come from: ``released`` (the paper's), ``training`` (the run's data
            settings), ``default`` (this library's defaults, a model created by name), ``corpus`` (the demo
            corpus's native clips, :func:`mmv.demo.evaluate.corpus_preprocess`).
        assumed: Settings that had to be assumed (a model saved before preprocessing was stored): their names.
    """

    video: VideoPreprocess = field(default_factory=VideoPreprocess)
    audio: AudioPreprocess = field(default_factory=AudioPreprocess)
    image: ImagePreprocess = field(default_factory=ImagePreprocess)
    text: TextPreprocess = field(default_factory=TextPreprocess)
    windows: int = 4
    pooling: str = "normalized_mean"
    source: str = "default"
    assumed: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name, cls in (("video", VideoPreprocess), ("audio", AudioPreprocess), ("image", ImagePreprocess),
                          ("text", TextPreprocess)):
            value = getattr(self, name)
            if isinstance(value, Mapping):
                object.__setattr__(self, name, cls(**value))
        object.__setattr__(self, "assumed", tuple(self.assumed))
        if self.windows < 1:
            raise ValueError(f"windows must be >= 1, got {self.windows}")
        if self.pooling not in ("mean", "normalized_mean"):
            raise ValueError(f"pooling must be 'mean' or 'normalized_mean', got {self.pooling!r}")

    # ----------------------------------------------------------------------------------------------------------
    # Constructors
    @classmethod
    def released(cls) -> "Preprocess":
        """The released models' settings (docs/models.md lists which are confirmed and which are assumed).

        Video: the released UCF101 evaluation (32 frames with temporal stride 2 from 25-fps video, i.e. 12.5 fps;
        short side 224, centre crop 224; pixels in [0, 1]). Audio: 48 kHz, 3.2 s (the published signature's
        recommended 153,600 samples), 80 mel bins, 2048/1024 window/hop, DMVR's mel edges 80-7600 Hz and
        ``log(mel + 1e-6)`` of the magnitude. Text: 16 words, stop words removed; no vocabulary (never published).
        Windows: 4 per file, L2-normalised and averaged (the retrieval pipeline VATT describes for MMV).
        """
        return cls(video=VideoPreprocess(32, 12.5, 224, 224), audio=AudioPreprocess(3.2, MelConfig()),
                   image=ImagePreprocess(256, 224), text=TextPreprocess(16), source="released")

    @classmethod
    def from_training_data(cls, data: Any, vocabulary: Any = None) -> "Preprocess":
        """The preprocessing of a training run, from its ``data`` settings.

        Args:
            data: A :class:`mmv.train.config.DataSection` or its dict (a model's stored ``train_config["data"]``).
                Keys missing from a dict (a config from an older version) take the training defaults and are
                listed in ``assumed``.
            vocabulary: The run's :class:`~mmv.data.tokenizer.Vocabulary`, if it has text.
        """
        from mmv.train.config import DataSection

        defaults = dataclasses.asdict(DataSection())
        given = dataclasses.asdict(data) if dataclasses.is_dataclass(data) else dict(data)
        assumed = sorted(k for k in ("num_frames", "fps", "crop", "min_resize", "sample_rate", "num_mel_bins",
                                     "stft_window", "stft_hop", "mel_fmin", "mel_fmax", "max_words") if k not in given)
        d = {**defaults, **given}
        rate = int(d["sample_rate"])
        # NOTE: an assumed upper mel edge must still fit below Nyquist at the run's sample rate.
        fmax = float(d["mel_fmax"]) if "mel_fmax" in given else min(float(d["mel_fmax"]), rate / 2)
        mel = MelConfig(sample_rate=rate, n_fft=int(d["stft_window"]), hop_length=int(d["stft_hop"]),
                        n_mels=int(d["num_mel_bins"]), fmin=float(d["mel_fmin"]), fmax=fmax)
        video = VideoPreprocess(int(d["num_frames"]), float(d["fps"]), int(d["min_resize"]), int(d["crop"]))
        return cls(video=video, audio=AudioPreprocess(video.seconds, mel),
                   image=ImagePreprocess(int(d["min_resize"]), int(d["crop"])),
                   text=TextPreprocess(int(d["max_words"]), vocabulary=vocabulary), source="training",
                   assumed=tuple(f"data.{k}" for k in assumed))

    # ----------------------------------------------------------------------------------------------------------
    # Changing settings
    def with_vocabulary(self, vocabulary: Any) -> "Preprocess":
        """A copy whose text settings use ``vocabulary`` (a :class:`~mmv.data.tokenizer.Vocabulary` or a path).

        A table of rows (a recovered vocabulary) has no unknown id, so ``drop_unknown`` becomes True with it.
        """
        if isinstance(vocabulary, (str, Path)):
            from mmv.data.tokenizer import Vocabulary

            vocabulary = Vocabulary.load(vocabulary)
        drop_unknown = self.text.drop_unknown or getattr(vocabulary, "is_rows_table", False)
        return dataclasses.replace(self, text=dataclasses.replace(self.text, vocabulary=vocabulary,
                                                                  drop_unknown=drop_unknown))

    def override(self, **settings: Any) -> tuple["Preprocess", dict[str, dict[str, Any]]]:
        """A copy with some settings replaced, and a record of those that contradict this preprocessing.

        Keys are dotted paths: ``video.fps``, ``video.crop``, ``audio.clip_seconds``, ``audio.mel.fmax``,
        ``image.crop``, ``text.max_words``, ``windows``, ... A value of None leaves the setting as it is.

        Returns:
            ``(new preprocessing, {key: {"model": old value, "used": new value}})`` for every key whose value
            differs from the model's (what the output's metadata reports).

        Raises:
            ValueError: An unknown key, or a combination of values that is impossible (crop above the resize).
        """
        data = self.to_dict(include_vocabulary=False)
        conflicts: dict[str, dict[str, Any]] = {}
        for key, value in settings.items():
            if value is None:
                continue
            node, parts = data, key.split(".")
            for part in parts[:-1]:
                if not isinstance(node.get(part), dict):
                    raise ValueError(f"unknown preprocessing setting {key!r}")
                node = node[part]
            if parts[-1] not in node or isinstance(node[parts[-1]], dict):
                raise ValueError(f"unknown preprocessing setting {key!r}")
            old = node[parts[-1]]
            value = type(old)(value) if isinstance(old, (int, float)) and not isinstance(old, bool) else value
            if value != old:
                conflicts[key] = {"model": old, "used": value}
                node[parts[-1]] = value
        return Preprocess.from_dict(data, vocabulary=self.text.vocabulary), conflicts

    # ----------------------------------------------------------------------------------------------------------
    # Serialisation (the vocabulary is written by mmv.save, not here)
    def to_dict(self, include_vocabulary: bool = True) -> dict[str, Any]:
        """Plain JSON data; the vocabulary as ``{"size", "sha256"}`` (its words are stored beside the weights)."""
        text = {"max_words": self.text.max_words, "drop_unknown": self.text.drop_unknown,
                "stop_words": list(self.text.stop_words)}
        out = {
            "video": {**dataclasses.asdict(self.video), "pixel_range": list(self.video.pixel_range)},
            "audio": {"clip_seconds": self.audio.clip_seconds, "mel": dataclasses.asdict(self.audio.mel)},
            "image": dataclasses.asdict(self.image),
            "text": text,
            "windows": self.windows, "pooling": self.pooling, "source": self.source, "assumed": list(self.assumed),
        }
        if include_vocabulary and self.text.vocabulary is not None:
            text["vocabulary"] = {"file": VOCAB_FILE, "size": len(self.text.vocabulary),
                                  "sha256": vocabulary_sha256(self.text.vocabulary)}
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], vocabulary: Any = None) -> "Preprocess":
        """The inverse of :meth:`to_dict`; ``vocabulary`` is the table read from beside the weights."""
        data = dict(data)
        text = dict(data.pop("text", {}))
        text.pop("vocabulary", None)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown preprocessing fields {sorted(unknown)}")
        # The sections are built from their dicts by __post_init__; text also takes the vocabulary.
        return cls(text=TextPreprocess(**text, vocabulary=vocabulary), **data)

    def describe(self) -> str:
        """Several lines for people (``mmv info``)."""
        v, a, t = self.video, self.audio, self.text
        vocab = f"{len(t.vocabulary)} words" if t.vocabulary is not None else "none"
        if t.vocabulary is not None and t.vocabulary.is_rows_table:
            vocab += " (rows of the word embedding, e.g. recovered; unknown words left out)"
        lines = [
            f"video: {v.num_frames} frames at {v.fps:g} fps ({v.seconds:g} s), short side {v.min_resize}, "
            f"centre crop {v.crop}, pixels in [{v.pixel_range[0]:g}, {v.pixel_range[1]:g}]",
            f"audio: {a.clip_seconds:g} s at {a.sample_rate} Hz, {a.mel.n_mels} mel bins {a.mel.fmin:g}-{a.mel.fmax:g} "
            f"Hz, window {a.mel.n_fft} hop {a.mel.hop_length}",
            f"image: short side {self.image.min_resize}, centre crop {self.image.crop}",
            f"text: {t.max_words} words, vocabulary {vocab}",
            f"windows per file: {self.windows} ({self.pooling}); settings from: {self.source}",
        ]
        if self.assumed:
            lines.append("assumed (not stored with the model): " + ", ".join(self.assumed))
        return "\n".join(lines)


def vocabulary_sha256(vocabulary: Any) -> str:
    """Checksum of a vocabulary's words in id order (what :func:`mmv.load` checks the stored file against).

    A table of rows hashes ``word<TAB>id`` lines, since its ids are not positions; no word holds whitespace, so the
    two kinds never share a checksum.
    """
    if getattr(vocabulary, "is_rows_table", False):
        lines = [f"{word}\t{vocabulary.id(word)}" for word in vocabulary.words]
    else:
        lines = vocabulary.words
    return hashlib.sha256("\n".join(lines).encode("utf-8")).hexdigest()


def preprocess_of_description(description: Mapping[str, Any], vocabulary: Any = None,
                              where: str = "model") -> Preprocess:
    """The preprocessing stored in a model's JSON description, or, for a model saved before it was stored,
    derived from what the description holds, with a warning naming what had to be assumed.

    * ``preprocess``: stored by :func:`mmv.save` (this version and later);
    * ``train_config``: ``mmv train`` of an earlier version: from its data settings (:meth:`from_training_data`),
      the vocabulary from the path the run used if that file is still there;
    * ``source.converted_from``: ``mmv convert`` of an earlier version: :meth:`Preprocess.released`;
    * nothing: the library's defaults, all assumed.
    """
    if isinstance(description.get("preprocess"), Mapping):
        return Preprocess.from_dict(description["preprocess"], vocabulary=vocabulary)
    train_config = description.get("train_config")
    if isinstance(train_config, Mapping) and isinstance(train_config.get("data"), Mapping):
        data = train_config["data"]
        if vocabulary is None and data.get("vocab"):
            vocabulary = _vocabulary_at(data["vocab"], where)
        preprocess = Preprocess.from_training_data(data, vocabulary)
        preprocess = dataclasses.replace(preprocess, assumed=("windows", "pooling", *preprocess.assumed))
    elif isinstance(description.get("source"), Mapping) and description["source"].get("converted_from"):
        preprocess = dataclasses.replace(Preprocess.released(), assumed=("saved before preprocessing was stored",))
    else:
        preprocess = dataclasses.replace(Preprocess(), assumed=("everything",))
    warnings.warn(f"{where} was saved without its preprocessing; using the {preprocess.source} settings "
                  f"(assumed: {', '.join(preprocess.assumed)}). Save it again with mmv.save to store them.",
                  stacklevel=3)
    return preprocess


def _vocabulary_at(path: str, where: str) -> Any:
    from mmv.data.tokenizer import Vocabulary

    try:
        return Vocabulary.load(path)
    except (OSError, ValueError) as err:
        log.warning("%s: the vocabulary of its training run (%s) cannot be read (%s); the model takes no text until "
                    "one is given", where, path, err)
        return None
