"""Data: decoding, audio features, video transforms, narrations, tokenizer, word vectors; datasets, shards,
speech recognition and the demo corpus live in their own modules (mmv.data.datasets, .shards, .asr; the demo corpus is mmv.demo.corpus)."""
from mmv.data.audio import MelConfig as MelConfig
from mmv.data.audio import log_mel_spectrogram as log_mel_spectrogram
from mmv.data.audio import num_spectrogram_frames as num_spectrogram_frames
from mmv.data.media import Clip as Clip
from mmv.data.media import MediaError as MediaError
from mmv.data.media import MediaInfo as MediaInfo
from mmv.data.media import decode_clip as decode_clip
from mmv.data.media import evenly_spaced_starts as evenly_spaced_starts
from mmv.data.media import probe as probe
from mmv.data.media import random_start as random_start
from mmv.data.media import sliding_starts as sliding_starts
from mmv.data.transforms import VideoTransform as VideoTransform
from mmv.data.narrations import Narration as Narration
from mmv.data.narrations import NarrationError as NarrationError
from mmv.data.narrations import read_howto100m_captions as read_howto100m_captions
from mmv.data.narrations import read_narrations as read_narrations
from mmv.data.narrations import select_narrations as select_narrations
from mmv.data.narrations import write_webvtt as write_webvtt
from mmv.data.tokenizer import Tokenizer as Tokenizer
from mmv.data.tokenizer import Vocabulary as Vocabulary
from mmv.data.tokenizer import build_vocabulary as build_vocabulary
from mmv.data.word_vectors import load_word_vectors as load_word_vectors
