"""One fuzz target per reader of user input: any byte string gives data or the
project's own error, never another exception.

Each target takes the bytes and a scratch folder, puts the bytes where the reader
will find them (a labels.tsv beside a good image, a data.mdb, a manifest beside a
good WAV, ...) and calls the reader. The errors a reader is allowed to raise are
caught here; anything else propagates, and is a finding. `SEEDS` gives each target
valid inputs to start from, so that mutations reach past the first format check.
The hypothesis tests (tests/test_fuzz.py) and atheris (fuzz/run.py) share them.
"""

from __future__ import annotations

import io
import json
import os
from functools import lru_cache
from pathlib import Path

import numpy as np

from oracle_kd.io import InputError
from oracle_kd.skips import SkipLog


def labels_tsv(data: bytes, scratch: Path) -> None:
    from oracle_kd.tasks.scene_text.formats import read_examples

    folder = _fresh(scratch, "tsv")
    (folder / "a.png").write_bytes(_png())
    (folder / "labels.tsv").write_bytes(data)
    _read(read_examples, folder)


def lmdb(data: bytes, scratch: Path) -> None:
    """The bytes are the data.mdb file itself: a database the user hands us is as hostile as its pages."""
    from oracle_kd.tasks.scene_text.formats import read_examples

    folder = _fresh(scratch, "lmdb")
    (folder / "data.mdb").write_bytes(data)
    _read(read_examples, folder)


def lmdb_records(data: bytes, scratch: Path) -> None:
    """The bytes are key/value records (see `_records`) written into a valid database: the
    benchmark layout's keys and values, not LMDB's pages, are what is fuzzed."""
    import lmdb as lmdb_module

    from oracle_kd.tasks.scene_text.formats import read_examples

    folder = _fresh(scratch, "lmdb-records")
    env = lmdb_module.open(str(folder), map_size=64 << 20, lock=False)
    with env.begin(write=True) as txn:
        for key, value in _records(data):
            txn.put(key, value)
    env.close()
    _read(read_examples, folder)


def manifest(data: bytes, scratch: Path) -> None:
    from oracle_kd.tasks.speech.formats import read_utterances

    folder = _fresh(scratch, "manifest")
    (folder / "a.wav").write_bytes(_wav())
    (folder / "m.jsonl").write_bytes(data)
    _read(read_utterances, folder / "m.jsonl")


def librispeech(data: bytes, scratch: Path) -> None:
    from oracle_kd.tasks.speech.formats import read_utterances

    folder = _fresh(scratch, "librispeech")
    chapter = folder / "84" / "121123"
    chapter.mkdir(parents=True)
    (chapter / "84-121123-0000.flac").write_bytes(_wav("FLAC"))
    (chapter / "84-121123.trans.txt").write_bytes(data)
    _read(read_utterances, folder)


def parallel_text(data: bytes, scratch: Path) -> None:
    """Translation user data: the bytes as a TSV file, and split at the first NUL into aligned files."""
    from oracle_kd.tasks.translation.formats import read_pairs

    folder = _fresh(scratch, "parallel_text")
    (folder / "pairs.tsv").write_bytes(data)
    _read(read_pairs, folder / "pairs.tsv")
    source, _, target = data.partition(b"\0")
    (folder / "source.txt").write_bytes(source)
    (folder / "target.txt").write_bytes(target)
    _read(read_pairs, folder)


def image(data: bytes, scratch: Path) -> None:
    from oracle_kd.tasks.scene_text.images import IMAGE_HEIGHT, IMAGE_WIDTH, decode_image_bytes

    try:
        array = decode_image_bytes(data)
    except ValueError:
        return
    assert array.shape == (IMAGE_HEIGHT, IMAGE_WIDTH) and array.dtype == np.uint8


def audio(data: bytes, scratch: Path) -> None:
    from oracle_kd.tasks.speech.audio import load_audio

    path = _fresh(scratch, "audio") / "a.wav"
    path.write_bytes(data)
    try:
        samples = load_audio(path)
    except ValueError:
        return
    assert samples.ndim == 1 and samples.dtype == np.float32 and np.isfinite(samples).all()


def checkpoint(data: bytes, scratch: Path) -> None:
    """The bytes are a checkpoint file; what reads must also build (the header names a model)."""
    from oracle_kd.checkpoint import load_model

    path = _fresh(scratch, "checkpoint") / "c.safetensors"
    path.write_bytes(data)
    try:
        load_model(path)
    except InputError:
        pass


def checkpoint_header(data: bytes, scratch: Path) -> None:
    """The bytes are the `oracle_kd` metadata (JSON text) of a checkpoint with real tiny weights."""
    from safetensors.torch import save_file

    from oracle_kd.checkpoint import load_model

    path = _fresh(scratch, "checkpoint-header") / "c.safetensors"
    save_file(_tiny_weights(), str(path), metadata={"oracle_kd": data.decode("utf-8", "replace")})
    try:
        load_model(path)
    except InputError:
        pass


TARGETS = {f.__name__: f for f in (labels_tsv, lmdb, lmdb_records, manifest, librispeech, parallel_text, image,
                                   audio, checkpoint, checkpoint_header)}


# --- seeds: valid inputs that mutations start from -----------------------------


def seeds(name: str) -> list[bytes]:
    """Valid (and a few typical invalid) inputs of target `name`."""
    good_row = json.dumps({"audio_filepath": "a.wav", "duration": 1.0, "text": "hello world"})
    if name == "labels_tsv":
        return [b"a.png\tHello\n", b"\xef\xbb\xbfa.png\tW0rld!\r\na.png\tcafe\n\n", b"a.png\tab\tcd\nb.png\tx\n"]
    if name == "lmdb":
        return [_mdb()]
    if name == "lmdb_records":
        pairs = [(b"num-samples", b"2"), (b"image-000000001", _png()), (b"label-000000001", b"word"),
                 (b"label-000000002", b"x")]
        return [b"".join(_record(k, v) for k, v in pairs)]
    if name == "manifest":
        offset = json.dumps({"audio_filepath": "a.wav", "offset": 0.2, "duration": 0.5, "text": "hi"})
        return [f"{good_row}\n{offset}\n".encode(), b'[{"audio_filepath": "a.wav"}]\n', b'{"text": 1}\n']
    if name == "librispeech":
        return [b"84-121123-0000 HELLO WORLD\n", b"84-121123-0000\n84-121123-0001 MISSING\n"]
    if name == "parallel_text":
        return [b"Save\tSpeichern\nDelete <1>\t<1> l\xc3\xb6schen\r\n", b"Open\nClose\n\0\xc3\x96ffnen\nSchlie\xc3\x9fen\n",
                b"a\tb\tc\n\tx\n"]
    if name == "image":
        buffer = io.BytesIO()
        from PIL import Image

        Image.fromarray(np.full((20, 60, 3), 90, np.uint8)).save(buffer, "JPEG")
        return [_png(), buffer.getvalue()]
    if name == "audio":
        return [_wav(), _wav("FLAC")]
    if name == "checkpoint":
        return [_checkpoint_bytes()]
    if name == "checkpoint_header":
        return [json.dumps({"task": "scene-text", "kind": "student", "config": TINY_STUDENT}).encode(),
                b'{"task": "speech", "kind": "oracle", "config": {"d_model": 64}}', b"null"]
    raise KeyError(name)


# --- helpers -----------------------------------------------------------------

TINY_STUDENT = {"cnn": {"channels": [4, 8, 8, 8, 16]}, "rnn_hidden": 16, "rnn_layers": 1}


def _read(reader, path) -> None:
    try:
        reader(path, SkipLog(quiet=True))
    except InputError:
        pass


def _fresh(scratch: Path, name: str) -> Path:
    """An empty folder scratch/name (emptied on every call: one input at a time)."""
    import shutil

    folder = Path(scratch) / name
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    return folder


def _record(key: bytes, value: bytes) -> bytes:
    return len(key).to_bytes(1, "little") + key + len(value).to_bytes(3, "little") + value


def _records(data: bytes) -> list[tuple[bytes, bytes]]:
    """Key/value pairs of `data`: [1-byte key length][key][3-byte value length][value]...;
    a cut-off record ends the list, empty keys (LMDB refuses them) are dropped."""
    out, at = [], 0
    while at < len(data):
        n = data[at]
        key = data[at + 1 : at + 1 + n]
        m = int.from_bytes(data[at + 1 + n : at + 4 + n], "little")
        value = data[at + 4 + n : at + 4 + n + m]
        if len(key) < n or len(value) < m:
            break
        if key:
            out.append((key, value))
        at += 4 + n + m
    return out


@lru_cache(maxsize=None)
def _png() -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.full((32, 90), 180, np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


@lru_cache(maxsize=None)
def _wav(fmt: str = "WAV") -> bytes:
    import soundfile

    buffer = io.BytesIO()
    soundfile.write(buffer, 0.3 * np.sin(np.arange(16000) / 5.0), 16000, format=fmt, subtype="PCM_16")
    return buffer.getvalue()


@lru_cache(maxsize=None)
def _mdb() -> bytes:
    import tempfile

    from oracle_kd.tasks.scene_text.formats import write_lmdb

    with tempfile.TemporaryDirectory() as tmp:
        write_lmdb(Path(tmp) / "db", [np.full((32, 90), 180, np.uint8)] * 2, ["word", "x"])
        return (Path(tmp) / "db" / "data.mdb").read_bytes()


@lru_cache(maxsize=None)
def _tiny_weights() -> dict:
    import torch

    from oracle_kd.tasks import get_task

    torch.manual_seed(0)
    model = get_task("scene-text").build_model("student", TINY_STUDENT)
    return {k: v.contiguous() for k, v in model.state_dict().items()}


@lru_cache(maxsize=None)
def _checkpoint_bytes() -> bytes:
    import tempfile

    from safetensors.torch import save_file

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "c.safetensors")
        meta = {"task": "scene-text", "kind": "student", "config": TINY_STUDENT}
        save_file(_tiny_weights(), path, metadata={"oracle_kd": json.dumps(meta)})
        return Path(path).read_bytes()
