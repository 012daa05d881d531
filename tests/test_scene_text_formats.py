import io

import lmdb
import numpy as np
import pytest
from PIL import Image

from oracle_kd.io import InputError
from oracle_kd.skips import SkipLog
from oracle_kd.tasks.scene_text.formats import (
    detect_format,
    read_examples,
    write_labels_tsv,
    write_lmdb,
)
from oracle_kd.tasks.scene_text.images import (
    IMAGE_HEIGHT,
    IMAGE_WIDTH,
    decode_image_bytes,
    to_model_image,
)


def noise_images(n, seed=0):
    """Random uint8 images of assorted sizes, gray and RGB."""
    rng = np.random.default_rng(seed)
    shapes = [(8, 24), (IMAGE_HEIGHT, IMAGE_WIDTH), (12, 40, 3)]
    return [rng.integers(0, 256, shapes[i % 3], dtype=np.uint8) for i in range(n)]


def png_bytes(array):
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def quiet():
    return SkipLog(quiet=True)


def write_tsv(folder, lines, images=("good.png",)):
    """A labels.tsv folder with the given raw lines and valid PNGs at `images`."""
    folder.mkdir(exist_ok=True)
    for name in images:
        (folder / name).write_bytes(png_bytes(noise_images(1)[0]))
    (folder / "labels.tsv").write_text("".join(line + "\n" for line in lines), "utf-8")
    return folder


# --- round trips -------------------------------------------------------------


@pytest.mark.parametrize("write", [write_labels_tsv, write_lmdb])
def test_round_trip_keeps_order_labels_and_pixels(tmp_path, write):
    images = noise_images(5)
    labels = ["Hello", "w0rld", "Don't", "A-1 b", "x"]
    out = write(tmp_path / "data", images, labels)
    examples = read_examples(out, quiet())
    assert [e.label for e in examples] == ["hello", "w0rld", "dont", "a1b", "x"]
    for example, array in zip(examples, images):
        assert example.image.dtype == np.uint8
        assert example.image.shape == (IMAGE_HEIGHT, IMAGE_WIDTH)
        np.testing.assert_array_equal(example.image, to_model_image(Image.fromarray(array)))


def test_writers_accept_pil_images(tmp_path):
    image = Image.fromarray(noise_images(1)[0])
    examples = read_examples(write_labels_tsv(tmp_path, [image], ["ab"]), quiet())
    np.testing.assert_array_equal(examples[0].image, to_model_image(image))


def test_sources_name_file_and_line_or_key(tmp_path):
    tsv = write_labels_tsv(tmp_path / "t", noise_images(2), ["a", "b"])
    db = write_lmdb(tmp_path / "l", noise_images(2), ["a", "b"])
    assert [e.source for e in read_examples(tsv, quiet())] == [
        f"{tsv / 'labels.tsv'}:1",
        f"{tsv / 'labels.tsv'}:2",
    ]
    assert [e.source for e in read_examples(db, quiet())] == [
        f"{db}:image-000000001",
        f"{db}:image-000000002",
    ]


def test_labels_tsv_file_itself_is_accepted(tmp_path):
    out = write_labels_tsv(tmp_path, noise_images(2), ["a", "b"])
    assert [e.label for e in read_examples(out / "labels.tsv", quiet())] == ["a", "b"]


def test_bom_blank_lines_crlf_and_trailing_tab_are_tolerated(tmp_path):
    write_tsv(tmp_path, [])
    text = "\ufeffgood.png\tOne\r\n\r\n   \r\ngood.png\tTwo\t\r\n"
    (tmp_path / "labels.tsv").write_bytes(text.encode("utf-8"))
    skips = quiet()
    examples = read_examples(tmp_path, skips)
    assert [e.label for e in examples] == ["one", "two"]
    assert [e.source.rsplit(":", 1)[1] for e in examples] == ["1", "4"]
    assert len(skips) == 0


def test_windows_backslash_paths_are_found(tmp_path):
    (tmp_path / "sub").mkdir()
    write_tsv(tmp_path, ["sub\\good.png\tab"], images=["sub/good.png"])
    assert [e.label for e in read_examples(tmp_path, quiet())] == ["ab"]


def test_write_labels_tsv_refuses_labels_with_tabs(tmp_path):
    with pytest.raises(InputError, match="tab or line break"):
        write_labels_tsv(tmp_path, noise_images(1), ["a\tb"])


def test_lmdb_jpeg_images_are_read(tmp_path):
    buffer = io.BytesIO()
    Image.fromarray(noise_images(1)[0]).save(buffer, format="JPEG")
    env = lmdb.open(str(tmp_path), map_size=1 << 20)
    with env.begin(write=True) as txn:
        txn.put(b"num-samples", b"1")
        txn.put(b"image-000000001", buffer.getvalue())
        txn.put(b"label-000000001", "Ab".encode())
    env.close()
    (example,) = read_examples(tmp_path, quiet())
    assert example.label == "ab"
    np.testing.assert_array_equal(example.image, decode_image_bytes(buffer.getvalue()))


# --- detect_format -----------------------------------------------------------


def test_detect_format(tmp_path):
    tsv = write_labels_tsv(tmp_path / "t", noise_images(1), ["a"])
    db = write_lmdb(tmp_path / "l", noise_images(1), ["a"])
    assert detect_format(tsv) == "labels-tsv"
    assert detect_format(tsv / "labels.tsv") == "labels-tsv"
    assert detect_format(db) == "lmdb"
    assert detect_format(db / "data.mdb") == "lmdb"


def test_detect_format_rejects_other_folders_and_names_data_sets_inside(tmp_path):
    write_lmdb(tmp_path / "train", noise_images(1), ["a"])
    with pytest.raises(InputError, match=r"neither .* labels.tsv .* data.mdb.*train"):
        detect_format(tmp_path)


def test_missing_path_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="data path not found"):
        detect_format(tmp_path / "nope")
    with pytest.raises(InputError, match="data path not found"):
        read_examples(tmp_path / "nope", quiet())


# --- bad labels.tsv lines: one skip each, the rest still read ----------------

BAD_TSV_LINES = [
    ("good.png label", None, "no tab"),
    ("\tlabel", None, "empty image path"),
    ("good.png\tab\tcd", None, "2 tabs"),
    ("missing.png\tabc", None, "image file not found"),
    ("corrupt.png\tabc", b"this is not a png", "unreadable image"),
    ("empty.png\tabc", b"", "image is empty"),
    ("good.png\t   ", None, "empty label"),
    ("good.png\t!!!", None, "has no letters or digits"),
    ("good.png\tcafé", None, "characters outside the label set: 'é'"),
    ("good.png\tcafe\u0301", None, "characters outside the label set: 'é'"),
    ("good.png\t日本", None, "characters outside the label set: '日', '本'"),
    ("good.png\tabcdef", None, "label of 6 characters is longer than the model's limit 5"),
]


@pytest.mark.parametrize("line, file_bytes, reason", BAD_TSV_LINES)
def test_bad_tsv_line_is_skipped_once_with_file_and_line(tmp_path, line, file_bytes, reason):
    name = line.split("\t")[0]
    if file_bytes is not None:
        (tmp_path / name).write_bytes(file_bytes)
    write_tsv(tmp_path, ["good.png\tfirst", line, "good.png\tlast"])
    skips = quiet()
    examples = read_examples(tmp_path, skips, max_label_length=5)
    assert [e.label for e in examples] == ["first", "last"]
    assert len(skips) == 1
    assert skips.items[0].source == f"{tmp_path / 'labels.tsv'}:2"
    assert reason in skips.items[0].reason


def test_invalid_utf8_line_is_skipped(tmp_path):
    write_tsv(tmp_path, [])
    (tmp_path / "labels.tsv").write_bytes(b"good.png\tok\ngood.png\tcaf\xe9\n")
    skips = quiet()
    assert [e.label for e in read_examples(tmp_path, skips)] == ["ok"]
    assert [s.source for s in skips.items] == [f"{tmp_path / 'labels.tsv'}:2"]


def test_all_bad_is_an_input_error_with_the_count(tmp_path):
    write_tsv(tmp_path, ["missing.png\ta", "good.png\t!!!", "no tab"])
    skips = quiet()
    with pytest.raises(InputError, match="no usable examples.*all 3 examples were skipped"):
        read_examples(tmp_path, skips)
    assert len(skips) == 3


def test_empty_labels_tsv_is_an_input_error(tmp_path):
    write_tsv(tmp_path, [])
    with pytest.raises(InputError, match="no examples"):
        read_examples(tmp_path, quiet())


# --- bad LMDB entries ----------------------------------------------------------


def edit_lmdb(folder, puts=(), deletes=()):
    env = lmdb.open(str(folder), map_size=1 << 24)
    with env.begin(write=True) as txn:
        for key, value in puts:
            txn.put(key, value)
        for key in deletes:
            txn.delete(key)
    env.close()


BAD_LMDB_ENTRIES = [
    ({}, [b"image-000000002"], "image-000000002", "key image-000000002 is missing"),
    ({}, [b"label-000000002"], "label-000000002", "key label-000000002 is missing"),
    ({b"image-000000002": b"garbage"}, [], "image-000000002", "unreadable image"),
    ({b"image-000000002": b""}, [], "image-000000002", "image is empty"),
    ({b"label-000000002": b""}, [], "label-000000002", "empty label"),
    ({b"label-000000002": b"?!"}, [], "label-000000002", "has no letters or digits"),
    ({b"label-000000002": "日本".encode()}, [], "label-000000002", "outside the label set"),
    ({b"label-000000002": b"\xff"}, [], "label-000000002", "not valid UTF-8"),
    ({b"label-000000002": b"abcdef"}, [], "label-000000002", "longer than the model's limit 5"),
]


@pytest.mark.parametrize("puts, deletes, key, reason", BAD_LMDB_ENTRIES)
def test_bad_lmdb_entry_is_skipped_once_with_key(tmp_path, puts, deletes, key, reason):
    db = write_lmdb(tmp_path / "db", noise_images(3), ["first", "mid", "last"])
    edit_lmdb(db, puts.items(), deletes)
    skips = quiet()
    examples = read_examples(db, skips, max_label_length=5)
    assert [e.label for e in examples] == ["first", "last"]
    assert len(skips) == 1
    assert skips.items[0].source == f"{db}:{key}"
    assert reason in skips.items[0].reason


def test_lmdb_without_num_samples_is_an_input_error(tmp_path):
    db = write_lmdb(tmp_path / "db", noise_images(2), ["a", "b"])
    edit_lmdb(db, deletes=[b"num-samples"])
    with pytest.raises(InputError, match="num-samples"):
        read_examples(db, quiet())


def test_lmdb_all_bad_is_an_input_error(tmp_path):
    db = write_lmdb(tmp_path / "db", noise_images(2), ["...", "é"])
    with pytest.raises(InputError, match="all 2 examples were skipped"):
        read_examples(db, quiet())


def test_write_lmdb_replaces_an_older_database(tmp_path):
    write_lmdb(tmp_path / "db", noise_images(3), ["a", "b", "c"])
    write_lmdb(tmp_path / "db", noise_images(1), ["z"])
    assert [e.label for e in read_examples(tmp_path / "db", quiet())] == ["z"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["db"]
