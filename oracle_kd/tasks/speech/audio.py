"""What audio is to the models: 16 kHz mono samples, then normalised log-mel frames.

Training, evaluation, `recognize` and export all go through `load_audio` and
`LogMel`, so every stage sees the same features. The filterbank and the
spectrogram follow librosa's defaults (Slaney mel scale and area
normalisation, periodic Hann window, zero padding for `center=True`), and the
tests check them against librosa, which is not needed at runtime.
"""

from __future__ import annotations

import math
import struct
from pathlib import Path

import numpy as np
import soundfile
import soxr
import torch

SAMPLE_RATE = 16000  # samples per second; every file is resampled to this on loading
N_FFT = 512  # FFT size: 32 ms, the power of two above WIN_LENGTH
WIN_LENGTH = 400  # 25 ms analysis window (zero-padded to N_FFT)
HOP_LENGTH = 160  # 10 ms between feature frames
N_MELS = 80  # mel bins per frame
N_FREQS = N_FFT // 2 + 1  # 257 spectrum bins, 0 Hz to SAMPLE_RATE / 2
LOG_FLOOR = 1e-6  # added to the mel power before the log, so silence stays finite
MAX_SAMPLES = 1 << 28  # samples x channels decoded from one file (1 GiB as float32; 4.6 h of 16 kHz mono)
RATES = (1000, 768_000)  # sample rates (Hz) accepted; a forged 1 Hz header would ask for 16,000x upsampling


def load_audio(path: str | Path) -> np.ndarray:
    """A WAV/FLAC (anything libsndfile reads) file -> float32 mono samples at SAMPLE_RATE.

    Channels are averaged; other sample rates are resampled with soxr. Raises
    FileNotFoundError for a missing file, IsADirectoryError for a folder, and ValueError, with the reason, for a
    file that is not a regular file, empty, unreadable, truncated, holds no samples, or would
    decode to more than MAX_SAMPLES or from a rate outside RATES (checked from the header,
    before decoding). `stream.read_blocks` reads a file the same way, a block at a time.
    """
    file, size = open_audio(path)
    with file:
        if size == 0:
            raise ValueError("empty audio file (0 bytes)")
        data, declared, rate = _decode(file)
        missing = _wav_missing_bytes(file, size)
    if len(data) < declared:
        raise ValueError(
            f"truncated audio: the header declares {declared} samples, the file holds {len(data)}"
        )
    if missing:
        raise ValueError(
            f"truncated audio: the WAV header declares {missing} more bytes than the file holds"
        )
    if len(data) == 0:
        raise ValueError("empty audio (0 samples)")
    return np.ascontiguousarray(_mono_16k(data, rate), dtype=np.float32)


def read_header(path: str | Path, whole: bool = True) -> tuple[int, int]:
    """(samples per channel the header declares, sample rate) of an audio file, after the
    checks `load_audio` makes before decoding (same errors; with `whole` false, the file's
    size is not checked: `load_segment` checks the segment's); no sample is decoded."""
    file, size = open_audio(path)
    with file:
        if size == 0:
            raise ValueError("empty audio file (0 bytes)")
        with open_sound(file) as f:
            if whole:
                _check_size(f.frames, f.samplerate, f.channels)
            return f.frames, f.samplerate


def load_segment(path: str | Path, start: float, end: float | None) -> np.ndarray:
    """Seconds `start` .. `end` (None: the end of the file) of an audio file, as `load_audio`
    gives them, decoding only that part: a manifest's segments of an hour-long recording
    cost their own length, not the recording's. The segment is
    `round(start * SAMPLE_RATE)` .. `round(end * SAMPLE_RATE)` at 16 kHz; another rate is
    resampled from the source samples that cover it (edges may differ from resampling the
    whole file by the resampler's few-sample transient). Raises `load_audio`'s errors, for
    the segment: a segment the file holds fewer samples of than its header promises is
    truncated audio."""
    file, size = open_audio(path)
    with file:
        if size == 0:
            raise ValueError("empty audio file (0 bytes)")
        with open_sound(file) as f:
            rate, declared, channels = f.samplerate, f.frames, f.channels
            native = rate == SAMPLE_RATE  # else the source samples around the segment, trimmed when resampled
            first = round(start * rate) if native else math.floor(start * rate)
            last = declared if end is None else min(declared, round(end * rate) if native else math.ceil(end * rate))
            if first >= last:
                raise ValueError(f"segment {start:g}-{end if end is not None else declared / rate:g} s "
                                 f"holds no samples (the audio is {declared / rate:.2f} s long)")
            _check_size(last - first, rate, channels)
            data = _read(f, first, last - first)
    if len(data) < last - first:
        raise ValueError(f"truncated audio: the header declares {declared} samples, the file holds "
                         f"{first + len(data)}")
    audio = _mono_16k(data, rate)
    if rate != SAMPLE_RATE:
        skip = round(start * SAMPLE_RATE) - round(first * SAMPLE_RATE / rate)  # the rounding of `first`
        stop = round(declared * SAMPLE_RATE / rate) if end is None else round(end * SAMPLE_RATE)
        audio = audio[max(skip, 0): max(skip, 0) + stop - round(start * SAMPLE_RATE)]
    return np.ascontiguousarray(audio, dtype=np.float32)


def open_audio(path: str | Path, limit: int | None = None):
    """(binary file, size in bytes) of the regular file at `path` (at most `limit` bytes;
    default the safety module's limit), with load_audio's errors."""
    from oracle_kd.safety import FOLDER, MAX_FILE_BYTES, NOT_FOUND, BadFile, open_regular

    path = Path(path)
    try:
        return open_regular(path, MAX_FILE_BYTES if limit is None else limit)
    except BadFile as e:
        if e.reason == NOT_FOUND:
            raise FileNotFoundError(f"audio file not found: {path}") from None
        if e.reason == FOLDER:
            raise IsADirectoryError(f"a folder, not an audio file: {path}") from None
        raise ValueError(f"cannot read audio file ({e.reason})") from None


def open_sound(file) -> soundfile.SoundFile:
    """libsndfile's reader of an open file, its sample rate checked against RATES."""
    try:
        f = soundfile.SoundFile(file)
    except (soundfile.SoundFileError, RuntimeError) as e:
        raise ValueError(f"unreadable audio ({_libsndfile_reason(e)})") from None
    if not RATES[0] <= f.samplerate <= RATES[1]:
        f.close()
        raise ValueError(f"sample rate {f.samplerate:,} Hz in the header, outside {RATES[0]:,}-{RATES[1]:,} Hz")
    return f


def _decode(file) -> tuple[np.ndarray, int, int]:
    """(samples (frames, channels) float32, frames the header declares, sample rate) of an open file."""
    with open_sound(file) as f:
        declared, rate = f.frames, f.samplerate
        _check_size(declared, rate, f.channels)
        data = _read(f, 0, declared)
    return data, declared, rate


def _read(f: soundfile.SoundFile, first: int, frames: int) -> np.ndarray:
    """Samples (frames, channels) float32 of an open file from frame `first` on, or ValueError."""
    try:
        if first:
            f.seek(first)
        return f.read(frames=frames, dtype="float32", always_2d=True)
    except (soundfile.SoundFileError, RuntimeError) as e:
        raise ValueError(f"truncated or corrupt audio: decoding failed ({_libsndfile_reason(e)})") from None


def _mono_16k(data: np.ndarray, rate: int) -> np.ndarray:
    """Decoded samples (frames, channels) at `rate`, checked finite, averaged to mono, at SAMPLE_RATE."""
    if not np.isfinite(data).all():
        raise ValueError("audio holds NaN or infinite samples")
    audio = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    return soxr.resample(audio, rate, SAMPLE_RATE) if rate != SAMPLE_RATE else audio


def _check_size(declared: int, rate: int, channels: int) -> None:
    """ValueError unless a file of this header decodes (and resamples) to at most MAX_SAMPLES."""
    if max(declared * channels, declared * max(1, SAMPLE_RATE / rate)) > MAX_SAMPLES:
        hours = declared / rate / 3600
        raise ValueError(f"the header declares {declared:,} samples x {channels} channels ({hours:.3g} h), "
                         f"more than the limit of {MAX_SAMPLES:,} samples for one file")


def feature_frames(samples):
    """Log-mel frames of `samples` samples (an int or a tensor): centred every HOP_LENGTH from sample 0."""
    return 1 + samples // HOP_LENGTH


def mel_filterbank(
    n_freqs: int = N_FREQS, n_mels: int = N_MELS, sample_rate: int = SAMPLE_RATE
) -> torch.Tensor:
    """Triangular mel filters (n_mels, n_freqs) over 0 Hz .. sample_rate / 2.

    Slaney's mel scale (linear below 1 kHz, logarithmic above) with each
    triangle scaled to unit area in Hz ("slaney" norm): the same matrix as
    `librosa.filters.mel(sr=sample_rate, n_fft=2 * (n_freqs - 1), n_mels=n_mels)`.
    """
    fft_hz = np.linspace(0.0, sample_rate / 2, n_freqs)
    edges_hz = _mel_to_hz(np.linspace(0.0, _hz_to_mel(sample_rate / 2), n_mels + 2))
    widths = np.diff(edges_hz)
    ramps = edges_hz[:, None] - fft_hz[None, :]  # (n_mels + 2, n_freqs)
    rising = -ramps[:-2] / widths[:-1, None]
    falling = ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(rising, falling))
    weights *= (2.0 / (edges_hz[2:] - edges_hz[:-2]))[:, None]
    return torch.from_numpy(weights.astype(np.float32))


class LogMel(torch.nn.Module):
    """waveform (batch, samples), lengths (batch,) -> features (batch, frames, N_MELS), frame_lengths.

    Frames are centred on samples 0, HOP_LENGTH, 2 * HOP_LENGTH, ... with zero
    padding beyond both ends (`center=True`), so `samples` samples give
    `frames = 1 + samples // HOP_LENGTH` frames; the batch has
    `1 + waveform.shape[1] // HOP_LENGTH`. Each utterance is normalised to zero
    mean and unit variance per mel bin over its own valid frames; padding takes
    no part in the statistics and comes out as zeros. Samples beyond `lengths`
    are zeroed first, so an utterance gets the same features alone or padded
    in a batch.
    """

    def __init__(self):
        super().__init__()
        # Buffers, not constants: they follow .to(device) and are stored in
        # ONNX graphs; persistent=False keeps them out of checkpoints.
        self.register_buffer("window", torch.hann_window(WIN_LENGTH), persistent=False)
        self.register_buffer("mel_basis", mel_filterbank(N_FREQS, N_MELS, SAMPLE_RATE), persistent=False)
        for name, basis in zip(("dft_first", "dft_second", "dft_mel"), dft_bases(self.window, self.mel_basis)):
            self.register_buffer(name, basis, persistent=False)

    def forward(self, waveform: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features, frame_lengths = self.log_mel(waveform, lengths)
        return normalize_per_utterance(features, frame_lengths), frame_lengths

    def log_mel(self, waveform: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The features before normalisation: log(mel power + LOG_FLOOR), padding not yet zeroed."""
        samples = torch.arange(waveform.shape[1], device=waveform.device)
        waveform = waveform * (samples[None, :] < lengths[:, None]).to(waveform.dtype)
        if torch.onnx.is_in_onnx_export():
            mel = dft_mel_power(waveform, self.dft_first, self.dft_second, self.dft_mel)
        else:
            mel = torch.matmul(self.mel_basis, self._power_spectrum(waveform))  # (batch, N_MELS, frames)
        return torch.log(mel + LOG_FLOOR).transpose(1, 2), feature_frames(lengths)

    def _power_spectrum(self, waveform: torch.Tensor) -> torch.Tensor:
        kwargs = dict(n_fft=N_FFT, hop_length=HOP_LENGTH, win_length=WIN_LENGTH, window=self.window,
                      center=True, pad_mode="constant")
        spectrum = torch.stft(waveform, return_complex=True, **kwargs)
        # re^2 + im^2: bit-identical to view_as_real(...).pow(2).sum(-1), and
        # several times faster (no reduction over a strided last axis).
        return spectrum.real.square() + spectrum.imag.square()


DFT_SPLIT = 16  # exported graphs' DFT: N_FFT = DFT_SPLIT x (N_FFT // DFT_SPLIT); HOP_LENGTH is a multiple


def dft_bases(window: torch.Tensor, mel_basis: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The constant matrices of `dft_mel_power`, for `window` and `mel_basis` (n_mels, N_FREQS).

    One Cooley-Tukey step, with R = DFT_SPLIT and Q = N_FFT // R: a sample n = R a + r (residue
    r < R, a < TAPS) and a bin k = q + Q j (q < Q, j <= (N_FREQS - 1) // Q) give
    W^(n k) = W^(n q) W_R^(r j) (W = exp(-2 pi i / N_FFT), W_R = W^Q). So
        X[q + Q j] = sum_r W_R^(r j) sum_a w[n] x[n] W^(n q),
    an inner DFT of every residue's TAPS samples (window and twiddles folded into its
    weights: `first`, (R * 2 * Q, 1, TAPS), rows (r, re/im, q)) and an outer R-point DFT,
    the same for every q (`second`, (2 * J, 2 * R), rows (re/im, j), columns (r, re/im)).
    `mel` is `mel_basis` with its columns in the (j, q) order of the bins, 0 beyond N_FREQS."""
    f64 = torch.float64
    taps = math.ceil(WIN_LENGTH / DFT_SPLIT)
    inner, outer = N_FFT // DFT_SPLIT, (N_FREQS - 1) // (N_FFT // DFT_SPLIT) + 1
    a, q, r, j = (torch.arange(n, dtype=f64) for n in (taps, inner, DFT_SPLIT, outer))
    padded_window = torch.zeros(taps * DFT_SPLIT, dtype=f64)
    padded_window[:WIN_LENGTH] = window.to(f64)
    n = DFT_SPLIT * a[None, :] + r[:, None]  # (R, TAPS): the sample of residue r's tap a
    angle = 2 * math.pi * n[:, None, :] * q[None, :, None] / N_FFT  # (R, Q, TAPS)
    first = torch.stack([torch.cos(angle), -torch.sin(angle)], 1) * padded_window[n.long()][:, None, None, :]
    turn = 2 * math.pi * r[:, None] * j[None, :] / DFT_SPLIT  # (R, J)
    cos, sin = torch.cos(turn), torch.sin(turn)
    # (u + iv)(cos - i sin) = (u cos + v sin) + i (v cos - u sin); inputs ordered (r, [u, v])
    second = torch.cat([torch.stack([cos, sin], 1), torch.stack([-sin, cos], 1)], 2).reshape(2 * DFT_SPLIT, 2 * outer)
    bins = (q[None, :] + inner * j[:, None]).long().reshape(-1)  # (J * Q,), j-major
    mel = torch.zeros(mel_basis.shape[0], len(bins), dtype=f64)
    mel[:, bins < N_FREQS] = mel_basis.to(f64)[:, bins[bins < N_FREQS]]
    return first.reshape(-1, 1, taps).float(), second.t().contiguous().float(), mel.float()


def dft_mel_power(waveform: torch.Tensor, first: torch.Tensor, second: torch.Tensor, mel: torch.Tensor) -> torch.Tensor:
    """`LogMel`'s mel power (batch, n_mels, frames) without an FFT: what exported graphs use,
    because ONNX Runtime's STFT ran the front end at a third of eager PyTorch's speed. The
    DFT of `dft_bases` in two steps, a grouped strided convolution and one matrix product:
    44k multiply-adds a frame against 206k for the DFT as one convolution (and 1.8x faster
    in ONNX Runtime). The same numbers as torch.stft up to float32 rounding."""
    batch, frames = waveform.shape[0], waveform.shape[1] // HOP_LENGTH + 1
    taps, hop_rows = first.shape[-1], HOP_LENGTH // DFT_SPLIT
    # frame t covers padded samples [t * HOP, t * HOP + N_FFT), its window from (N_FFT - WIN_LENGTH) // 2
    # on; a shift of the window turns each bin's phase, not its power, so frames start at the first tap
    pad = N_FFT // 2 - (N_FFT - WIN_LENGTH) // 2
    padded = torch.nn.functional.pad(waveform, (pad, pad))
    rows = padded[:, : DFT_SPLIT * (hop_rows * (frames - 1) + taps)].reshape(batch, -1, DFT_SPLIT)
    inner = torch.nn.functional.conv1d(rows.transpose(1, 2), first, stride=hop_rows, groups=DFT_SPLIT)
    spectrum = torch.matmul(second, inner.reshape(batch, 2 * DFT_SPLIT, -1))  # (batch, 2 * J, Q * frames)
    outer = spectrum.shape[1] // 2
    power = spectrum[:, :outer].square() + spectrum[:, outer:].square()
    return torch.matmul(mel, power.reshape(batch, -1, frames))


def normalize_per_utterance(
    features: torch.Tensor, frame_lengths: torch.Tensor, eps: float = 1e-5
) -> torch.Tensor:
    """(batch, frames, bins) -> zero mean, unit (population) std per bin over valid frames; padding -> 0."""
    frames = torch.arange(features.shape[1], device=features.device)
    valid = (frames[None, :] < frame_lengths[:, None]).to(features.dtype)[:, :, None]  # (batch, frames, 1)
    count = valid.sum(dim=1, keepdim=True).clamp(min=1)
    mean = (features * valid).sum(dim=1, keepdim=True) / count
    centred = (features - mean) * valid
    std = (centred.pow(2).sum(dim=1, keepdim=True) / count).sqrt()
    return centred / (std + eps)


def spec_augment(
    features: torch.Tensor,
    frame_lengths: torch.Tensor,
    generator: torch.Generator | None = None,
    freq_masks: int = 2,
    freq_width: int = 15,
    time_masks: int = 2,
    time_width: float = 0.05,
) -> torch.Tensor:
    """SpecAugment (Park et al., 2019) without time warping, for training only.

    features (batch, frames, bins) after normalisation, so a masked value of 0
    is the utterance's mean. Each utterance gets `freq_masks` bands of 0 to
    `freq_width` mel bins and `time_masks` spans of 0 to `time_width` times its
    own valid length, placed inside its valid frames. Returns a new tensor.
    """
    batch, n_frames, n_bins = features.shape
    device = features.device

    def uniform(shape):
        return torch.rand(shape, generator=generator).to(device)

    bins = torch.arange(n_bins, device=device)
    width = (uniform((batch, freq_masks)) * (freq_width + 1)).floor().clamp(max=n_bins)
    start = (uniform((batch, freq_masks)) * (n_bins - width + 1)).floor()
    freq_mask = ((bins >= start[..., None]) & (bins < (start + width)[..., None])).any(dim=1)

    frames = torch.arange(n_frames, device=device)
    lengths = frame_lengths.to(device=device, dtype=torch.float32)[:, None]
    width = (uniform((batch, time_masks)) * ((time_width * lengths).floor() + 1)).floor()
    start = (uniform((batch, time_masks)) * (lengths - width + 1)).floor()
    time_mask = ((frames >= start[..., None]) & (frames < (start + width)[..., None])).any(dim=1)

    # freq_mask (batch, bins), time_mask (batch, frames): two broadcast products, several times
    # cheaper than filling through their (batch, frames, bins) union (features are finite)
    keep_bins = (~freq_mask).to(features.dtype)[:, None, :]
    keep_frames = (~time_mask).to(features.dtype)[:, :, None]
    return (features * keep_bins).mul_(keep_frames)  # one new tensor, not two


# --- helpers -------------------------------------------------------------------

# Slaney's mel scale (Auditory Toolbox): 200/3 Hz per mel up to 1 kHz (15 mels),
# then 27 mels per factor 6.4 in frequency.
_F_SP = 200.0 / 3
_MIN_LOG_HZ = 1000.0
_MIN_LOG_MEL = _MIN_LOG_HZ / _F_SP
_LOG_STEP = np.log(6.4) / 27.0


def _hz_to_mel(hz):
    hz = np.asarray(hz, dtype=np.float64)
    log_part = _MIN_LOG_MEL + np.log(np.maximum(hz, _MIN_LOG_HZ) / _MIN_LOG_HZ) / _LOG_STEP
    return np.where(hz >= _MIN_LOG_HZ, log_part, hz / _F_SP)


def _mel_to_hz(mel):
    mel = np.asarray(mel, dtype=np.float64)
    log_part = _MIN_LOG_HZ * np.exp(_LOG_STEP * (np.maximum(mel, _MIN_LOG_MEL) - _MIN_LOG_MEL))
    return np.where(mel >= _MIN_LOG_MEL, log_part, mel * _F_SP)


def _libsndfile_reason(error: Exception) -> str:
    """libsndfile's own words, without the "Error opening <path>:" prefix soundfile adds."""
    reason = getattr(error, "error_string", None) or str(error)
    return reason.strip().rstrip(".")


def _wav_missing_bytes(f, file_size: int) -> int:
    """Bytes the RIFF/WAVE `data` chunk of the open file `f` declares beyond its end (0 if none, or not a WAV).

    libsndfile reads a cut-off WAV without complaint, returning only the
    samples that are there; the chunk header still tells the intended size.
    """
    f.seek(0)
    head = f.read(12)
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return 0
    while True:
        chunk = f.read(8)
        if len(chunk) < 8:
            return 0
        chunk_id, size = chunk[:4], struct.unpack("<I", chunk[4:])[0]
        if chunk_id == b"data":
            # 0 and 0xFFFFFFFF mark "length unknown" (streamed writes, RF64).
            if size in (0, 0xFFFFFFFF):
                return 0
            return max(0, f.tell() + size - file_size)
        f.seek(size + (size & 1), 1)  # chunks are padded to even sizes
