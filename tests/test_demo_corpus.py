"""The demo corpus: deterministic files that decode, and a class and an attribute that each modality carries.

The checks read the files with PyAV directly and recover the class and the attribute with simple signal processing
that shares no code with the generator (FFT peaks, STFT pitch tracks, motion-compensated averaging, k-NN on
scikit-learn's digits), so a generator bug that breaks a modality's evidence fails here.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from pathlib import Path

import av
import numpy as np
import pytest
from scipy.ndimage import uniform_filter, zoom
from scipy.signal import stft
from sklearn.datasets import load_digits
from sklearn.linear_model import RidgeClassifier
from sklearn.neighbors import KNeighborsClassifier

from mmv.cli.main import main
from mmv.demo import corpus as demo_corpus
from mmv.demo.corpus import DemoCorpusConfig, generate_demo_corpus

SAMPLE_RATE = 16000
FPS = 10
# Keypad layout of the tones, written out here independently of the generator.
LOW_HZ, HIGH_HZ = (300.0, 400.0, 533.3, 711.1), (1000.0, 1414.2, 2000.0)
KEYPAD = {(0, 0): 1, (0, 1): 2, (0, 2): 3, (1, 0): 4, (1, 1): 5, (1, 2): 6, (2, 0): 7, (2, 1): 8, (2, 2): 9,
          (3, 1): 0}
KEY_OF_DIGIT = {digit: key for key, digit in KEYPAD.items()}  # digit -> (row, column)
DIRECTIONS = ((1, 0), (-1, 0), (0, -1), (0, 1))  # right, left, up, down as (dx, dy) in image coordinates
NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("demo")
    generate_demo_corpus(root, num_train=10, num_test=20, seed=3, workers=1, progress=False)
    return root


def read_manifest(root: Path, split: str) -> list[dict]:
    return [json.loads(line) for line in (root / split / "manifest.jsonl").read_text().splitlines()]


def decode(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    with av.open(str(path)) as container:
        frames = np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)])
    with av.open(str(path)) as container:
        if not container.streams.audio:
            return frames, None
        audio = np.concatenate([frame.to_ndarray()[0] for frame in container.decode(audio=0)])
    return frames, audio


def file_digests(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------------------------------------------------------
# Independent readers of each modality.


def magnitude_spectrum(audio: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(frequencies in Hz, |FFT|) of a whole soundtrack."""
    return np.fft.rfftfreq(len(audio), 1 / SAMPLE_RATE), np.abs(np.fft.rfft(audio))


def digit_from_tones(audio: np.ndarray) -> int:
    """The strongest peak in each tone group, mapped through the keypad (-1: not a key)."""
    freqs, spectrum = magnitude_spectrum(audio)

    def peak(low: float, high: float) -> float:
        band = (freqs >= low) & (freqs <= high)
        return freqs[band][np.argmax(spectrum[band])]

    row = int(np.argmin([abs(np.log(peak(250, 850) / f)) for f in LOW_HZ]))
    column = int(np.argmin([abs(np.log(peak(850, 2400) / f)) for f in HIGH_HZ]))
    return KEYPAD.get((row, column), -1)


LOW_BAND, HIGH_BAND = (250.0, 850.0), (850.0, 2400.0)
# The neutral pair (225 and 2828 Hz) under its +-12 % glide, and the keypad's tones under theirs (the low band
# starts a little above the lowest tone's glide, 264 Hz, so that the neutral low tone's skirt at 255 Hz stays out).
NEUTRAL_BANDS = ((180.0, 255.0), (2450.0, 3200.0))
KEYPAD_BANDS = ((280.0, 800.0), (880.0, 2240.0))


def peak_over_median(audio: np.ndarray, band_hz: tuple[float, float],
                     context_hz: tuple[float, float] | None = None) -> float:
    """The largest |FFT| in ``band_hz`` over the median |FFT| in ``context_hz`` (default: the band itself)."""
    freqs, spectrum = magnitude_spectrum(audio)

    def within(hz: tuple[float, float]) -> np.ndarray:
        return spectrum[(freqs >= hz[0]) & (freqs <= hz[1])]

    return float(within(band_hz).max() / np.median(within(context_hz or band_hz)))


def tonal(audio: np.ndarray, band_hz: tuple[float, float], factor: float = 8.0) -> bool:
    """Whether a tone sounds in ``band_hz``: the band's spectral peak stands far above its median (keypad tones: 8x
    or more on these soundtracks; the neutral pair, whose glide spans more Hz and whose low tone sits in the
    rumble: 7x or more; noise and chirps alone: about 4-5x)."""
    return peak_over_median(audio, band_hz) > factor


def tones_present(audio: np.ndarray) -> tuple[bool, bool]:
    """Whether a tone sounds in the low and in the high group."""
    return tonal(audio, LOW_BAND), tonal(audio, HIGH_BAND)


def tone_of_label_sounds(audio: np.ndarray, label: int) -> bool:
    """Whether the keypad tone nearest the strongest peak of the whole tone range is one of ``label``'s two (a
    video that plays one tone of its pair still has that)."""
    freqs, spectrum = magnitude_spectrum(audio)
    band = (freqs >= 250) & (freqs <= 2400)
    strongest = freqs[band][np.argmax(spectrum[band])]
    tones = LOW_HZ + HIGH_HZ
    nearest = int(np.argmin([abs(np.log(strongest / f)) for f in tones]))  # the glide spreads a tone by +-12 %
    row, column = KEY_OF_DIGIT[label]
    return nearest in (row, len(LOW_HZ) + column)


def glide_from_pitch_track(audio: np.ndarray, band_hz: tuple[float, float] = HIGH_BAND) -> int:
    """Vote over beeps: mean pitch of the tone in ``band_hz`` in each third of a beep gives its glide shape."""
    freqs, _, spec = stft(audio, SAMPLE_RATE, nperseg=512, noverlap=384)
    band = (freqs >= band_hz[0]) & (freqs <= band_hz[1])
    power = np.abs(spec[band]) ** 2
    energy = power.sum(axis=0)
    edges = np.flatnonzero(np.diff(np.concatenate([[0], (energy > 0.25 * energy.max()).astype(int), [0]])))
    votes = np.zeros(4)
    for begin, end in zip(edges[::2], edges[1::2]):
        if end - begin < 9:  # too short to be a beep (a click, a chirp)
            continue
        track = freqs[band][np.argmax(power[:, begin:end], axis=0)]
        first, middle, last = (part.mean() for part in np.array_split(track, 3))
        shape = {(True, True): 0, (False, False): 1, (True, False): 2, (False, True): 3}
        votes[shape[(middle > first, last > middle)]] += 1
    return int(np.argmax(votes))


def motion_direction(frames: np.ndarray) -> int:
    """Try constant velocities; the one that best stacks the moving foreground gives the direction (index)."""
    pixels = frames.astype(np.float32)
    foreground = np.abs(pixels - np.median(pixels, axis=0)).sum(-1)  # [T, H, W]; the static background removed
    best = (-1.0, -1)
    for direction, (ux, uy) in enumerate(DIRECTIONS):
        for speed in np.arange(2.0, 12.5, 0.5):
            shifts = [(-int(round(uy * speed * t / FPS)), -int(round(ux * speed * t / FPS)))
                      for t in range(len(pixels))]
            aligned = np.mean([np.roll(f, s, axis=(0, 1)) for f, s in zip(foreground, shifts)], axis=0)
            score = uniform_filter(aligned, 5).max()
            if score > best[0]:
                best = (score, direction)
    return best[1]


def sharpest_alignment(frames: np.ndarray, direction: int) -> np.ndarray:
    """The frames' luminance averaged along the motion in ``direction`` at the speed that gives the sharpest image
    (the digit stacks up, the background smears), minus its median: the light digit on a dark ground. [H, W]."""
    ux, uy = DIRECTIONS[direction]
    luminance = frames.astype(np.float32).mean(-1)
    best = (-1.0, luminance[0])
    for speed in np.arange(2.0, 12.5, 0.5):
        shifts = [(-int(round(uy * speed * t / FPS)), -int(round(ux * speed * t / FPS)))
                  for t in range(len(luminance))]
        aligned = np.mean([np.roll(f, s, axis=(0, 1)) for f, s in zip(luminance, shifts)], axis=0)
        sharpness = np.abs(np.diff(aligned, axis=0)).sum() + np.abs(np.diff(aligned, axis=1)).sum()
        if sharpness > best[0]:
            best = (sharpness, aligned)
    return np.clip(best[1] - np.median(best[1]), 0, None)


def crop_to_8x8(aligned: np.ndarray, box: int = 36) -> np.ndarray:
    """The brightest box-sized window of the aligned foreground, cropped to its content, as an 8x8 image in [0, 1]."""
    size = aligned.shape[0]
    cy, cx = np.unravel_index(np.argmax(uniform_filter(aligned, box)), aligned.shape)
    window = np.roll(aligned, (size // 2 - cy, size // 2 - cx), axis=(0, 1))
    window = window[size // 2 - box // 2: size // 2 + box // 2, size // 2 - box // 2: size // 2 + box // 2]
    ys, xs = np.nonzero(window > 0.35 * window.max())
    window = window[ys.min(): ys.max() + 1, xs.min(): xs.max() + 1]
    side = max(window.shape)
    square = np.zeros((side, side))
    top, left = (side - window.shape[0]) // 2, (side - window.shape[1]) // 2
    square[top: top + window.shape[0], left: left + window.shape[1]] = window
    small = zoom(square, 8 / side, order=1)[:8, :8]
    return small / (small.max() + 1e-9)


def narration_lines(path: Path) -> list[str]:
    text = path.read_text(encoding="utf-8")
    assert text.startswith("WEBVTT")
    return [line for line in text.splitlines()[1:] if line and "-->" not in line]


def named_digits(line: str) -> list[int]:
    """Digits a line names unambiguously (number words and numerals; homophones such as 'for' are ambiguous)."""
    words = re.findall(r"[a-z0-9]+", line.lower())
    return [NUMBER_WORDS.index(w) if w in NUMBER_WORDS else int(w) for w in words
            if w in NUMBER_WORDS or (w.isdigit() and len(w) == 1)]


# ---------------------------------------------------------------------------------------------------------------
# Tests.


@pytest.mark.slow
def test_same_seed_gives_identical_bytes_whatever_the_worker_count(tmp_path: Path) -> None:
    generate_demo_corpus(tmp_path / "a", num_train=4, num_test=2, seed=11, workers=1, progress=False)
    generate_demo_corpus(tmp_path / "b", num_train=4, num_test=2, seed=11, workers=2, progress=False)
    generate_demo_corpus(tmp_path / "c", num_train=4, num_test=2, seed=12, workers=1, progress=False)
    digests_a, digests_b, digests_c = (file_digests(tmp_path / name) for name in "abc")
    assert digests_a == digests_b
    assert len(digests_a) >= 4 + 2 + 3  # videos, manifests and corpus.json at least
    differing = [name for name in digests_a if name.endswith(".mp4") and digests_a[name] != digests_c.get(name)]
    assert len(differing) == 6


def test_existing_corpus_is_reused_and_a_different_one_is_not_overwritten(tmp_path: Path) -> None:
    first = generate_demo_corpus(tmp_path, num_train=2, num_test=1, seed=0, workers=1, progress=False)
    stamp = (tmp_path / "train" / "train_00000.mp4").stat().st_mtime_ns
    again = generate_demo_corpus(tmp_path, num_train=2, num_test=1, seed=0, workers=1, progress=False)
    assert again == first
    assert (tmp_path / "train" / "train_00000.mp4").stat().st_mtime_ns == stamp
    with pytest.raises(FileExistsError, match="other parameters"):
        generate_demo_corpus(tmp_path, num_train=2, num_test=1, seed=1, workers=1, progress=False)
    generate_demo_corpus(tmp_path, num_train=2, num_test=1, seed=1, workers=1, progress=False, overwrite=True)
    assert json.loads((tmp_path / "corpus.json").read_text())["parameters"]["seed"] == 1


def test_refuses_a_folder_with_foreign_files(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not empty"):
        generate_demo_corpus(tmp_path, num_train=1, num_test=1, workers=1, progress=False)
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_layout_manifests_and_counts(corpus: Path) -> None:
    description = json.loads((corpus / "corpus.json").read_text())
    assert description["class_names"] == list(NUMBER_WORDS)
    assert description["attribute_names"] == ["right", "left", "up", "down"]
    for split, count in (("train", 10), ("test", 20)):
        records = read_manifest(corpus, split)
        assert len(records) == count == description["counts"][split]["videos"]
        for record in records:
            assert (corpus / split / record["video"]).is_file()
            assert 0 <= record["label"] <= 9 and 0 <= record["attribute"] <= 3
            if record["caption"] is None:
                assert record["text_kind"] == "missing" and not record["has_text"]
            else:
                lines = narration_lines(corpus / split / record["caption"])
                assert record["has_text"] == bool(lines) == (record["text_kind"] in ("on_topic", "off_topic"))
        # Exact shares: 15% without audio; 7.5% without a caption file, 7.5% with an empty one, 10% off-topic.
        assert sum(not r["has_audio"] for r in records) == round(0.15 * count)
        kinds = [r["text_kind"] for r in records]
        assert (kinds.count("missing"), kinds.count("empty"), kinds.count("off_topic")) == (
            round(0.075 * count), round(0.075 * count), round(0.1 * count))


def test_videos_decode_with_expected_frames_duration_and_audio(corpus: Path) -> None:
    for record in read_manifest(corpus, "train")[:8]:
        path = corpus / "train" / record["video"]
        with av.open(str(path)) as container:
            assert container.streams.video[0].codec_context.name == "h264"
            assert container.duration / av.time_base == pytest.approx(3.0, abs=0.15)
            has_audio = bool(container.streams.audio)
            if has_audio:
                assert container.streams.audio[0].codec_context.name == "aac"
                assert container.streams.audio[0].sample_rate == SAMPLE_RATE
        assert has_audio == record["has_audio"]
        frames, audio = decode(path)
        assert frames.shape == (30, 64, 64, 3)
        with av.open(str(path)) as container:
            keyframes = [i for i, frame in enumerate(container.decode(video=0)) if frame.key_frame]
        # A keyframe at least every second, so that a clip is decoded from at most a second before it.
        assert keyframes[0] == 0 and max(np.diff(keyframes + [len(frames)])) <= FPS
        if has_audio:
            # AAC frames are 1024 samples: the track covers the 3 s, rounded up to whole frames.
            assert 3.0 * SAMPLE_RATE <= len(audio) <= 3.0 * SAMPLE_RATE + 2048
            assert 0.05 < np.abs(audio).max() <= 1.0


def check_soundtracks(root: Path, split: str, neutral_fraction: float = 0.0) -> float:
    """Asserts what every soundtrack of a split without harmonics must show; returns the fraction of the digit
    soundtracks that play the whole tone pair."""
    records = [r for r in read_manifest(root, split) if r["has_audio"]]
    assert sum(r["sound"] == "neutral" for r in records) == round(neutral_fraction * len(records))
    pairs, glides = [], []
    for record in records:
        _, audio = decode(root / split / record["video"])
        if record["sound"] == "neutral":  # the neutral pair, no keypad tone: the glide but not the class
            assert all(tonal(audio, band, factor=6.0) for band in NEUTRAL_BANDS), record["video"]
            assert not any(tonal(audio, band) for band in KEYPAD_BANDS), record["video"]
            glides.append(glide_from_pitch_track(audio, NEUTRAL_BANDS[1]) == record["attribute"])
            continue
        assert record["sound"] == "digit"
        low, high = tones_present(audio)
        assert low or high, record["video"]
        if low and high:  # the whole pair names the digit
            assert digit_from_tones(audio) == record["label"], record["video"]
        else:  # one tone of the pair (p_single_tone): it is one of the digit's two
            assert tone_of_label_sounds(audio, record["label"]), record["video"]
        pairs.append(low and high)
        glides.append(glide_from_pitch_track(audio, HIGH_BAND if high else LOW_BAND) == record["attribute"])
    assert np.mean(glides) >= 0.9
    return float(np.mean(pairs))


def test_audio_tones_identify_the_digit_and_glides_the_attribute(corpus: Path) -> None:
    # By default every training soundtrack plays its digit's whole tone pair, as pure tones.
    assert check_soundtracks(corpus, "train") == 1.0


def near(frequency: float) -> tuple[float, float]:
    """The band a tone of ``frequency`` sweeps under its +-12 % glide, with a margin."""
    return 0.85 * frequency, 1.15 * frequency


def sounds(audio: np.ndarray, frequency: float, factor: float = 8.0) -> bool:
    """Whether a tone sweeps around ``frequency``: the spectral peak near it stands ``factor`` times above the median
    of the two octaves around it (the glide fills the near band itself, so its own median would not do)."""
    return peak_over_median(audio, near(frequency), (frequency / 2, 2 * frequency)) > factor


def test_held_out_soundtracks_play_the_same_tones_on_another_instrument(corpus: Path) -> None:
    """Training soundtracks are pure tones; held-out ones add harmonics (an unseen instrument) to the same notes:
    the 2nd harmonic of the high tone (where none of the digit's own tones sounds; peak/median 8-26 in held-out
    soundtracks, under 4 in training ones here) is there in every held-out soundtrack and in no training one, and
    the digit's own two tones and the glide are still there."""
    for split in ("train", "test"):
        glides = []
        for record in read_manifest(corpus, split):
            if not record["has_audio"]:
                continue
            _, audio = decode(corpus / split / record["video"])
            row, column = KEY_OF_DIGIT[record["label"]]
            assert sounds(audio, 2 * HIGH_HZ[column], factor=6.0) == (split == "test"), (split, record["video"])
            assert sounds(audio, LOW_HZ[row]) and sounds(audio, HIGH_HZ[column]), record["video"]
            glides.append(glide_from_pitch_track(audio, near(HIGH_HZ[column])) == record["attribute"])
        assert glides and np.mean(glides) >= 0.9


def test_single_tone_soundtracks_name_a_keypad_row_or_column(tmp_path: Path) -> None:
    config = DemoCorpusConfig(p_single_tone=0.4, single_tone="either")
    generate_demo_corpus(tmp_path, num_train=20, num_test=0, seed=5, config=config, workers=1, progress=False)
    assert 0.3 <= check_soundtracks(tmp_path, "train") < 1.0
    with pytest.raises(ValueError, match="single_tone"):
        DemoCorpusConfig(single_tone="middle")
    with pytest.raises(ValueError, match="test_harmonics"):
        DemoCorpusConfig(test_harmonics=(0.8, 0.3))


def test_neutral_soundtracks_carry_the_glide_and_no_keypad_tone(tmp_path: Path) -> None:
    config = DemoCorpusConfig(p_neutral_sound=0.4)
    generate_demo_corpus(tmp_path, num_train=20, num_test=0, seed=6, config=config, workers=1, progress=False)
    assert check_soundtracks(tmp_path, "train", neutral_fraction=0.4) == 1.0


@pytest.mark.slow
def test_video_motion_gives_the_attribute_and_the_handwriting_the_digit(corpus: Path) -> None:
    digits = load_digits()
    train_images = sorted({r["digit_image"] for r in read_manifest(corpus, "train")})
    all_train_images = np.concatenate(demo_corpus.split_digit_images(digits.target, 3, 0.3)["train"])
    knn = KNeighborsClassifier(3).fit(digits.images[all_train_images].reshape(-1, 64) / 16,
                                      digits.target[all_train_images])
    assert set(train_images) <= set(all_train_images.tolist())
    directions, classes = [], []
    for record in read_manifest(corpus, "test"):
        frames, _ = decode(corpus / "test" / record["video"])
        direction = motion_direction(frames)
        directions.append(direction == record["attribute"])
        digit = crop_to_8x8(sharpest_alignment(frames, direction))
        classes.append(knn.predict(digit.reshape(1, -1))[0] == record["label"])
    assert np.mean(directions) >= 0.9
    assert np.mean(classes) >= 0.5  # chance: 0.1; k-NN on a crude crop of unseen handwriting


def test_digit_stays_whole_inside_the_frame_and_moves_in_the_attribute_direction() -> None:
    """Rendering each video twice, with its handwriting and with a blank glyph (same random draws otherwise), leaves
    the digit alone in the difference: it never reaches the frame's outer pixels (no wrap-around, nothing cut off)
    and its centroid moves along the attribute's direction over the whole video."""
    cfg = DemoCorpusConfig()
    images, targets = load_digits().images / 16, load_digits().target
    pools = demo_corpus.split_digit_images(targets, 0, cfg.test_image_fraction)
    specs = demo_corpus.plan_split("train", 40, 0, cfg, pools["train"])
    for spec in specs:
        def render(image: np.ndarray) -> np.ndarray:
            return demo_corpus.render_frames(spec, image, cfg, np.random.default_rng(list(spec.seed))).astype(float)

        difference = np.abs(render(images[spec.image_index]) - render(np.zeros((8, 8)))).sum(-1)  # [T, H, W]
        ink = difference > 0.25 * difference.max()
        assert ink.any(axis=(1, 2)).all()
        border = ink.copy()
        border[:, 1:-1, 1:-1] = False
        assert not border.any(), spec
        ys, xs = np.mgrid[0:cfg.size, 0:cfg.size]
        weights = difference * ink
        centroid = np.stack([(weights * xs).sum((1, 2)), (weights * ys).sum((1, 2))], 1) / weights.sum((1, 2))[:, None]
        along = centroid @ np.array(DIRECTIONS[spec.attribute], dtype=float)
        # Distractors drawn over the digit move the centroid a little; the fitted speed is still the digit's.
        speed = np.polyfit(np.arange(len(along)) / FPS, along, 1)[0]
        assert cfg.speed[0] * 0.5 <= speed <= cfg.speed[1] * 1.1, (spec, speed)


def test_narrations_name_the_digit_and_never_the_attribute(corpus: Path) -> None:
    for split in ("train", "test"):
        for record in read_manifest(corpus, split):
            if record["caption"] is None:
                continue
            lines = narration_lines(corpus / split / record["caption"])
            named = [d for line in lines for d in named_digits(line)]
            assert set(named) <= {record["label"]}, (record, lines)
            if record["text_kind"] == "off_topic":
                assert named == []
            words = set(re.findall(r"[a-z]+", " ".join(lines)))
            assert not words & {"right", "left", "up", "down", "rising", "falling"}, lines
    mentioned = [any(named_digits(line) for line in narration_lines(corpus / split / record["caption"]))
                 for split in ("train", "test") for record in read_manifest(corpus, split)
                 if record["text_kind"] == "on_topic"]
    assert mentioned
    assert np.mean(mentioned) >= 0.8  # the rest say it only through homophones or lost the word


def test_asr_noise_is_present_in_the_narrations() -> None:
    cfg = DemoCorpusConfig()
    specs = [demo_corpus.VideoSpec(f"v{i}", "train", label=i % 10, attribute=0, image_index=0, has_audio=True,
                                   text_kind="on_topic", seed=(0, 0, i)) for i in range(300)]
    texts = [text for spec in specs for _, _, text in
             demo_corpus.make_narrations(spec, cfg, np.random.default_rng(list(spec.seed)))]
    words = [w for text in texts for w in text.split()]
    for homophone in ("won", "ate", "for", "to", "too"):
        assert homophone in words
    assert {"um", "uh"} <= set(words)
    assert any(re.fullmatch(r"\d", w) for w in words)
    assert any(text in demo_corpus._OFF_TOPIC for text in texts)


def test_handwriting_of_train_and_test_is_disjoint(corpus: Path) -> None:
    train = {r["digit_image"] for r in read_manifest(corpus, "train")}
    test = {r["digit_image"] for r in read_manifest(corpus, "test")}
    assert train and test and not train & test
    pools = demo_corpus.split_digit_images(load_digits().target, 0, 0.3)
    for label in range(10):
        assert not set(pools["train"][label]) & set(pools["test"][label])
        assert len(pools["train"][label]) + len(pools["test"][label]) == (load_digits().target == label).sum()


def test_class_and_attribute_are_balanced_and_independent() -> None:
    pools = demo_corpus.split_digit_images(load_digits().target, 0, 0.3)
    specs = demo_corpus.plan_split("train", 400, 0, DemoCorpusConfig(), pools["train"])
    counts = np.zeros((10, 4), int)
    for spec in specs:
        counts[spec.label, spec.attribute] += 1
    assert (counts == 10).all()
    assert sum(not s.has_audio for s in specs) == 60
    assert len({s.image_index for s in specs}) == 400  # every video of a class has its own handwriting here
    # With p_neutral_sound, 10 % of the 340 soundtracks play the neutral pair; the rest of the plan is unchanged.
    neutral = demo_corpus.plan_split("train", 400, 0, DemoCorpusConfig(p_neutral_sound=0.1), pools["train"])
    assert [s.sound for s in neutral].count("neutral") == 34 and "neutral" not in [s.sound for s in specs]
    assert all(s.has_audio == (s.sound != "none") for s in neutral + specs)
    assert [dataclasses.replace(s, sound="digit" if s.has_audio else "none") for s in neutral] == specs


@pytest.mark.slow
def test_raw_pixels_do_not_give_the_class_away() -> None:
    """A linear classifier on downsampled frames is near chance, while the same classifier reads clean digits."""
    cfg = dataclasses.replace(DemoCorpusConfig(), duration=0.1)  # one frame per video
    images, targets = load_digits().images / 16, load_digits().target
    pools = demo_corpus.split_digit_images(targets, 0, cfg.test_image_fraction)

    def features(split: str, n: int) -> tuple[np.ndarray, np.ndarray]:
        specs = demo_corpus.plan_split(split, n, 0, cfg, pools[split])
        frames = np.stack([demo_corpus.render_frames(s, images[s.image_index], cfg,
                                                     np.random.default_rng(list(s.seed)))[0] for s in specs])
        return frames.reshape(n, 16, 4, 16, 4, 3).mean((2, 4)).reshape(n, -1) / 255, np.array([s.label for s in specs])

    x_train, y_train = features("train", 400)
    x_test, y_test = features("test", 150)
    pixel_accuracy = RidgeClassifier(alpha=1.0).fit(x_train, y_train).score(x_test, y_test)
    train_idx, test_idx = np.concatenate(pools["train"]), np.concatenate(pools["test"])
    clean_accuracy = RidgeClassifier(alpha=1.0).fit(images[train_idx].reshape(-1, 64), targets[train_idx]).score(
        images[test_idx].reshape(-1, 64), targets[test_idx])
    assert clean_accuracy > 0.85
    assert pixel_accuracy < 0.35  # chance is 0.1


def test_cli_generates_and_reports(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "corpus"
    assert main(["demo-data", "--out", str(out), "--num-train", "2", "--num-test", "1", "--workers", "1",
                 "--seed", "5", "--no-progress"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["counts"]["train"]["videos"] == 2 and summary["counts"]["test"]["videos"] == 1
    assert main(["demo-data", "--out", str(out), "--num-train", "2", "--num-test", "1", "--seed", "6"]) == 1
    assert "other parameters" in capsys.readouterr().err


def test_corpus_feeds_the_clip_dataset(corpus: Path) -> None:
    from mmv.data.audio import MelConfig
    from mmv.data.datasets import ClipDataset
    from mmv.data.tokenizer import Tokenizer, build_vocabulary

    items = demo_corpus.corpus_items(corpus, "test")
    records = read_manifest(corpus, "test")
    assert [i.label for i in demo_corpus.corpus_items(corpus, "test", label_field="attribute")] == [
        r["attribute"] for r in records]
    texts = [line for i in items if i.caption for line in narration_lines(Path(i.caption))]
    description = json.loads((corpus / "corpus.json").read_text())
    dataset = ClipDataset(items, num_frames=8, fps=FPS, mel_config=MelConfig(**description["suggested_mel_config"]),
                          tokenizer=Tokenizer(build_vocabulary(texts)), train=False)
    assert not all(r["has_audio"] for r in records) and not all(r["has_text"] for r in records)
    for index in range(len(dataset)):
        sample, record = dataset[index], records[index]
        assert sample["video"].shape == (8, 64, 64, 3) and sample["audio"].shape == (80, 64)
        assert bool(sample["audio_mask"]) == record["has_audio"]
        assert bool(sample["text_mask"].any()) == record["has_text"]
        assert sample["label"] == record["label"]


def test_corpus_records_keep_every_field_with_absolute_paths(corpus: Path, tmp_path: Path) -> None:
    for split in ("train", "test"):
        raw, records = read_manifest(corpus, split), demo_corpus.corpus_records(corpus, split)
        assert len(records) == len(raw) > 0
        for record, line in zip(records, raw):
            assert {k: record[k] for k in line} == line  # every manifest field, unchanged
            assert record["path"] == corpus / split / line["video"] and record["path"].is_file()
            if line["caption"]:
                assert record["caption_path"] == corpus / split / line["caption"] and record["caption_path"].is_file()
            else:
                assert record["caption_path"] is None
    assert any(r["caption_path"] is None for r in demo_corpus.corpus_records(corpus, "test"))
    with pytest.raises(ValueError, match="split"):
        demo_corpus.corpus_records(corpus, "val")
    with pytest.raises(FileNotFoundError, match="no demo corpus"):
        demo_corpus.corpus_records(tmp_path, "train")
