"""Long recordings in bounded memory: `transcribe` reads a file a block at a time and
cuts it into overlapping windows; the core (`inference.stitched`) runs the model on
each window, keeps its middle frames and joins them, then decodes the joined frames.

Why the joined frames are the whole file's: a CTC frame depends only on the samples
within the model's receptive field around it (`models.receptive_field`, plus half an
FFT for the spectrogram). Each window reaches `context` CTC frames beyond the frames it
keeps, on both sides, with `context` covering that field, and starts on the CTC frame
grid (a whole number of HOP_LENGTH x stride samples), so a kept frame is computed from
the same samples at the same offsets as in one pass over the file. Dropping the
overlaps and decoding the concatenated posteriors (rather than decoding each window
and merging texts) never cuts a word at a window edge and lets beam search see the
whole file.

One difference from one pass remains, by design: LogMel normalises each input over its
own frames, so a window is normalised over its own ~half minute, not over the whole
file. Training normalised utterances of a few seconds, which a window resembles more
than an hour does; and the exported ONNX graph, which holds the front end, gives the
same frames as the checkpoint. Whole-file statistics would need a second pass and a
front end outside the graph.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import soundfile
import soxr

from oracle_kd.inference import Piece
from oracle_kd.tasks.speech.audio import (HOP_LENGTH, N_FFT, SAMPLE_RATE, _libsndfile_reason, _wav_missing_bytes,
                                          open_audio, open_sound)
from oracle_kd.tasks.speech.models import frame_stride, receptive_field

CHUNK_SECONDS = 30.0  # audio a window contributes frames for; the context on each side comes on top
BLOCK_FRAMES = 1 << 16  # file frames read at a time (4.1 s at 16 kHz)
# A streamed file is never held whole, so its size needs no cap (load_audio's is 1 GiB).
NO_SIZE_LIMIT = 1 << 62


@dataclass(frozen=True)
class Windows:
    """How a recording is cut: window k starts at sample `k * chunk * frame`, is
    `chunk + 2 * context` CTC frames long, and keeps its frames `context .. context + chunk`
    (the first window keeps from frame 0, the last to the file's end)."""

    chunk: int  # CTC frames each window keeps
    context: int  # CTC frames of context on each side of them
    frame: int  # samples per CTC frame: HOP_LENGTH x the model's stride

    @property
    def length(self) -> int:
        """Samples of a full window."""
        return (self.chunk + 2 * self.context) * self.frame

    @property
    def step(self) -> int:
        """Samples from one window's start to the next's."""
        return self.chunk * self.frame


def windows_for(model_cfg: dict, chunk_seconds: float = CHUNK_SECONDS) -> Windows:
    """The windows of a QuartzNet of config `model_cfg`: context covers its receptive field."""
    frame = HOP_LENGTH * frame_stride(model_cfg)
    reach = receptive_field(model_cfg) * HOP_LENGTH + N_FFT // 2  # samples each side a CTC frame reads
    return Windows(chunk=max(1, round(chunk_seconds * SAMPLE_RATE / frame)), context=math.ceil(reach / frame),
                   frame=frame)


def stream_windows(paths: list[str], windows: Windows, block: int = BLOCK_FRAMES) -> Iterator[Piece]:
    """The pieces of every file in order: its windows, or one error piece if it cannot be read
    (after the windows read before the problem showed; the core drops those)."""
    for path in paths:
        yield from file_windows(str(path), windows, block)


def file_windows(source: str, w: Windows, block: int) -> Iterator[Piece]:
    buffer, first = np.zeros(0, np.float32), 0  # buffer: the samples from the next window's start on
    try:
        for samples in read_blocks(source, block):
            buffer = np.concatenate([buffer, samples])
            while len(buffer) > w.length:  # a sample beyond this window: it is not the file's last
                yield Piece(source, {"audio": buffer[: w.length].copy(), "text": "", "source": source},
                            size=w.length / SAMPLE_RATE, keep=(first, w.context + w.chunk), last=False, full=True,
                            seconds=w.step / SAMPLE_RATE)
                buffer, first = buffer[w.step :], w.context
    except (OSError, ValueError, RuntimeError) as e:  # read_blocks' reasons name what is wrong
        yield Piece(source, error=str(e))
        return
    yield Piece(source, {"audio": buffer, "text": "", "source": source}, size=len(buffer) / SAMPLE_RATE,
                keep=(first, None), seconds=len(buffer) / SAMPLE_RATE)


def read_blocks(path: str, frames: int = BLOCK_FRAMES) -> Iterator[np.ndarray]:
    """float32 mono SAMPLE_RATE samples of an audio file, `frames` file frames at a time: the
    samples and the errors of `audio.load_audio`, in memory bounded by `frames`. A problem
    found only as the file is read (a decoding error, NaN, fewer frames than the header
    declares) raises after the blocks before it."""
    file, size = open_audio(path, limit=NO_SIZE_LIMIT)
    with file:
        if size == 0:
            raise ValueError("empty audio file (0 bytes)")
        missing = _wav_missing_bytes(file, size)  # the header alone tells, before any sample is used
        if missing:
            raise ValueError(f"truncated audio: the WAV header declares {missing} more bytes than the file holds")
        file.seek(0)
        with open_sound(file) as f:
            declared, rate = f.frames, f.samplerate
            # soxr's stream gives the samples its one-shot resample gives the whole file
            resampler = soxr.ResampleStream(rate, SAMPLE_RATE, 1, dtype="float32") if rate != SAMPLE_RATE else None
            read = 0
            while True:
                try:
                    data = f.read(frames, dtype="float32", always_2d=True)  # (frames, channels)
                except (soundfile.SoundFileError, RuntimeError) as e:
                    raise ValueError(f"truncated or corrupt audio: decoding failed ({_libsndfile_reason(e)})") from None
                if not np.isfinite(data).all():
                    raise ValueError("audio holds NaN or infinite samples")
                read += len(data)
                end = len(data) < frames
                mono = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
                if resampler is not None:
                    mono = resampler.resample_chunk(mono, last=end)
                if len(mono):
                    yield np.ascontiguousarray(mono, dtype=np.float32)
                if end:
                    break
    if read < declared:
        raise ValueError(f"truncated audio: the header declares {declared} samples, the file holds {read}")
    if read == 0:
        raise ValueError("empty audio (0 samples)")
