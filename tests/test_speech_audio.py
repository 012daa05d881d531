import io
import math
import re

import numpy as np
import pytest
import soundfile
import torch

from oracle_kd.tasks.speech.audio import (
    HOP_LENGTH,
    N_FFT,
    N_MELS,
    SAMPLE_RATE,
    WIN_LENGTH,
    LogMel,
    load_audio,
    mel_filterbank,
    spec_augment,
)


def sine(freq, seconds, sr=SAMPLE_RATE, amplitude=0.5):
    t = np.arange(int(seconds * sr)) / sr
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def chirp(seconds=1.0, f0=100.0, f1=7000.0):
    """A linear sweep through most of the band, so every mel bin gets energy."""
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    return (0.5 * np.sin(2 * np.pi * (f0 * t + 0.5 * (f1 - f0) * t**2 / seconds))).astype(np.float32)


def features_of(*waves, frontend=None):
    """Pad `waves` into one batch and run the front end: (features, frame_lengths)."""
    lengths = torch.tensor([len(w) for w in waves])
    batch = torch.zeros(len(waves), int(lengths.max()))
    for row, w in enumerate(waves):
        batch[row, : len(w)] = torch.from_numpy(w)
    return (frontend or LogMel())(batch, lengths)


# --- the signal constants ------------------------------------------------------


def test_frames_are_10_ms_with_25_ms_windows():
    assert SAMPLE_RATE // HOP_LENGTH == 100
    assert WIN_LENGTH / SAMPLE_RATE == 0.025
    assert N_FFT >= WIN_LENGTH


# --- against librosa -----------------------------------------------------------


def test_filterbank_matches_librosa():
    librosa = pytest.importorskip("librosa")
    ours = mel_filterbank(N_FFT // 2 + 1, N_MELS, SAMPLE_RATE)
    reference = librosa.filters.mel(sr=SAMPLE_RATE, n_fft=N_FFT, n_mels=N_MELS)
    assert ours.shape == (N_MELS, N_FFT // 2 + 1) == reference.shape
    np.testing.assert_allclose(ours.numpy(), reference, rtol=1e-5, atol=1e-7)


def test_log_mel_matches_librosa_melspectrogram():
    librosa = pytest.importorskip("librosa")
    wave = chirp()
    reference = librosa.feature.melspectrogram(
        y=wave, sr=SAMPLE_RATE, n_fft=N_FFT, hop_length=HOP_LENGTH, win_length=WIN_LENGTH,
        n_mels=N_MELS, power=2, center=True, htk=False, norm="slaney",
    )  # (N_MELS, frames)
    ours, frame_lengths = LogMel().log_mel(torch.from_numpy(wave)[None], torch.tensor([len(wave)]))
    assert ours.shape == (1, reference.shape[1], N_MELS)
    assert frame_lengths.tolist() == [reference.shape[1]]
    np.testing.assert_allclose(ours[0].numpy().T, np.log(reference + 1e-6), atol=2e-3)


# --- frames, normalisation, padding --------------------------------------------


def test_frame_count_is_one_plus_samples_over_hop():
    waves = [np.full(n, 0.1, np.float32) for n in (1, 159, 160, SAMPLE_RATE)]
    features, frame_lengths = features_of(*waves)
    assert frame_lengths.tolist() == [1, 1, 2, 101]
    assert features.shape == (4, 101, N_MELS)


def test_each_utterance_is_normalised_over_its_valid_frames_only():
    features, frame_lengths = features_of(chirp(1.0), sine(440, 0.4) + 0.01 * chirp(0.4))
    for row, n in enumerate(frame_lengths.tolist()):
        valid = features[row, :n]
        np.testing.assert_allclose(valid.mean(0).numpy(), 0.0, atol=1e-4)
        np.testing.assert_allclose(valid.std(0, unbiased=False).numpy(), 1.0, atol=1e-3)
        assert torch.all(features[row, n:] == 0)


def test_padding_does_not_change_a_shorter_utterance():
    short, long = chirp(0.37), chirp(1.0, f0=300)
    alone, alone_lengths = features_of(short)
    batched, batch_lengths = features_of(long, short)
    n = int(alone_lengths[0])
    assert batch_lengths[1] == n
    torch.testing.assert_close(batched[1, :n], alone[0, :n], atol=1e-4, rtol=1e-4)


def test_samples_beyond_lengths_are_ignored():
    wave = torch.from_numpy(chirp(0.5))[None]
    noisy_tail = torch.cat([wave, torch.ones(1, 3000)], dim=1)
    clean, n = LogMel()(wave, torch.tensor([wave.shape[1]]))
    dirty, _ = LogMel()(noisy_tail, torch.tensor([wave.shape[1]]))
    torch.testing.assert_close(dirty[0, : n[0]], clean[0], atol=1e-4, rtol=1e-4)


def test_a_sine_peaks_in_the_mel_bin_of_its_frequency():
    from oracle_kd.tasks.speech.audio import _hz_to_mel, _mel_to_hz

    edges = _mel_to_hz(np.linspace(0, _hz_to_mel(SAMPLE_RATE / 2), N_MELS + 2))
    for freq in (250.0, 1000.0, 4000.0):
        log_mel, _ = LogMel().log_mel(torch.from_numpy(sine(freq, 0.5))[None], torch.tensor([8000]))
        peak = int(log_mel[0].mean(0).argmax())
        assert edges[peak] < freq < edges[peak + 2]  # inside the peak filter's triangle


def test_the_exported_graphs_two_step_dft_gives_the_stft_mel_power():
    from oracle_kd.tasks.speech.audio import dft_bases, dft_mel_power

    frontend = LogMel()
    for n in (1, 159, 160, 8000, 8161):  # frame counts 1 + n // 160 on both sides of a hop
        wave = torch.from_numpy(chirp(n / SAMPLE_RATE))[None] if n > 1 else torch.ones(1, 1)
        expected = frontend.mel_basis @ frontend._power_spectrum(wave)
        found = dft_mel_power(wave, *dft_bases(frontend.window, frontend.mel_basis))
        assert found.shape == expected.shape == (1, N_MELS, 1 + n // 160)
        np.testing.assert_allclose(found.numpy(), expected.numpy(), rtol=1e-3, atol=1e-5 * float(expected.max()))


def test_the_two_step_dft_of_a_pure_tone_is_its_bin():
    from oracle_kd.tasks.speech.audio import N_FFT, dft_bases, dft_mel_power

    # a cosine at bin 37 (= q 5 + Q 32 x j 1) under a flat 400-sample window, the identity for
    # a mel filterbank: frame 3 reads samples 3 x 160 - 200 = 280 to 679, and its bin 37 is
    # sum_m cos(2 pi 37 (280 + m) / 512) exp(-2 pi i 37 m / 512), worked out here in float64
    first, second, mel = dft_bases(torch.ones(400), torch.eye(257))
    s = torch.arange(1000, dtype=torch.float64)
    power = dft_mel_power(torch.cos(2 * math.pi * 37 * s / N_FFT).float()[None], first, second, mel)[0, :, 3]
    m = torch.arange(400, dtype=torch.float64)
    exact = (torch.cos(2 * math.pi * 37 * (280 + m) / N_FFT) * torch.exp(-2j * math.pi * 37 * m / N_FFT)).sum()
    assert int(power.argmax()) == 37
    assert float(power[37]) == pytest.approx(abs(complex(exact)) ** 2, rel=1e-4)


@pytest.mark.filterwarnings("ignore")  # the TorchScript exporter's deprecation notices
def test_front_end_exports_to_onnx_and_agrees(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    frontend = LogMel().eval()
    waves = torch.from_numpy(np.stack([chirp(0.5), np.pad(sine(440, 0.3), (0, 3200))]))
    lengths = torch.tensor([8000, 4800])
    path = tmp_path / "frontend.onnx"
    torch.onnx.export(frontend, (waves, lengths), str(path), input_names=["waveform", "lengths"],
                      output_names=["features", "frame_lengths"], opset_version=17, dynamo=False,
                      dynamic_axes={"waveform": {0: "batch", 1: "samples"}, "lengths": {0: "batch"}})
    session = ort.InferenceSession(str(path))
    features, frame_lengths = session.run(None, {"waveform": waves.numpy(), "lengths": lengths.numpy()})
    expected, expected_lengths = frontend(waves, lengths)
    np.testing.assert_array_equal(frame_lengths, expected_lengths.numpy())
    np.testing.assert_allclose(features, expected.numpy(), atol=1e-3)


# --- SpecAugment ---------------------------------------------------------------


def test_spec_augment_masks_bands_and_spans_inside_valid_frames():
    features, frame_lengths = features_of(chirp(1.0), chirp(0.6))
    generator = torch.Generator().manual_seed(0)
    masked = spec_augment(features, frame_lengths, generator, freq_masks=2, freq_width=15, time_masks=2,
                          time_width=0.05)
    assert masked.shape == features.shape and not torch.equal(masked, features)
    for row, n in enumerate(frame_lengths.tolist()):
        zeroed = (masked[row, :n] == 0) & (features[row, :n] != 0)
        masked_bins = zeroed.all(dim=0).sum()
        masked_frames = zeroed.all(dim=1).sum()
        assert masked_bins <= 2 * 15
        assert masked_frames <= 2 * int(0.05 * n)
        assert torch.all(masked[row, n:] == 0)


def test_spec_augment_is_reproducible_and_leaves_its_input_alone():
    features, frame_lengths = features_of(chirp(1.0))
    before = features.clone()
    first = spec_augment(features, frame_lengths, torch.Generator().manual_seed(3))
    second = spec_augment(features, frame_lengths, torch.Generator().manual_seed(3))
    assert torch.equal(first, second)
    assert torch.equal(features, before)


# --- load_audio ------------------------------------------------------------------


def test_stereo_is_averaged_to_mono(tmp_path):
    left, right = sine(440, 0.25), sine(660, 0.25)
    soundfile.write(tmp_path / "stereo.wav", np.stack([left, right], axis=1), SAMPLE_RATE, subtype="FLOAT")
    audio = load_audio(tmp_path / "stereo.wav")
    assert audio.dtype == np.float32 and audio.ndim == 1
    np.testing.assert_allclose(audio, (left + right) / 2, atol=1e-6)


@pytest.mark.parametrize("rate", [8000, 22050, 44100])
def test_other_sample_rates_are_resampled_to_16_khz(tmp_path, rate):
    soundfile.write(tmp_path / "a.wav", sine(440, 0.5, sr=rate), rate)
    audio = load_audio(tmp_path / "a.wav")
    assert abs(len(audio) - SAMPLE_RATE // 2) <= 1
    spectrum = np.abs(np.fft.rfft(audio))
    assert abs(np.argmax(spectrum) * SAMPLE_RATE / len(audio) - 440) < 3  # still a 440 Hz tone


def wav_bytes(wave):
    buffer = io.BytesIO()
    soundfile.write(buffer, wave, SAMPLE_RATE, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def flac_bytes(wave):
    buffer = io.BytesIO()
    soundfile.write(buffer, wave, SAMPLE_RATE, format="FLAC", subtype="PCM_16")
    return buffer.getvalue()


BAD_FILES = [
    (b"", "empty audio file (0 bytes)"),
    (b"this is not audio at all", "unreadable audio"),
    (wav_bytes(np.zeros(0, np.float32)), "empty audio (0 samples)"),
    (wav_bytes(sine(440, 0.5))[:8000], "truncated audio"),
    (flac_bytes(chirp(1.0))[:5000], "truncated or corrupt audio"),
]


@pytest.mark.parametrize("data, reason", BAD_FILES)
def test_bad_audio_files_raise_value_error_with_the_reason(tmp_path, data, reason):
    (tmp_path / "bad.wav").write_bytes(data)
    with pytest.raises(ValueError, match=re.escape(reason)):
        load_audio(tmp_path / "bad.wav")


def test_missing_audio_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_audio(tmp_path / "nope.wav")


class CountingFrontEnd(LogMel):
    def __init__(self):
        super().__init__()
        self.utterances = 0

    def forward(self, waveform, lengths):
        self.utterances += len(lengths)
        return super().forward(waveform, lengths)


def utterance(source, seconds, freq=440.0, augment=False):
    return {"audio": sine(freq, seconds), "text": "a", "source": source, "augment": augment}


def test_feature_cache_computes_each_utterance_once_and_keeps_it_unaugmented():
    from oracle_kd.tasks.speech.task import FeatureCache

    frontend = CountingFrontEnd()
    cache = FeatureCache(frontend)
    a, b, c = utterance("a.wav", 0.5), utterance("b.wav", 0.3, 880.0), utterance("c.wav", 0.2, 220.0)
    first, first_lengths = cache([a, b])
    assert frontend.utterances == 2 and first_lengths.tolist() == [51, 31]  # 1 + samples // 160
    again, again_lengths = cache([b, c, a])  # only c is new; the batch is padded to a's 51 frames
    assert frontend.utterances == 3 and again_lengths.tolist() == [31, 21, 51] and again.shape == (3, 51, N_MELS)
    torch.testing.assert_close(again[2], first[0])
    torch.testing.assert_close(again[0, :31], first[1, :31])
    assert float(again[0, 31:].abs().sum()) == 0 and float(again[1, 21:].abs().sum()) == 0  # padding stays zero
    alone, _ = features_of(sine(220.0, 0.2))
    torch.testing.assert_close(again[1, :21], alone[0], atol=1e-4, rtol=1e-4)
    assert cache.bytes == (51 + 31 + 21) * N_MELS * 4


def test_feature_cache_keeps_nothing_past_its_limit_or_without_a_source():
    from oracle_kd.tasks.speech.task import FeatureCache

    frontend = CountingFrontEnd()
    cache = FeatureCache(frontend, limit_mb=0)
    cache([utterance("a.wav", 0.5)])
    cache([utterance("a.wav", 0.5)])
    assert frontend.utterances == 2 and cache.bytes == 0
    cache = FeatureCache(frontend)
    for _ in range(2):
        cache([utterance("", 0.5), utterance(None, 0.5)])
    assert frontend.utterances == 6 and cache.kept == {}
    first, _ = cache([utterance("a.wav", 0.5)])
    other, _ = cache([utterance("a.wav", 0.5, freq=880.0)])  # the same name, other samples: not served stale
    assert frontend.utterances == 8 and len(cache.kept) == 2 and not torch.allclose(first, other)


def test_speech_collate_augments_a_copy_of_the_kept_features():
    from oracle_kd.tasks import get_task

    task = get_task("speech")
    clean = task.collate([utterance("a.wav", 1.0)]).sources
    (key,) = task.features.kept
    kept = task.features.kept[key].clone()
    augmented = task.collate([utterance("a.wav", 1.0, augment=True)]).sources
    assert not torch.equal(augmented, clean)  # SpecAugment masked something
    torch.testing.assert_close(task.features.kept[key], kept, atol=0, rtol=0)  # the kept copy is untouched
    torch.testing.assert_close(task.collate([utterance("a.wav", 1.0)]).sources, clean, atol=0, rtol=0)


def test_speech_collate_augments_only_the_rows_that_ask():
    from oracle_kd.tasks import get_task

    task = get_task("speech")
    a, b = utterance("a.wav", 1.0), utterance("b.wav", 0.8, 880.0)
    clean = task.collate([a, b]).sources
    mixed = task.collate([a, {**b, "augment": True}]).sources
    torch.testing.assert_close(mixed[0], clean[0], atol=0, rtol=0)
    assert not torch.equal(mixed[1], clean[1])
    both = task.collate([{**a, "augment": True}, {**b, "augment": True}]).sources
    assert not torch.equal(both[0], clean[0]) and not torch.equal(both[1], clean[1])
    assert float(both[1, 81:].abs().sum()) == 0  # padding stays zero (b: 1 + 12800 // 160 frames)


def test_char_spans_give_each_character_its_words_span():
    from oracle_kd.tasks.speech.task import char_spans

    spans = char_spans(" ab  c d", [[0.0, 0.5], [0.5, 0.75]])  # three words, two spans: "d" has none
    nan = float("nan")
    expected = torch.tensor([[nan, nan], [0.0, 0.5], [0.0, 0.5], [nan, nan], [nan, nan], [0.5, 0.75],
                             [nan, nan], [nan, nan]])
    torch.testing.assert_close(spans, expected, equal_nan=True, atol=0, rtol=0)
    assert char_spans("", []).shape == (0, 2)
    torch.testing.assert_close(char_spans("é😀", [[1.0, 2.0]]), torch.tensor([[1.0, 2.0], [1.0, 2.0]]))
