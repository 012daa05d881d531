"""Hostile input: nothing a user names may hang the tool, exhaust memory or end in a
traceback; each problem is one line naming the input, or a counted skip."""

import io
import json
import os
import struct
import zlib

import lmdb
import numpy as np
import pytest
import soundfile
from PIL import Image

from oracle_kd.cli import main
from oracle_kd.io import InputError
from oracle_kd.skips import SkipLog
from oracle_kd.tasks import get_task

from .conftest import TINY


def quiet():
    return SkipLog(quiet=True)


def png(array) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "PNG")
    return buffer.getvalue()


def labels_folder(folder, lines):
    folder.mkdir(exist_ok=True)
    (folder / "good.png").write_bytes(png(np.full((32, 90), 180, np.uint8)))
    (folder / "labels.tsv").write_text("\n".join(["good.png\tfirst", *lines]) + "\n")
    return folder


def skip_reasons(folder, **kwargs):
    from oracle_kd.tasks.scene_text.formats import read_examples

    skips = quiet()
    examples = read_examples(folder, skips, **kwargs)
    assert [e.label for e in examples] == ["first"]  # the good line is read whatever the others hold
    return [s.reason for s in skips.items]


# --- files that are not files ------------------------------------------------


def test_a_fifo_named_as_an_image_is_skipped_without_waiting_for_a_writer(tmp_path):
    os.mkfifo(tmp_path / "pipe.png")
    folder = labels_folder(tmp_path, ["pipe.png\tword"])
    assert skip_reasons(folder) == [f"cannot read image (not a regular file: a FIFO): {tmp_path / 'pipe.png'}"]


def test_dev_zero_named_as_an_image_is_skipped_before_a_byte_is_read(tmp_path):
    folder = labels_folder(tmp_path, ["/dev/zero\tword"])
    assert skip_reasons(folder) == ["cannot read image (not a regular file: a character device): /dev/zero"]


def test_a_nul_byte_in_a_labels_tsv_path_skips_that_line_only(tmp_path):
    folder = labels_folder(tmp_path, ["a\0b.png\tword"])
    assert skip_reasons(folder) == ["image path holds a NUL byte: 'a\\x00b.png'"]


def test_a_fifo_or_a_device_named_as_audio_is_skipped_for_what_it_is(tmp_path):
    from oracle_kd.tasks.speech.formats import read_utterances

    os.mkfifo(tmp_path / "pipe.wav")
    soundfile.write(tmp_path / "good.wav", 0.3 * np.sin(np.arange(16000) / 5.0), 16000)
    rows = [{"audio_filepath": p, "text": "hello"} for p in ("good.wav", "pipe.wav", "/dev/zero")]
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    skips = quiet()
    assert len(read_utterances(tmp_path / "m.jsonl", skips)) == 1
    assert [s.reason for s in skips.items] == [
        f"cannot read audio file (not a regular file: a FIFO): {tmp_path / 'pipe.wav'}",
        "cannot read audio file (not a regular file: a character device): /dev/zero"]


def test_recognize_names_each_unreadable_input_without_python_object_names(tiny_checkpoint, tmp_path, monkeypatch,
                                                                           capsys):
    monkeypatch.chdir(tmp_path)
    os.mkfifo(tmp_path / "pipe.png")
    (tmp_path / "noise.png").write_bytes(bytes(range(256)))
    assert main(["recognize", str(tiny_checkpoint), "pipe.png", "/dev/zero", "noise.png", "nowhere.png"]) == 1
    rows = (tmp_path / "skipped.tsv").read_text().splitlines()[1:]
    assert rows == ["pipe.png\tnot a regular file: a FIFO",
                    "/dev/zero\tnot a regular file: a character device",
                    "noise.png\tunreadable image (UnidentifiedImageError: cannot identify image file)",
                    "nowhere.png\tfile not found"]
    assert "BytesIO" not in capsys.readouterr().err


# --- sizes that lie ----------------------------------------------------------


def test_an_lmdb_whose_num_samples_lies_is_refused_before_reading(tmp_path):
    from oracle_kd.tasks.scene_text.formats import read_examples, write_lmdb

    write_lmdb(tmp_path / "db", [np.full((32, 90), 180, np.uint8)] * 3, ["a", "b", "c"])
    env = lmdb.open(str(tmp_path / "db"))
    with env.begin(write=True) as txn:
        txn.put(b"num-samples", b"1000000000")
    env.close()
    with pytest.raises(InputError, match="num-samples says 1,000,000,000, but the database holds only 7 keys"):
        read_examples(tmp_path / "db", quiet())  # 3 images, 3 labels and num-samples itself


def test_an_lmdb_num_samples_of_thousands_of_digits_is_not_a_number(tmp_path):
    from oracle_kd.tasks.scene_text.formats import read_examples, write_lmdb

    write_lmdb(tmp_path / "db", [np.full((32, 90), 180, np.uint8)], ["a"])
    env = lmdb.open(str(tmp_path / "db"))
    with env.begin(write=True) as txn:
        txn.put(b"num-samples", b"9" * 5000)  # int() of it would raise Python's own ValueError
    env.close()
    with pytest.raises(InputError, match="num-samples is not a number"):
        read_examples(tmp_path / "db", quiet())


def test_a_truncated_lmdb_is_refused_instead_of_crashing_the_process(tmp_path):
    """LMDB reads a half-copied data.mdb through its memory map past the end of the file:
    SIGBUS, which kills the process before any `except` (found by fuzzing)."""
    from oracle_kd.tasks.scene_text.formats import read_examples, write_lmdb

    rng = np.random.default_rng(0)
    write_lmdb(tmp_path / "db", [rng.integers(0, 256, (32, 200), dtype=np.uint8)] * 20, ["word"] * 20)
    data = (tmp_path / "db" / "data.mdb").read_bytes()
    (tmp_path / "db" / "data.mdb").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match=r"db is damaged: reading its pages crashed a checking process \(SIGBUS\)"):
        read_examples(tmp_path / "db", quiet())


def forged_png(width: int, height: int) -> bytes:
    """A PNG whose header declares width x height pixels (correct CRC), with one empty row of data."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    chunk = lambda kind, data: (struct.pack(">I", len(data)) + kind + data  # noqa: E731
                                + struct.pack(">I", zlib.crc32(kind + data)))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0")) + chunk(b"IEND", b"")


def test_an_image_declaring_more_pixels_than_the_limit_is_refused_from_its_header():
    from oracle_kd.tasks.scene_text.images import decode_image_bytes

    with pytest.raises(ValueError, match="image of 8000 x 8000 pixels, more than the limit of 50,000,000"):
        decode_image_bytes(forged_png(8000, 8000))  # 64 MB of pixels from 57 bytes


def test_audio_whose_header_asks_for_more_samples_than_the_limit_is_refused(tmp_path, monkeypatch):
    from oracle_kd.tasks.speech import audio

    soundfile.write(tmp_path / "a.wav", np.zeros(1600, np.float32), 16000)
    monkeypatch.setattr(audio, "MAX_SAMPLES", 1000)
    with pytest.raises(ValueError, match="declares 1,600 samples x 1 channels .* more than the limit of 1,000"):
        audio.load_audio(tmp_path / "a.wav")


def test_audio_at_an_absurd_sample_rate_is_refused_before_resampling(tmp_path):
    from oracle_kd.tasks.speech.audio import load_audio

    soundfile.write(tmp_path / "slow.wav", np.full(100, 0.5, np.float32), 10)  # 10 Hz: x1600 to 16 kHz
    with pytest.raises(ValueError, match="sample rate 10 Hz in the header, outside 1,000-768,000 Hz"):
        load_audio(tmp_path / "slow.wav")


def test_a_huge_manifest_duration_is_printed_short(tmp_path):
    from oracle_kd.tasks.speech.formats import read_utterances

    soundfile.write(tmp_path / "a.wav", 0.3 * np.sin(np.arange(32000) / 5.0), 16000)
    rows = [{"audio_filepath": "a.wav", "text": "hello"}, {"audio_filepath": "a.wav", "text": "hi", "duration": 1e300}]
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    skips = quiet()
    read_utterances(tmp_path / "m.jsonl", skips)
    assert skips.items[0].reason == (f"manifest duration 1e+300 s but the audio is 2.00 s long "
                                     f"(truncated or wrong file?): {tmp_path / 'a.wav'}")


# --- images are read the way they are shown ----------------------------------


def test_exif_orientation_is_applied_so_a_phone_photo_is_read_upright():
    from oracle_kd.tasks.scene_text.images import decode_image_bytes

    upright = np.zeros((32, 128), np.uint8)
    upright[:, 64:] = 255  # dark left half, bright right half
    stored = Image.fromarray(upright).transpose(Image.Transpose.ROTATE_90)  # 32 wide, 128 tall, as a camera stores it
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display
    buffer = io.BytesIO()
    stored.save(buffer, "PNG", exif=exif)
    image = decode_image_bytes(buffer.getvalue())
    assert image.shape == (32, 128)
    assert image[:, :60].mean() < 5 and image[:, 68:].mean() > 250


# --- checkpoints -------------------------------------------------------------


def forged_checkpoint(tmp_path, meta) -> str:
    from safetensors.torch import save_file

    model = get_task("scene-text").build_model("student", TINY["student"])
    path = tmp_path / "forged.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path),
              metadata={"oracle_kd": json.dumps(meta)})
    return str(path)


STUDENT = {"task": "scene-text", "kind": "student"}
FORGED_HEADERS = [
    ({**STUDENT, "kind": "wizard", "config": {}}, "unknown model kind 'wizard' in its metadata"),
    ({**STUDENT, "config": [1, 2]}, "the model config in its metadata is a list, not a mapping"),
    ({**STUDENT, "task": ["x"], "config": {}}, "unknown task \"['x']\" in its metadata"),
    # 1.36 GB of LSTM weights claimed by a file of 8,382: refused before anything is allocated
    ({**STUDENT, "config": {**TINY["student"], "rnn_hidden": 100_000}}, "more weights than the 8,382 the file holds"),
    ({**STUDENT, "config": {**TINY["student"], "rnn_layers": 10**9}}, "more weights than the 8,382 the file holds"),
    ({**STUDENT, "config": {**TINY["student"], "rnn_hidden": 8}}, "weights do not match the model they claim to be"),
    ({**STUDENT, "config": {**TINY["student"], "rnn_hidden": -5}}, "cannot be built"),
]


@pytest.mark.parametrize("meta, reason", FORGED_HEADERS)
def test_a_forged_checkpoint_header_is_one_line_naming_the_file(tmp_path, capsys, meta, reason):
    path = forged_checkpoint(tmp_path, meta)
    assert main(["recognize", path, "x.png", "--skipped", str(tmp_path / "s.tsv")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and path in err[0] and reason in err[0]


@pytest.mark.parametrize("name, data, reason", [
    ("random.bin", bytes(range(7, 250)), "not a checkpoint (neither safetensors nor a PyTorch file)"),
    ("student.onnx", b"\x08\x07\x12\x07pytorch" + bytes(40), "not a checkpoint (an ONNX model (what `export` writes))"),
])
def test_a_file_that_is_no_checkpoint_is_not_called_a_dangerous_pickle(tmp_path, name, data, reason):
    from oracle_kd.checkpoint import read_checkpoint

    (tmp_path / name).write_bytes(data)
    with pytest.raises(InputError) as refused:
        read_checkpoint(tmp_path / name)
    assert reason in str(refused.value)
    assert "could run code" not in str(refused.value) and "weights_only" not in str(refused.value)


def test_a_zip_with_compressed_records_is_refused_before_torch_reads_it(tmp_path):
    import zipfile

    from oracle_kd.checkpoint import read_checkpoint

    with zipfile.ZipFile(tmp_path / "bomb.pt", "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("archive/data/0", bytes(10_000_000))  # 10 MB of zeros in a few kilobytes
    with pytest.raises(InputError, match="records are compressed or larger than the file"):
        read_checkpoint(tmp_path / "bomb.pt")


def test_a_fifo_given_as_a_checkpoint_is_named_for_what_it_is(tmp_path):
    from oracle_kd.checkpoint import read_checkpoint

    os.mkfifo(tmp_path / "pipe.safetensors")
    with pytest.raises(InputError, match="pipe.safetensors: not a regular file: a FIFO"):
        read_checkpoint(tmp_path / "pipe.safetensors")


# --- the command line: one line, exit 2, before any work ---------------------


@pytest.mark.parametrize("argv, reason", [
    (["evaluate", "CKPT", "--data", "d", "--batch-size", "0"], "argument --batch-size: must be 1 or more, not 0"),
    (["bench", "--repeats", "0"], "argument --repeats: must be 1 or more, not 0"),
    (["train", "scene-text", "--model", "student", "--devices", "0", "--out", "o"],
     "argument --devices: must be 1 or more, not 0"),
    (["transcribe", "CKPT", "a.wav", "--beam", "-3"], "argument --beam: must be 0 or more, not -3"),
    (["train", "scene-text", "--model", "student", "--tau", "nan", "--out", "o"],
     "argument --tau: must be a finite number, more than 0, not nan"),
    (["train", "scene-text", "--model", "student", "--seed", "-1", "--out", "o"],
     "argument --seed: must be 0 or more and at most 4294967295, not -1"),
    (["experiment", "--task", "scene-text", "--seeds", "0"], "argument --seeds: must be 1 or more, not 0"),
])
def test_bad_settings_are_one_line_before_any_work(argv, reason, capsys):
    with pytest.raises(SystemExit) as stopped:
        main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert stopped.value.code == 2 and len(err) == 1 and reason in err[0]


def test_export_to_a_folder_that_cannot_be_written_is_refused_before_loading(tmp_path, capsys):
    assert main(["export", str(tmp_path / "never-read.safetensors"), "--out", "/proc/x.onnx"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("oracle-kd: error: --out /proc/x.onnx: cannot write in /proc")


def test_train_checks_its_data_paths_before_reading_or_generating_data(tmp_path, capsys):
    argv = ["train", "scene-text", "--model", "student", "--out", str(tmp_path / "run"),
            "--train-data", str(tmp_path), "--val-data", str(tmp_path / "nowhere")]
    assert main(argv) == 2
    assert capsys.readouterr().err.strip() == f"oracle-kd: error: --val-data {tmp_path / 'nowhere'}: not found"


def test_a_fifo_given_as_a_teacher_is_named_not_waited_on(tmp_path, capsys):
    os.mkfifo(tmp_path / "teacher.safetensors")
    argv = ["train", "scene-text", "--model", "student", "--teacher", str(tmp_path / "teacher.safetensors"),
            "--out", str(tmp_path / "run")]
    assert main(argv) == 2
    assert capsys.readouterr().err.strip() == (f"oracle-kd: error: teacher checkpoint {tmp_path / 'teacher.safetensors'}"
                                               ": not a regular file: a FIFO")


# --- confining data files to a folder ----------------------------------------


def test_data_root_skips_files_a_labels_tsv_names_outside_it(tmp_path):
    (tmp_path / "secret.png").write_bytes(png(np.full((32, 90), 180, np.uint8)))
    folder = labels_folder(tmp_path / "data", ["../secret.png\tword", f"{tmp_path / 'secret.png'}\tword"])
    assert skip_reasons(folder, data_root=folder) == [
        f"image path is outside --data-root {folder}: {folder / '../secret.png'}",
        f"image path is outside --data-root {folder}: {tmp_path / 'secret.png'}"]
    from oracle_kd.tasks.scene_text.formats import read_examples

    assert len(read_examples(folder, quiet())) == 3  # without a root, the same files are read


def test_data_root_follows_symbolic_links_out_of_it(tmp_path):
    (tmp_path / "secret.png").write_bytes(png(np.full((32, 90), 180, np.uint8)))
    folder = labels_folder(tmp_path / "data", ["link.png\tword"])
    (folder / "link.png").symlink_to(tmp_path / "secret.png")
    assert skip_reasons(folder, data_root=folder) == [f"image path is outside --data-root {folder}: {folder / 'link.png'}"]


def test_data_root_confines_manifest_audio_and_the_data_set_itself(tmp_path):
    from oracle_kd.tasks.speech.formats import read_utterances

    soundfile.write(tmp_path / "outside.wav", 0.3 * np.sin(np.arange(16000) / 5.0), 16000)
    (tmp_path / "data").mkdir()
    soundfile.write(tmp_path / "data" / "in.wav", 0.3 * np.sin(np.arange(16000) / 5.0), 16000)
    rows = [{"audio_filepath": "in.wav", "text": "hello"}, {"audio_filepath": str(tmp_path / "outside.wav"), "text": "hi"}]
    (tmp_path / "data" / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    skips = quiet()
    assert len(read_utterances(tmp_path / "data" / "m.jsonl", skips, data_root=tmp_path / "data")) == 1
    assert skips.items[0].reason == f"audio path is outside --data-root {tmp_path / 'data'}: {tmp_path / 'outside.wav'}"
    with pytest.raises(InputError, match="is outside --data-root"):
        read_utterances(tmp_path / "data" / "m.jsonl", quiet(), data_root=tmp_path / "elsewhere")


def test_evaluate_takes_data_root(tiny_checkpoint, tmp_path, monkeypatch, capsys):
    (tmp_path / "secret.png").write_bytes(png(np.full((32, 90), 180, np.uint8)))
    folder = labels_folder(tmp_path / "data", ["../secret.png\tword"])
    monkeypatch.chdir(tmp_path)
    assert main(["evaluate", str(tiny_checkpoint), "--data", str(folder), "--data-root", str(folder)]) == 0
    assert json.loads(capsys.readouterr().out)["skipped"] == 1
    assert "outside --data-root" in (tmp_path / "skipped.tsv").read_text()
