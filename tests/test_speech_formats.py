import io
import json

import numpy as np
import pytest
import soundfile

from oracle_kd.io import InputError
from oracle_kd.skips import SkipLog
from oracle_kd.tasks.speech.audio import SAMPLE_RATE
from oracle_kd.tasks.speech.checks import check_transcript
from oracle_kd.tasks.speech.formats import (
    detect_format,
    read_utterances,
    write_librispeech,
    write_manifest,
)


def tone(seconds=0.5, freq=440.0, sr=SAMPLE_RATE):
    t = np.arange(int(round(seconds * sr))) / sr
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def quiet():
    return SkipLog(quiet=True)


def write_lines(path, lines):
    path.write_text("".join(line + "\n" for line in lines), "utf-8")
    return path


def entry(audio="good.wav", text="hello", **extra):
    return json.dumps({"audio_filepath": audio, "text": text, **extra})


# --- round trips ---------------------------------------------------------------


def test_manifest_round_trip(tmp_path):
    audios = [tone(0.5), tone(0.7, 300.0)]
    manifest = write_manifest(tmp_path / "data", audios, ["Hello, World!", "It's fine."])
    assert manifest == tmp_path / "data" / "manifest.jsonl"
    utterances = read_utterances(manifest, quiet())
    assert [u.text for u in utterances] == ["hello world", "it's fine"]
    assert [u.source for u in utterances] == [f"{manifest}:1", f"{manifest}:2"]
    for utterance, audio in zip(utterances, audios):
        assert utterance.audio.dtype == np.float32
        np.testing.assert_allclose(utterance.audio, audio, atol=1e-4)  # 16-bit quantisation


def test_manifest_folder_is_read_like_its_manifest(tmp_path):
    write_manifest(tmp_path, [tone()], ["hello"])
    assert detect_format(tmp_path) == "nemo-manifest"
    assert [u.text for u in read_utterances(tmp_path, quiet())] == ["hello"]


def test_manifest_paths_may_be_relative_or_absolute(tmp_path):
    write_manifest(tmp_path / "elsewhere", [tone()], ["x"])
    wav = tmp_path / "elsewhere" / "audio" / "000000001.wav"
    (tmp_path / "m").mkdir()
    manifest = write_lines(tmp_path / "m" / "train.json", [
        entry(str(wav), "absolute"),
        entry("../elsewhere/audio/000000001.wav", "relative"),
    ])
    assert [u.text for u in read_utterances(manifest, quiet())] == ["absolute", "relative"]


def test_librispeech_round_trip(tmp_path):
    audios = [tone(0.5), tone(0.6, 330.0)]
    root = write_librispeech(tmp_path / "ls", audios, ["HELLO WORLD", "DON'T GO"])
    trans = root / "84" / "121123" / "84-121123.trans.txt"
    assert (root / "84" / "121123" / "84-121123-0000.flac").is_file()
    assert detect_format(root) == detect_format(trans) == "librispeech"
    utterances = read_utterances(root, quiet())
    assert [u.text for u in utterances] == ["hello world", "don't go"]
    assert [u.source for u in utterances] == [f"{trans}:1", f"{trans}:2"]
    for utterance, audio in zip(utterances, audios):
        np.testing.assert_allclose(utterance.audio, audio, atol=1e-4)
    assert [u.text for u in read_utterances(trans, quiet())] == ["hello world", "don't go"]


@pytest.mark.parametrize("rate", [8000, 22050])
def test_other_sample_rates_come_back_at_16_khz(tmp_path, rate):
    manifest = write_manifest(tmp_path, [tone(0.5, sr=rate)], ["hello"], sample_rate=rate)
    (utterance,) = read_utterances(manifest, quiet())
    assert abs(len(utterance.audio) - SAMPLE_RATE // 2) <= 1


def test_multichannel_audio_is_averaged(tmp_path):
    stereo = np.stack([tone(), 0.5 * tone()], axis=1)
    (utterance,) = read_utterances(write_manifest(tmp_path, [stereo], ["hi"]), quiet())
    np.testing.assert_allclose(utterance.audio, 0.75 * tone(), atol=1e-4)


def test_offset_selects_a_segment_of_a_longer_file(tmp_path):
    write_manifest(tmp_path, [tone(1.0)], ["unused"])
    manifest = write_lines(tmp_path / "segments.jsonl", [
        entry("audio/000000001.wav", "first", offset=0.0, duration=0.4),
        entry("audio/000000001.wav", "second", offset=0.5, duration=0.5),
    ])
    utterances = read_utterances(manifest, quiet())
    assert [len(u.audio) for u in utterances] == [6400, 8000]


def test_a_segment_is_the_slice_of_its_file(tmp_path):
    noise = np.random.default_rng(0).uniform(-0.5, 0.5, SAMPLE_RATE).astype(np.float32)
    soundfile.write(tmp_path / "long.flac", noise, SAMPLE_RATE)
    manifest = write_lines(tmp_path / "m.jsonl", [
        entry("long.flac", "second", offset=0.25, duration=0.5),
        entry("long.flac", "last", offset=0.8),  # to the end of the file
    ])
    middle, tail = read_utterances(manifest, quiet())
    whole = soundfile.read(tmp_path / "long.flac", dtype="float32")[0]
    np.testing.assert_array_equal(middle.audio, whole[4000:12000])
    np.testing.assert_array_equal(tail.audio, whole[12800:])


def test_a_resampled_segment_matches_the_resampled_file_away_from_its_edges(tmp_path):
    soundfile.write(tmp_path / "slow.wav", tone(1.0, sr=8000), 8000)
    manifest = write_lines(tmp_path / "m.jsonl", [entry("slow.wav", "hello", offset=0.3, duration=0.4)])
    (utterance,) = read_utterances(manifest, quiet())
    assert len(utterance.audio) == 6400  # round(0.7 * 16000) - round(0.3 * 16000)
    whole = read_utterances(write_lines(tmp_path / "w.jsonl", [entry("slow.wav", "hello")]), quiet())[0].audio
    np.testing.assert_allclose(utterance.audio[200:-200], whole[4800 + 200:11200 - 200], atol=1e-3)


def test_segments_are_limited_by_their_own_size_not_their_file(tmp_path, monkeypatch):
    import oracle_kd.tasks.speech.audio as audio

    monkeypatch.setattr(audio, "MAX_SAMPLES", 10_000)  # the 1 s file has 16,000
    soundfile.write(tmp_path / "long.wav", tone(1.0), SAMPLE_RATE)
    manifest = write_lines(tmp_path / "m.jsonl", [
        entry("long.wav", "segment", offset=0.1, duration=0.5),
        entry("long.wav", "whole"),
        entry("long.wav", "too long a segment", offset=0.0, duration=0.9),
    ])
    skips = quiet()
    assert [u.text for u in read_utterances(manifest, skips)] == ["segment"]
    assert [s.source for s in skips.items] == [f"{manifest}:2", f"{manifest}:3"]
    assert all("more than the limit of 10,000 samples" in s.reason for s in skips.items)


@pytest.mark.parametrize("name, reason", [
    ("cut.wav", "segment 0.60-0.90 s lies beyond the end of the audio (0.50 s)"),  # libsndfile counts what is there
    ("cut.flac", "truncated or corrupt audio"),  # the header still declares 1 s
])
def test_a_segment_a_truncated_file_cannot_give_is_skipped_with_its_reason(tmp_path, name, reason):
    noise = np.random.default_rng(0).uniform(-0.5, 0.5, SAMPLE_RATE).astype(np.float32)
    buffer = io.BytesIO()
    soundfile.write(buffer, noise, SAMPLE_RATE, format=name.split(".")[1].upper())
    data = buffer.getvalue()
    (tmp_path / name).write_bytes(data[: 44 + 2 * 8000] if name.endswith("wav") else data[: len(data) // 2])
    soundfile.write(tmp_path / "good.wav", tone(0.5), SAMPLE_RATE)
    manifest = write_lines(tmp_path / "m.jsonl", [entry(text="first"), entry(name, "late", offset=0.6, duration=0.3)])
    skips = quiet()
    assert [u.text for u in read_utterances(manifest, skips)] == ["first"]
    assert reason in skips.items[0].reason and skips.items[0].source == f"{manifest}:2"


def test_rounded_manifest_durations_are_accepted(tmp_path):
    manifest = write_manifest(tmp_path, [tone(0.5)], ["hello"])
    line = json.loads(manifest.read_text())
    write_lines(manifest, [json.dumps({**line, "duration": 0.53})])
    skips = quiet()
    assert len(read_utterances(manifest, skips)) == 1 and len(skips) == 0


# --- the transcript rule -------------------------------------------------------


@pytest.mark.parametrize("raw, text", [
    ("Café au lait", "cafe au lait"),
    ("naïve  résumé", "naive resume"),
    ("don\u2019t", "don't"),
    ("Well-known, isn't it?", "well known isn't it"),
    ("\ufb01ne \uff21\uff22", "fine ab"),  # ligature, fullwidth letters
    ("  \"Quoted\" (aside) -- end.  ", "quoted aside end"),
])
def test_transcripts_fold_accents_and_drop_punctuation(raw, text):
    assert check_transcript(raw) == (text, None)


@pytest.mark.parametrize("raw, reason", [
    ("", "empty transcript"),
    ("?!", "is empty after normalisation"),
    ("in 1984 we", "digits in transcript: '1984' (spell numbers out)"),
    ("room \uff12", "digits in transcript: '2'"),  # fullwidth digit
    ("salt & pepper", "spoken symbol in transcript: '&'"),
    ("die Straße", "characters outside the vocabulary (a-z, apostrophe): 'ß'"),
    ("москва", "characters outside the vocabulary"),
])
def test_transcripts_that_would_need_changing_are_refused(raw, reason):
    text, problem = check_transcript(raw)
    assert text == "" and reason in problem


# --- detect_format -------------------------------------------------------------


def test_missing_path_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="data path not found"):
        detect_format(tmp_path / "nope")
    with pytest.raises(InputError, match="data path not found"):
        read_utterances(tmp_path / "nope", quiet())


def test_other_files_and_folders_are_refused_with_a_hint(tmp_path):
    (tmp_path / "data.csv").write_text("a,b\n")
    with pytest.raises(InputError, match="NeMo manifest"):
        detect_format(tmp_path / "data.csv")
    (tmp_path / "train_manifest.json").write_text("")
    with pytest.raises(InputError, match="neither .* LibriSpeech .*train_manifest.json"):
        detect_format(tmp_path)


def test_a_folder_of_several_librispeech_splits_is_refused(tmp_path):
    write_librispeech(tmp_path / "train-clean-100", [tone()], ["a"])
    write_librispeech(tmp_path / "dev-clean", [tone()], ["b"])
    with pytest.raises(InputError, match="several LibriSpeech splits .*dev-clean, train-clean-100"):
        read_utterances(tmp_path, quiet())
    assert len(read_utterances(tmp_path / "dev-clean", quiet())) == 1


def test_a_json_array_is_not_a_manifest(tmp_path):
    path = tmp_path / "m.json"
    path.write_text(json.dumps([{"audio_filepath": "a.wav", "text": "a"}], indent=1))
    with pytest.raises(InputError, match="JSON array.*one JSON object per line"):
        read_utterances(path, quiet())


# --- bad manifest lines: one skip each, the rest still read --------------------


def wav_bytes(wave, subtype="PCM_16"):
    buffer = io.BytesIO()
    soundfile.write(buffer, wave, SAMPLE_RATE, format="WAV", subtype=subtype)
    return buffer.getvalue()


BAD_MANIFEST_LINES = [
    ("this is not json", None, "line is not JSON"),
    ("[1, 2]", None, "not an object"),
    ('{"text": "hello"}', None, "missing key 'audio_filepath'"),
    ('{"audio_filepath": "good.wav"}', None, "missing key 'text'"),
    (entry(text=None), None, "'text' is not a string"),
    (entry(duration="long"), None, "'duration' is not a number of seconds"),
    (entry("missing.wav"), None, "audio file not found"),
    (entry("corrupt.wav"), b"RIFF but not really a wave file", "unreadable audio"),
    (entry("zero.wav"), b"", "empty audio file (0 bytes)"),
    (entry("empty.wav"), wav_bytes(np.zeros(0, np.float32)), "empty audio (0 samples)"),
    (entry("cut.wav"), wav_bytes(tone(0.5))[:6000], "truncated audio"),
    (entry("zeros.wav"), wav_bytes(np.zeros(8000, np.float32)), "silent audio (all samples are zero)"),
    (entry("hush.wav"), wav_bytes(tone(0.5) * 1e-4, "FLOAT"), "silent audio (peak amplitude"),
    (entry(text=""), None, "empty transcript"),
    (entry(text="..."), None, "empty after normalisation"),
    (entry(text="in 1984"), None, "digits in transcript: '1984' (spell numbers out)"),
    (entry(text="caffè ß"), None, "outside the vocabulary"),
    (entry(duration=3.0), None, "manifest duration 3.00 s but the audio is 0.50 s long"),
    (entry(offset=2.0, duration=1.0), None, "lies beyond the end of the audio"),
]


@pytest.mark.parametrize("line, file_bytes, reason", BAD_MANIFEST_LINES)
def test_bad_manifest_line_is_skipped_once_with_file_and_line(tmp_path, line, file_bytes, reason):
    soundfile.write(tmp_path / "good.wav", tone(0.5), SAMPLE_RATE)
    if file_bytes is not None:
        (tmp_path / json.loads(line)["audio_filepath"]).write_bytes(file_bytes)
    manifest = write_lines(tmp_path / "m.jsonl", [entry(text="first"), line, entry(text="last")])
    skips = quiet()
    utterances = read_utterances(manifest, skips)
    assert [u.text for u in utterances] == ["first", "last"]
    assert len(skips) == 1
    assert skips.items[0].source == f"{manifest}:2"
    assert reason in skips.items[0].reason


def test_audio_reasons_name_the_audio_file(tmp_path):
    soundfile.write(tmp_path / "good.wav", tone(0.5), SAMPLE_RATE)
    manifest = write_lines(tmp_path / "m.jsonl", [entry(), entry("missing.wav")])
    skips = quiet()
    read_utterances(manifest, skips)
    assert skips.items[0].reason == f"audio file not found: {tmp_path / 'missing.wav'}"


def test_bom_blank_lines_crlf_and_invalid_utf8(tmp_path):
    soundfile.write(tmp_path / "good.wav", tone(0.5), SAMPLE_RATE)
    text = "\ufeff" + entry(text="one") + "\r\n\r\n" + entry(text="two") + "\r\n"
    manifest = tmp_path / "m.jsonl"
    manifest.write_bytes(text.encode() + b'{"audio_filepath": "good.wav", "text": "caf\xe9"}\n')
    skips = quiet()
    assert [u.text for u in read_utterances(manifest, skips)] == ["one", "two"]
    assert [(s.source, s.reason) for s in skips.items] == [(f"{manifest}:4", "line is not valid UTF-8 text")]


def test_audio_too_short_for_its_transcript_under_ctc(tmp_path):
    soundfile.write(tmp_path / "good.wav", tone(0.5), SAMPLE_RATE)
    long_text = "abcdefghij abcdefghij abcdefgh"  # 30 characters; 0.5 s at 50/s is 25 frames
    manifest = write_lines(tmp_path / "m.jsonl", [entry(text="hello"), entry(text=long_text)])
    skips = quiet()
    assert [u.text for u in read_utterances(manifest, skips, frame_rate=50)] == ["hello"]
    assert [s.source for s in skips.items] == [f"{manifest}:2"]
    assert "25 frames" in skips.items[0].reason and "needs 30" in skips.items[0].reason


def test_repeated_letters_need_a_blank_between_them(tmp_path):
    soundfile.write(tmp_path / "good.wav", tone(0.1), SAMPLE_RATE)  # 5 frames at 50/s
    manifest = write_lines(tmp_path / "m.jsonl", [entry(text="abcde"), entry(text="aabb")])
    skips = quiet()
    assert [u.text for u in read_utterances(manifest, skips, frame_rate=50)] == ["abcde"]
    assert "needs 6" in skips.items[0].reason  # 4 characters + 2 repeats


def test_min_frames_per_char(tmp_path):
    soundfile.write(tmp_path / "good.wav", tone(0.5), SAMPLE_RATE)  # 25 frames at 50/s
    manifest = write_lines(tmp_path / "m.jsonl", [entry(text="abcde"), entry(text="abcdefghij")])
    skips = quiet()
    kept = read_utterances(manifest, skips, min_frames_per_char=3, frame_rate=50)
    assert [u.text for u in kept] == ["abcde"]
    assert "needs 30 (3 per character)" in skips.items[0].reason
    with pytest.raises(ValueError, match="needs frame_rate"):
        read_utterances(manifest, quiet(), min_frames_per_char=3)


def test_all_bad_is_an_input_error_with_the_count(tmp_path):
    manifest = write_lines(tmp_path / "m.jsonl", ["nope", entry("missing.wav"), entry(text="42")])
    skips = quiet()
    with pytest.raises(InputError, match="no usable utterances.*all 3 utterances were skipped"):
        read_utterances(manifest, skips)
    assert len(skips) == 3


def test_empty_manifest_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="no utterances"):
        read_utterances(write_lines(tmp_path / "m.jsonl", ["", "  "]), quiet())


# --- bad LibriSpeech lines -----------------------------------------------------


BAD_TRANS_LINES = [
    ("84-121123-0009 HELLO", "audio file not found"),
    ("84-121123-0000", "empty transcript"),
    ("84-121123-0000 CHAPTER 12", "digits in transcript: '12'"),
]


@pytest.mark.parametrize("line, reason", BAD_TRANS_LINES)
def test_bad_librispeech_line_is_skipped_once_with_file_and_line(tmp_path, line, reason):
    root = write_librispeech(tmp_path, [tone(0.5)], ["unused"])
    trans = root / "84" / "121123" / "84-121123.trans.txt"
    write_lines(trans, ["84-121123-0000 FIRST", line, "84-121123-0000 LAST"])
    skips = quiet()
    assert [u.text for u in read_utterances(root, skips)] == ["first", "last"]
    assert len(skips) == 1
    assert skips.items[0].source == f"{trans}:2"
    assert reason in skips.items[0].reason
