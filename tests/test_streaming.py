"""Long recordings: `transcribe` reads a file in blocks, runs overlapping windows and joins
their middle frames into the frames one pass over the file gives (tasks/speech/stream.py)."""

import numpy as np
import pytest
import soundfile
import torch

import oracle_kd.inference as inference
from oracle_kd.inference import Piece, batches, forward, recognize, stitched
from oracle_kd.skips import SkipLog
from oracle_kd.tasks import get_task
from oracle_kd.tasks.speech import audio
from oracle_kd.tasks.speech.stream import BLOCK_FRAMES, Windows, read_blocks, windows_for

from .conftest import SPEECH_TINY

SR = 16000


def recording(path, seconds, seed=0, channels=1):
    """Tones that change every half second, with noise: every window sees something else."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    freq = 200 + 100 * rng.integers(0, 20, size=int(np.ceil(seconds * 2)))[(t * 2).astype(int)]
    wave = 0.3 * np.sin(2 * np.pi * freq * t) + 0.05 * rng.standard_normal(len(t))
    wave = np.repeat(wave[:, None], channels, axis=1) if channels > 1 else wave
    soundfile.write(path, wave.astype(np.float32), SR, subtype="FLOAT")
    return str(path)


def tiny_student(seed=0):
    torch.manual_seed(seed)
    model = get_task("speech").build_model("student", SPEECH_TINY).eval()
    with torch.no_grad():  # larger weights: frames that differ from place to place
        for p in model.parameters():
            p.mul_(3 if p.dim() > 1 else 1)
    return model


def one_pass(task, model, path):
    """(frames, classes) log-probs of the whole file in one forward pass."""
    with torch.inference_mode():
        log_probs, frame_lengths = forward(task, model, task.load_inputs([path], SkipLog()))
    return log_probs[0, : int(frame_lengths[0])]


def test_the_context_covers_the_receptive_field_of_the_model():
    # SPEECH_TINY: prologue kernel 11 at stride 2, one block of kernel 11, epilogue 11 at
    # dilation 2 -> 2 * (5 + 2 * 5) + 5 = 35 feature frames each side, 35 * 160 + 256 (half
    # an FFT) = 5,856 samples, ceil(5856 / 320) = 19 CTC frames of 320 samples
    assert windows_for(SPEECH_TINY, chunk_seconds=1.0) == Windows(chunk=50, context=19, frame=320)
    assert Windows(chunk=50, context=19, frame=320).length == 88 * 320


def test_joined_windows_give_the_frames_of_one_pass_where_the_receptive_field_allows(tmp_path, monkeypatch):
    # Per-window normalisation is the one intended difference (stream.py); without it every
    # frame depends on samples within the receptive field only, which each window covers.
    monkeypatch.setattr(audio, "normalize_per_utterance", lambda features, frame_lengths, eps=1e-5: features)
    task, model = get_task("speech"), tiny_student()
    path = recording(tmp_path / "a.wav", 7.3)
    windows = list(task.stream_inputs([path], model_cfg=SPEECH_TINY, chunk_seconds=1.0))
    assert len(windows) == 7 and sum(w.full for w in windows) == 6  # 7.3 s in steps of 1 s; the last is shorter
    [(source, joined, seconds)] = stitched(task, model, [path], SkipLog(), batch_size=4.0,
                                           stream={"model_cfg": SPEECH_TINY, "chunk_seconds": 1.0})
    whole = one_pass(task, model, path)
    assert source == path and seconds == pytest.approx(7.3)
    assert joined.shape == whole.shape == (366, 29)  # ceil((1 + 116800 // 160) / 2) frames
    assert torch.allclose(joined, whole, atol=1e-5)


def test_a_file_shorter_than_a_window_gives_exactly_the_one_pass_frames(tmp_path):
    task, model = get_task("speech"), tiny_student()
    path = recording(tmp_path / "a.wav", 1.5)
    [(_, joined, _)] = stitched(task, model, [path], SkipLog(), stream={"model_cfg": SPEECH_TINY, "chunk_seconds": 1.0})
    assert torch.equal(joined, one_pass(task, model, path))


def test_a_windowed_file_gives_the_one_pass_text_of_each_window_joined(tmp_path):
    task, model = get_task("speech"), tiny_student()
    path = recording(tmp_path / "a.wav", 5.0)
    stream = {"model_cfg": SPEECH_TINY, "chunk_seconds": 1.0}
    [(_, text, seconds)] = recognize(task, model, [path], SkipLog(), stream=stream)
    [(_, joined, _)] = stitched(task, model, [path], SkipLog(), stream=stream)
    expected = task.tokenizer.decode(inference.best_path(joined.argmax(-1).tolist()).ids)
    assert text == expected and len(text) > 10 and seconds == 5.0


def test_memory_is_bounded_by_the_block_and_the_window_not_by_the_file(tmp_path, monkeypatch):
    task, model = get_task("speech"), tiny_student()
    path = recording(tmp_path / "long.wav", 40.0)  # 640,000 samples: ten blocks, 24 windows
    reads, inputs = [], []
    real_read, real_forward = soundfile.SoundFile.read, inference.forward

    def read(self, frames=-1, *args, **kwargs):
        data = real_read(self, frames, *args, **kwargs)
        reads.append(len(data))
        return data

    def spy_forward(task, model, examples):
        inputs.append(sum(len(e["audio"]) for e in examples))
        return real_forward(task, model, examples)

    monkeypatch.setattr(soundfile.SoundFile, "read", read)
    monkeypatch.setattr(inference, "forward", spy_forward)
    [(_, text, seconds)] = recognize(task, model, [path], SkipLog(), batch_size=4.0,
                                     stream={"model_cfg": SPEECH_TINY, "chunk_seconds": 1.0})
    assert seconds == 40.0 and len(reads) == 10 and max(reads) == BLOCK_FRAMES  # never the whole file
    window = windows_for(SPEECH_TINY, 1.0).length  # 28,160 samples
    assert max(inputs) <= 2 * window and sum(inputs) > 20 * window  # batches of 4 s hold two windows


def test_blocks_are_the_samples_load_audio_gives(tmp_path):
    path = recording(tmp_path / "stereo.wav", 3.0, channels=2)
    soundfile.write(tmp_path / "22k.flac", soundfile.read(path)[0], 22050)  # resampled as it streams
    for name in (path, str(tmp_path / "22k.flac")):
        blocks = list(read_blocks(name, frames=10_000))
        assert len(blocks) > 3
        assert np.array_equal(np.concatenate(blocks), audio.load_audio(name))


def test_a_file_found_bad_after_some_windows_is_skipped_whole(tmp_path):
    task, model = get_task("speech"), tiny_student()
    good = recording(tmp_path / "good.wav", 2.0)
    wave = soundfile.read(recording(tmp_path / "bad.wav", 12.0))[0]
    wave[150_000] = np.nan  # in the third block: windows before it have been run
    soundfile.write(tmp_path / "bad.wav", wave.astype(np.float32), SR, subtype="FLOAT")
    skips = SkipLog(quiet=True)
    out = list(recognize(task, model, [str(tmp_path / "bad.wav"), good], skips,
                         stream={"model_cfg": SPEECH_TINY, "chunk_seconds": 1.0}))
    assert [source for source, _, _ in out] == [good]
    assert [(s.source, s.reason) for s in skips.items] == [(str(tmp_path / "bad.wav"),
                                                            "audio holds NaN or infinite samples")]


def piece(size, full=False, error=None):
    return Piece("x", {}, size=size, full=full, error=error)


def test_batches_are_filled_by_total_length_with_padding_counted():
    sizes = [[p.size for p in b] for b in batches([piece(s) for s in (3, 3, 3, 2, 9, 1, 1)], budget=8)]
    # 3+3 (2 x 3 = 6), then a third 3 would pad to 9; 3+2 pad to 6; 9 alone (over the budget); 1+1
    assert sizes == [[3, 3], [3, 2], [9], [1, 1]]


def test_full_windows_are_not_batched_with_shorter_pieces_and_errors_stand_alone():
    pieces = [piece(4, full=True), piece(4, full=True), piece(2), piece(1), piece(0, error="bad"), piece(1)]
    groups = [[(p.size, p.full, p.error) for p in b] for b in batches(pieces, budget=100)]
    assert groups == [[(4, True, None), (4, True, None)], [(2, False, None), (1, False, None)],
                      [(0, False, "bad")], [(1, False, None)]]


@pytest.mark.filterwarnings("ignore")  # the TorchScript exporter's deprecation notices
def test_the_checkpoint_and_its_onnx_file_transcribe_a_windowed_file_alike(tmp_path, monkeypatch, capsys):
    from oracle_kd.cli import main

    from .test_export import exported

    ckpt, onnx_file = exported(tmp_path, "speech")
    files = [recording(tmp_path / "long.wav", 6.0), recording(tmp_path / "short.wav", 0.7, seed=1)]
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()  # what export printed
    outputs = []
    for model in (ckpt, onnx_file):
        assert main(["transcribe", str(model), *files, "--chunk-seconds", "1", "--batch-seconds", "4",
                     "--no-progress"]) == 0
        outputs.append(capsys.readouterr().out.splitlines())
    assert outputs[0] == outputs[1] and [line.split("\t")[0] for line in outputs[0]] == files
