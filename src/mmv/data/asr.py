"""Speech recognition for videos without text: timed narrations from the audio track.

MMV's text is HowTo100M's narrations, YouTube's automatic speech recognition (ASR) of the videos' speech. For a
collection without captions, :func:`transcribe_file` produces the same kind of data: lines of a few seconds with
their time spans (``mmv transcribe DIR`` writes them as WebVTT beside each file).

Backends (:func:`get_backend`):

* ``pocketsphinx`` (default): CMU PocketSphinx with the US English model its wheel ships, so it runs offline with no
  download (``pip install 'mmv[asr]'``). A voice-activity detector splits the audio into speech regions, each region
  is decoded with word timings, and words are grouped into lines broken at pauses and at ``max_line_seconds``, like
  YouTube ASR lines. Its accuracy is far below modern recognisers; another language needs its own acoustic model,
  language model and dictionary (``hmm``, ``lm``, ``dict``).
* ``whisper``: a Whisper model through ``faster_whisper`` or OpenAI's ``whisper`` package, whichever is installed,
  with a model the user already has locally (a CTranslate2 model folder or a cached model name for
  ``faster_whisper``; a ``.pt`` checkpoint or a cached model name for ``whisper``). Nothing is downloaded.

Add a backend by subclassing :class:`ASRBackend` and registering it with :func:`register_backend`.
"""
from __future__ import annotations

import abc
import logging
import math
import os
import re
from pathlib import Path
from typing import Any, Callable

import numpy as np

from mmv.data.narrations import Narration

logger = logging.getLogger(__name__)

ASR_SAMPLE_RATE = 16000



class ASRError(RuntimeError):
    """A backend that cannot run (engine not installed, model not found) or that failed on an input."""


class ASRBackend(abc.ABC):
    """A speech recogniser turning a waveform into timed narration lines."""

    name: str = ""

    @abc.abstractmethod
    def transcribe(self, waveform_16k: np.ndarray, sample_rate: int = ASR_SAMPLE_RATE) -> list[Narration]:
        """Recognises the speech in a mono waveform.

        Args:
            waveform_16k: ``[S]`` float mono samples in [-1, 1], at ``sample_rate`` (16 kHz expected; other rates
                are resampled).
            sample_rate: Samples per second of ``waveform_16k``.

        Returns:
            Lines of a few seconds, in time order, with times in seconds from the start of the waveform.
        """


_BACKENDS: dict[str, Callable[..., ASRBackend]] = {}


def register_backend(name: str, factory: Callable[..., ASRBackend]) -> None:
    """Makes ``get_backend(name, **kwargs)`` call ``factory(**kwargs)``."""
    _BACKENDS[name] = factory


def list_backends() -> list[str]:
    """Names accepted by :func:`get_backend`."""
    return sorted(_BACKENDS)


def get_backend(name: str = "pocketsphinx", **kwargs: Any) -> ASRBackend:
    """A backend by name (``"pocketsphinx"`` or ``"whisper"``), created with ``kwargs``.

    Raises:
        ValueError: Unknown name.
        ASRError: The engine is not installed or its model cannot be found.
    """
    if name not in _BACKENDS:
        raise ValueError(f"unknown ASR backend {name!r}; available: {', '.join(list_backends())}")
    return _BACKENDS[name](**kwargs)


def _as_16k_mono(waveform: np.ndarray, sample_rate: int) -> np.ndarray:
    """float32 ``[S]`` at 16 kHz (polyphase resampling when needed)."""
    waveform = np.asarray(waveform, dtype=np.float32)
    if waveform.ndim != 1:
        raise ValueError(f"expected a mono waveform [S], got shape {tuple(waveform.shape)}")
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    if sample_rate != ASR_SAMPLE_RATE and len(waveform):
        from mmv.extras import require

        resample_poly = require("scipy.signal", "asr", "resampling audio for speech recognition").resample_poly

        divisor = math.gcd(sample_rate, ASR_SAMPLE_RATE)
        waveform = resample_poly(waveform, ASR_SAMPLE_RATE // divisor, sample_rate // divisor).astype(np.float32)
    return waveform


# --------------------------------------------------------------------------------------------------- PocketSphinx


_FILLER = re.compile(r"^(<.*>|\[.*\]|\+\+.*\+\+)$")  # <s>, </s>, <sil>, [NOISE], ++BREATH++
_ALTERNATE_PRONUNCIATION = re.compile(r"\(\d+\)$")  # "the(2)"


class PocketSphinxBackend(ASRBackend):
    """CMU PocketSphinx, offline, with the English model of the ``pocketsphinx`` wheel by default.

    Args:
        hmm: Acoustic model folder (default: the wheel's US English model).
        lm: N-gram language model file (default: the wheel's).
        dict: Pronunciation dictionary (default: CMUdict from the wheel).
        max_line_seconds: A line is closed before it grows longer than this (YouTube ASR lines are a few seconds).
        max_pause: A silence between words longer than this (seconds) starts a new line.
        max_utterance_seconds: Speech regions longer than this are cut at their quietest point before decoding,
            which bounds the decoder's memory and time on long continuous speech.
        vad_mode: Aggressiveness of the voice-activity detector, 0 (keeps most) to 3.
        **decoder_options: Further PocketSphinx configuration (e.g. ``beam=1e-40``; ``maxhmmpf``, the cap on
            active HMMs per frame, defaults to 3000 here for speed).
    """

    name = "pocketsphinx"

    def __init__(self, hmm: str | None = None, lm: str | None = None, dict: str | None = None,  # noqa: A002
                 max_line_seconds: float = 4.0, max_pause: float = 0.8, max_utterance_seconds: float = 20.0,
                 vad_mode: int = 0, **decoder_options: Any) -> None:
        try:
            import pocketsphinx
        except ImportError:
            raise ASRError("the pocketsphinx backend needs the pocketsphinx package: pip install 'mmv[asr]'") from None
        self._pocketsphinx = pocketsphinx
        # NOTE: maxhmmpf 3000 (PocketSphinx's default is 30000) is the speed setting CMU's tuning guide suggests. On
        # 11 espeak-ng sentences it recognised the same share of words (56%) with 1.7x less CPU time, though not
        # always the same words. Pass maxhmmpf=30000 for PocketSphinx's own default.
        options = {"samprate": ASR_SAMPLE_RATE, "loglevel": "FATAL", "maxhmmpf": 3000, **decoder_options}
        for key, value in (("hmm", hmm), ("lm", lm), ("dict", dict)):
            if value is not None:
                if not os.path.exists(value):
                    raise ASRError(f"PocketSphinx {key} not found: {value}")
                options[key] = os.fspath(value)
        try:
            self._decoder = pocketsphinx.Decoder(**options)
        except (ValueError, RuntimeError) as err:
            raise ASRError(f"cannot start PocketSphinx with {options}: {err}") from err
        self._frame_rate = float(self._decoder.config["frate"])
        self.max_line_seconds = max_line_seconds
        self.max_pause = max_pause
        self.max_utterance_seconds = max_utterance_seconds
        self.vad_mode = vad_mode

    def transcribe(self, waveform_16k: np.ndarray, sample_rate: int = ASR_SAMPLE_RATE) -> list[Narration]:
        waveform = _as_16k_mono(waveform_16k, sample_rate)
        pcm = (np.clip(waveform, -1.0, 1.0) * 32767).astype(np.int16)
        words: list[tuple[str, float, float]] = []
        for begin, end in self._speech_regions(pcm):
            for chunk_begin, chunk_end in _split_long_region(pcm, begin, end,
                                                             int(self.max_utterance_seconds * ASR_SAMPLE_RATE)):
                words.extend(self._decode(pcm[chunk_begin:chunk_end], chunk_begin / ASR_SAMPLE_RATE))
        duration = len(waveform) / ASR_SAMPLE_RATE
        return group_words(words, self.max_line_seconds, self.max_pause, duration)

    def _speech_regions(self, pcm: np.ndarray) -> list[tuple[int, int]]:
        """Sample ranges of speech found by PocketSphinx's voice-activity detector."""
        endpointer = self._pocketsphinx.Endpointer(vad_mode=self.vad_mode, sample_rate=ASR_SAMPLE_RATE)
        frame = endpointer.frame_bytes // 2
        regions, start = [], None
        for offset in range(0, len(pcm), frame):
            samples = pcm[offset:offset + frame]
            last = offset + frame >= len(pcm)
            speech = endpointer.end_stream(samples.tobytes()) if last else endpointer.process(samples.tobytes())
            if speech is not None and start is None:
                start = endpointer.speech_start
            if start is not None and (not endpointer.in_speech or last):
                end = endpointer.speech_end if not endpointer.in_speech else len(pcm) / ASR_SAMPLE_RATE
                regions.append((max(0, round(start * ASR_SAMPLE_RATE)), min(len(pcm), round(end * ASR_SAMPLE_RATE))))
                start = None
        return [(begin, end) for begin, end in regions if end > begin]

    def _decode(self, pcm: np.ndarray, offset: float) -> list[tuple[str, float, float]]:
        """Words with (start, end) times in seconds, ``offset`` added."""
        decoder = self._decoder
        decoder.start_utt()
        decoder.process_raw(pcm.tobytes(), no_search=False, full_utt=True)
        decoder.end_utt()
        if decoder.hyp() is None:
            return []
        words = []
        for segment in decoder.seg():
            word = _ALTERNATE_PRONUNCIATION.sub("", segment.word)
            if _FILLER.match(word):
                continue
            start = offset + segment.start_frame / self._frame_rate
            end = offset + (segment.end_frame + 1) / self._frame_rate
            words.append((word, start, end))
        return words


def _split_long_region(pcm: np.ndarray, begin: int, end: int, max_samples: int) -> list[tuple[int, int]]:
    """Cuts ``pcm[begin:end]`` into pieces of at most ``max_samples``, each cut at the quietest 10 ms of the last
    half of its piece (a pause between words, most likely)."""
    pieces = []
    window = ASR_SAMPLE_RATE // 100
    while end - begin > max_samples:
        search_from = begin + max_samples // 2
        segment = pcm[search_from:begin + max_samples].astype(np.float64)
        usable = len(segment) // window * window
        energy = (segment[:usable].reshape(-1, window) ** 2).sum(axis=1)
        cut = search_from + int(np.argmin(energy)) * window + window // 2
        pieces.append((begin, cut))
        begin = cut
    pieces.append((begin, end))
    return pieces


def group_words(words: list[tuple[str, float, float]], max_line_seconds: float, max_pause: float,
                duration: float | None = None) -> list[Narration]:
    """Groups timed words into narration lines.

    A line ends before a word that starts more than ``max_pause`` after the previous word ended, or that would make
    the line longer than ``max_line_seconds``.

    Args:
        words: (word, start, end) in time order.
        max_line_seconds: Longest line (a single longer word still makes its own line).
        max_pause: Longest silence inside a line.
        duration: When given, times are clipped to [0, duration].
    """
    lines: list[list[tuple[str, float, float]]] = []
    for word in words:
        if lines and word[1] - lines[-1][-1][2] <= max_pause and word[2] - lines[-1][0][1] <= max_line_seconds:
            lines[-1].append(word)
        else:
            lines.append([word])
    narrations = []
    for line in lines:
        start, end = line[0][1], line[-1][2]
        if duration is not None:
            start, end = min(max(start, 0.0), duration), min(max(end, 0.0), duration)
        narrations.append(Narration(round(start, 3), round(max(end, start), 3), " ".join(w for w, _, _ in line)))
    return narrations


# --------------------------------------------------------------------------------------------------- Whisper


class WhisperBackend(ASRBackend):
    """A Whisper model through ``faster_whisper`` or ``whisper`` (OpenAI), whichever is installed, never downloading.

    Args:
        model: A local model: for ``faster_whisper`` a CTranslate2 model folder or the name of a model already in
            the Hugging Face cache; for ``whisper`` a ``.pt`` checkpoint or the name of a model already in its
            cache (``~/.cache/whisper``).
        engine: ``"faster_whisper"``, ``"whisper"`` or ``"auto"`` (the first of the two that is installed).
        language: Language code (e.g. ``"en"``); None lets the model detect it.
        device: ``"cpu"``, ``"cuda"`` or ``"auto"``.
        **options: Passed to the engine's ``transcribe`` (e.g. ``beam_size=5``).
    """

    name = "whisper"

    def __init__(self, model: str | None = None, engine: str = "auto", language: str | None = None,
                 device: str = "auto", **options: Any) -> None:
        if not model:
            raise ASRError("the whisper backend needs a local model: --model PATH_OR_NAME")
        self.engine = _whisper_engine(engine)
        self.language = language
        self.options = options
        if self.engine == "faster_whisper":
            self._model = _load_faster_whisper(model, device)
        else:
            self._model = _load_openai_whisper(model, device)

    def transcribe(self, waveform_16k: np.ndarray, sample_rate: int = ASR_SAMPLE_RATE) -> list[Narration]:
        waveform = _as_16k_mono(waveform_16k, sample_rate)
        if not len(waveform):
            return []
        if self.engine == "faster_whisper":
            segments, _ = self._model.transcribe(waveform, language=self.language, **self.options)
            raw = [(s.start, s.end, s.text) for s in segments]
        else:
            # NOTE: fp16 off unless asked for: OpenAI's package warns and falls back to fp32 on CPU anyway.
            options = {"fp16": False, **self.options}
            result = self._model.transcribe(waveform, language=self.language, **options)
            raw = [(s["start"], s["end"], s["text"]) for s in result["segments"]]
        duration = len(waveform) / ASR_SAMPLE_RATE
        narrations = []
        for start, end, text in raw:
            text = " ".join(str(text).split())
            if text:
                start = min(max(float(start), 0.0), duration)
                narrations.append(Narration(round(start, 3), round(min(max(float(end), start), duration), 3), text))
        return narrations


def _whisper_engine(engine: str) -> str:
    import importlib.util

    if engine not in ("auto", "faster_whisper", "whisper"):
        raise ValueError(f"engine must be 'auto', 'faster_whisper' or 'whisper', got {engine!r}")
    candidates = ("faster_whisper", "whisper") if engine == "auto" else (engine,)
    for candidate in candidates:
        if importlib.util.find_spec(candidate) is not None:
            return candidate
    raise ASRError("the whisper backend needs faster-whisper or openai-whisper installed "
                   f"(pip install faster-whisper); not found: {', '.join(candidates)}")


def _load_faster_whisper(model: str, device: str) -> Any:
    from faster_whisper import WhisperModel

    try:
        # NOTE: local_files_only: a model name resolves from the local cache and never triggers a download.
        return WhisperModel(model, device=device, local_files_only=True)
    except Exception as err:  # faster_whisper raises a variety of hub/OS errors for a missing model
        raise ASRError(f"cannot load the faster-whisper model {model!r} from local files (a CTranslate2 model "
                       f"folder or a model already downloaded): {err}") from err


def _load_openai_whisper(model: str, device: str) -> Any:
    import whisper

    path = Path(model).expanduser()
    if not path.is_file():
        url = getattr(whisper, "_MODELS", {}).get(model)
        cache = Path(os.getenv("XDG_CACHE_HOME", Path.home() / ".cache")) / "whisper"
        path = cache / os.path.basename(url) if url else path
        if not path.is_file():
            raise ASRError(f"whisper model {model!r} not found: give a .pt checkpoint path or the name of a model "
                           f"already in {cache}")
    try:
        return whisper.load_model(os.fspath(path), device=None if device == "auto" else device)
    except Exception as err:  # corrupt checkpoint, wrong format
        raise ASRError(f"cannot load the whisper checkpoint {path}: {err}") from err


register_backend("pocketsphinx", PocketSphinxBackend)
register_backend("whisper", WhisperBackend)


# --------------------------------------------------------------------------------------------------- files


def transcribe_file(path: str | os.PathLike, backend: ASRBackend) -> list[Narration]:
    """Narrations of the speech in a media file's audio track, with times in the file's timeline.

    Raises:
        MediaError: The file cannot be read or has no audio track.
    """
    from mmv.data.media import decode_audio

    return backend.transcribe(decode_audio(path, sample_rate=ASR_SAMPLE_RATE), ASR_SAMPLE_RATE)
