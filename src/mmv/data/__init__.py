"""Data: decoding, audio features, video transforms (and, in their own modules, narrations and datasets)."""
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
