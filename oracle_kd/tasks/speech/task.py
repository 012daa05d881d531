"""Speech recognition: 16 kHz audio in, lowercase characters (a-z, apostrophe, space) out."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from oracle_kd.data import Batch, pad_targets
from oracle_kd.io import InputError
from oracle_kd.lazy import LazyDataset
from oracle_kd.models.layers import fold_batch_norms
from oracle_kd.skips import SkipLog, require_usable
from oracle_kd.tasks.base import ExportSpec, MetricSpec, corpus_error_rate, preset_student_config
from oracle_kd.tasks.spans import pad_label_spans
from oracle_kd.tasks.speech.audio import (HOP_LENGTH, LOG_FLOOR, N_FFT, N_MELS, SAMPLE_RATE, WIN_LENGTH, LogMel,
                                          feature_frames, spec_augment)
from oracle_kd.tasks.speech.models import conv_out_length, frame_stride
from oracle_kd.vocab import Vocab, ctc_min_frames

CHARSET = "abcdefghijklmnopqrstuvwxyz' "  # the label set (blank excluded); space separates words
SOURCES = ("log-mel", "waveform")  # what `collate` can hand the models (see SpeechTask)
PCM16_SCALE = np.float32(1 / 32768)  # int16 PCM -> float samples: exact, as a division would be
FEATURE_CACHE_MB = 2048  # float32 log-mel features a process keeps (FeatureCache); beyond, computed each time

# How `transcribe` turns an audio file into the graph's input (see audio.load_audio), for
# deployments that do it without this package: the exported file's `input` metadata. The
# front end is inside the graph; its parameters are listed for reference only.
PREPROCESSING = {
    "kind": "audio",
    "sample_rate": SAMPLE_RATE,  # resample anything else to this (transcribe uses soxr)
    "channels": "mono: the mean of the file's channels",
    "dtype": "float32",
    "scale": "[-1, 1]: 16-bit PCM sample / 32768",
    "layout": "(batch, samples), zero-padded past each waveform's end",
    "source_lengths": "each waveform's length in samples (int64)",
    "front_end": {"in_graph": True, "features": "log-mel, normalised per utterance and mel bin",
                  "n_fft": N_FFT, "win_length": WIN_LENGTH, "hop_length": HOP_LENGTH, "n_mels": N_MELS,
                  "window": "periodic hann", "mel_scale": "slaney", "log_floor": LOG_FLOOR},
}


def frames_per_second(model_cfg: dict) -> float:
    """CTC frames per second of audio of a model of this config (stride 2: 50, one per 20 ms)."""
    return SAMPLE_RATE / HOP_LENGTH / frame_stride(model_cfg)


class SpeechTask:
    name = "speech"
    metrics = MetricSpec(primary="wer", higher_is_better=False, tie_break="cer", tie_break_higher=False,
                         blank_score={"wer": 1.0, "cer": 1.0})
    metric, higher_is_better = metrics.primary, metrics.higher_is_better  # aliases the core still reads
    tokenizer = Vocab(CHARSET)
    vocab = tokenizer  # alias the core still reads
    input_kind = "files"  # audio files
    inference_command = "transcribe"

    def __init__(self, sources: str = "log-mel"):
        """`sources`: what `collate` hands the models. "log-mel": normalised log-mel features
        (batch, frames, N_MELS), the front end of this package's models. "waveform": the 16 kHz
        samples (batch, samples) in [-1, 1], lengths in samples, for models with a front end of
        their own (Hugging Face's, `speech/hf.py`); SpecAugment, which works on features, is
        then left to the model (wav2vec 2.0 masks its own hidden frames in training)."""
        if sources not in SOURCES:
            raise InputError(f"speech sources must be one of {', '.join(SOURCES)}, not {sources!r}")
        self.sources = sources
        self.frontend = LogMel()
        self.features = FeatureCache(self.frontend)

    def state(self) -> dict:
        """What a checkpoint keeps of the task: nothing for log-mel features (the default, and
        what checkpoints without it hold), the source kind otherwise."""
        return {} if self.sources == "log-mel" else {"sources": self.sources}

    def restore(self, state: dict) -> None:
        sources = state.get("sources", "log-mel")
        if sources not in SOURCES:
            raise ValueError(f"unknown speech sources {str(sources)[:40]!r}")
        self.sources = sources

    def prepare_data(self, data_cfg: dict, cache_root: Path, progress: bool = True) -> Path:
        from oracle_kd.config import from_dict
        from oracle_kd.tasks.speech.synth import SpeechConfig, synthesize_dataset

        key = hashlib.sha1(json.dumps(data_cfg, sort_keys=True).encode()).hexdigest()[:12]
        return synthesize_dataset(from_dict(SpeechConfig, data_cfg), Path(cache_root) / "speech" / key,
                                  workers=2, progress=progress, text_cache=Path(cache_root) / "speech" / "text")

    def dataset(self, path: Path, split: str | None, skips: SkipLog, train: bool = False,
                model_cfg: dict | None = None, data_root: Path | None = None) -> Dataset:
        """See `Task.dataset`; `model_cfg` None: the `quick` preset's student config."""
        model_cfg = preset_student_config(self.name) if model_cfg is None else model_cfg
        if split is not None:
            return SynthSplit(Path(path), split, augment=train, frames_per_second=frames_per_second(model_cfg))
        from oracle_kd.tasks.speech.formats import index_utterances

        # the CTC length check below uses the exact frame count: of the header's length here,
        # of the decoded samples again when an utterance is read
        index, before = index_utterances(Path(path), skips, data_root=data_root), len(skips)
        rows = []
        for i in range(len(index)):
            problem = ctc_problem(model_cfg, index.samples[i], index.texts[i])
            if problem:
                skips.add(index.sources[i], problem)
            else:
                rows.append(i)
        skipped = index.skipped + len(skips) - before  # the reader's own skips and the CTC-infeasible ones
        require_usable(rows, index.total, path, skipped, "utterances")
        return LazyAudio(index.select(rows) if len(rows) < len(index) else index, model_cfg, augment=train)

    def load_inputs(self, paths: list[str], skips: SkipLog) -> list[dict]:
        from oracle_kd.tasks.speech.audio import load_audio

        examples = []
        for p in paths:
            try:  # load_audio's reasons name what is wrong: missing, a folder, empty, truncated...
                examples.append({"audio": load_audio(p), "text": "", "source": str(p)})
            except (OSError, ValueError, RuntimeError) as e:
                skips.add(p, str(e))
        return examples

    def stream_inputs(self, paths: list[str], model_cfg: dict | None = None, chunk_seconds: float | None = None):
        """Inference pieces of audio files of any length, read a block at a time: overlapping
        windows of about `chunk_seconds` (default stream.CHUNK_SECONDS) plus the context the
        model of config `model_cfg` reads on each side (see stream.py); an unreadable file is
        one error piece."""
        from oracle_kd.tasks.speech.stream import CHUNK_SECONDS, stream_windows, windows_for

        model_cfg = preset_student_config(self.name) if model_cfg is None else model_cfg
        return stream_windows(paths, windows_for(model_cfg, chunk_seconds or CHUNK_SECONDS))

    def example_inputs(self, n: int) -> list[dict]:
        rng = np.random.default_rng(0)
        return [{"audio": (0.1 * rng.standard_normal(SAMPLE_RATE)).astype(np.float32), "text": "",
                 "source": f"example-{i}"} for i in range(n)]

    @staticmethod
    def duration_seconds(example: dict) -> float:
        """How long an input lasts (for the real-time factor of inference)."""
        return len(example["audio"]) / SAMPLE_RATE

    def export_spec(self) -> ExportSpec:
        """Float32 16 kHz waveforms (batch, samples), zero-padded, and their lengths in samples."""
        preprocessing = PREPROCESSING
        if self.sources == "waveform":  # the model's own front end reads the samples
            preprocessing = {**PREPROCESSING, "front_end": {"in_graph": True, "features": "the model's own"}}
        return ExportSpec(input_names=("sources", "source_lengths"), input_dtypes=("float32", "int64"),
                          dynamic_axes={"sources": {0: "batch", 1: "samples"}, "source_lengths": {0: "batch"}},
                          preprocessing=preprocessing)

    def export_graph(self, model, examples: list[dict]):
        """(module, example inputs) for ONNX: padded 16 kHz waveforms and their lengths in samples."""
        graph = model if self.sources == "waveform" else WaveformModel(self.frontend, fold_batch_norms(model))
        return graph, self.export_inputs(examples)

    def export_inputs(self, examples: list[dict]) -> tuple[torch.Tensor, torch.Tensor]:
        return pad_waveforms(examples)

    def collate(self, examples: list[dict]) -> Batch:
        if self.sources == "log-mel":
            sources, source_lengths = self.features(examples)
            rows = torch.tensor([bool(e.get("augment")) for e in examples])
            if rows.all():  # training: every row, without copying rows out and back
                sources = spec_augment(sources, source_lengths)
            elif rows.any():
                sources[rows] = spec_augment(sources[rows], source_lengths[rows])
        else:
            sources, source_lengths = pad_waveforms(examples)
        targets, target_lengths = pad_targets([self.tokenizer.encode(e["text"]) for e in examples])
        return Batch(sources=sources, source_lengths=source_lengths, targets=targets, target_lengths=target_lengths,
                     texts=[e["text"] for e in examples],
                     indices=torch.tensor([e.get("index", -1) for e in examples]),
                     spans=pad_label_spans(examples, targets.shape[1]))

    def build_model(self, kind: str, cfg: dict) -> torch.nn.Module:
        from oracle_kd.tasks.speech.models import build_model

        return build_model(kind, cfg, self.tokenizer.num_classes)

    def frame_count(self, source_length: int, model_cfg: dict) -> int:
        """CTC frames a model of config `model_cfg` emits for `source_length` audio samples
        (the same derivation as the models' own `frame_count`, on the front end's frames)."""
        return ctc_frames(source_length, model_cfg)

    def score(self, hypotheses: list[str], references: list[str]) -> dict[str, float]:
        import jiwer

        if not references:
            return dict(self.metrics.blank_score)
        hyps = [h.strip() for h in hypotheses]
        return {"wer": corpus_error_rate(jiwer.process_words, references, hyps),
                "cer": corpus_error_rate(jiwer.process_characters, references, hyps)}

    def example_errors(self, hypotheses: list[str], references: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(word edits, reference words) per utterance, from the alignment jiwer scores the
        corpus WER with, so errors.sum() / units.sum() is `score`'s wer. An empty reference
        (the data readers skip them) counts its hypothesis words as edits over 1 unit."""
        import jiwer

        errors, units = np.zeros(len(references)), np.ones(len(references))
        rows = [i for i, r in enumerate(references) if r.split()]  # jiwer 3 refuses empty references
        for i in set(range(len(references))) - set(rows):
            errors[i] = len(hypotheses[i].split())  # every hypothesis word is an insertion
        if rows:
            out = jiwer.process_words([references[i] for i in rows], [hypotheses[i].strip() for i in rows])
            for i, ref, chunks in zip(rows, out.references, out.alignments):
                units[i] = max(1, len(ref))
                errors[i] = sum(max(c.ref_end_idx - c.ref_start_idx, c.hyp_end_idx - c.hyp_start_idx)
                                for c in chunks if c.type != "equal")
        return errors, units

    def plot_spikes(self, ax, example, title, label_ids, spike_frames, frames):
        audio = torch.from_numpy(float_samples(example["audio"]))[None]
        features, _ = self.frontend(audio, torch.tensor([audio.shape[1]]))
        seconds = audio.shape[1] / SAMPLE_RATE
        ax.imshow(features[0].T.numpy(), origin="lower", aspect="auto", cmap="magma", extent=(0, seconds, 0, 80))
        for start, end in example.get("word_spans", []):
            ax.axvspan(start, end, color="cyan", alpha=0.08)
        from oracle_kd.plots import fit_title, spike_labels

        stride = max(1, round(feature_frames(audio.shape[1]) / frames))  # the model's feature frames per frame
        xs = [(t + 0.5) * stride * HOP_LENGTH / SAMPLE_RATE for t in spike_frames]  # a frame's centre, in seconds
        for x in xs:
            ax.axvline(x, color="white", lw=0.6)
        spike_labels(ax, xs, [self.tokenizer.decode([k]).replace(" ", "_") for k in label_ids], color="yellow",
                     fontsize=6, bbox=dict(facecolor="black", alpha=0.5, pad=0.3, lw=0))
        fit_title(ax, title)
        ax.tick_params(labelsize=6)
        ax.set_yticks([])


def ctc_frames(samples: int, model_cfg: dict) -> int:
    """CTC frames a model of config `model_cfg` emits for `samples` audio samples."""
    return int(conv_out_length(feature_frames(samples), frame_stride(model_cfg)))


def ctc_problem(model_cfg: dict, samples: int, text: str) -> str | None:
    """Why `samples` of audio are too short for `text` under CTC with a model of `model_cfg`, or None."""
    frames = ctc_frames(samples, model_cfg)
    need = ctc_min_frames(SpeechTask.tokenizer.encode(text))
    if need > frames:
        return f"{samples / SAMPLE_RATE:.2f} s of audio gives {frames} CTC frames, the transcript needs {need}"
    return None


class LazyAudio(LazyDataset):
    """A user data set (manifest or LibriSpeech folder) whose audio is decoded when read
    (see `formats.index_utterances`): the same utterances the eager reader and this
    task's CTC check give."""

    def __init__(self, index, model_cfg: dict, augment: bool):
        self.index, self.texts, self.model_cfg, self.augment = index, index.texts, model_cfg, augment
        self.lengths = index.lengths()  # samples, from the headers: batches of similar length

    def source(self, i: int) -> str:
        return self.index.sources[i]

    def read(self, i: int):
        utterance, problem = self.index.load(i)
        if problem:
            return None, problem
        problem = ctc_problem(self.model_cfg, len(utterance.audio), utterance.text)
        if problem:
            return None, problem
        return {"audio": utterance.audio, "text": utterance.text, "source": utterance.source}, None


class FeatureCache:
    """examples -> their normalised log-mel features (batch, frames, N_MELS) and frame counts,
    keeping each utterance's features by its `source` once computed: training reads the same
    utterances every epoch (an experiment, in every run), and the front end was most of the
    speech data wait (issue 16). Kept un-augmented (SpecAugment is drawn anew for every batch),
    in float32, up to `limit_mb` per process; an example without a `source` is never kept, and
    one whose samples differ from those kept under its source is computed anew. An utterance's
    features do not depend on its batch (LogMel), so a batch is the same whichever of its
    utterances were kept, up to float32 rounding."""

    def __init__(self, frontend: LogMel, limit_mb: int = FEATURE_CACHE_MB):
        self.frontend, self.limit = frontend, limit_mb << 20
        self.kept: dict[str, torch.Tensor] = {}
        self.bytes = 0

    def __call__(self, examples: list[dict]) -> tuple[torch.Tensor, torch.Tensor]:
        keys = [fingerprint(e) for e in examples]
        todo = [i for i, key in enumerate(keys) if key not in self.kept]
        if todo:
            with torch.no_grad():
                fresh, fresh_lengths = self.frontend(*pad_waveforms([examples[i] for i in todo]))
            for row, i in enumerate(todo):
                size = int(fresh_lengths[row]) * N_MELS * 4
                if keys[i] is not None and keys[i] not in self.kept and self.bytes + size <= self.limit:
                    self.kept[keys[i]] = fresh[row, : int(fresh_lengths[row])].clone()
                    self.bytes += size
            if len(todo) == len(examples):
                return fresh, fresh_lengths
        done = dict(zip(todo, range(len(todo))))
        parts = [fresh[done[i], : int(fresh_lengths[done[i]])] if i in done else self.kept[key]
                 for i, key in enumerate(keys)]
        lengths = torch.tensor([len(part) for part in parts], dtype=torch.long)
        return torch.nn.utils.rnn.pad_sequence(parts, batch_first=True), lengths


def fingerprint(example: dict) -> tuple | None:
    """What `FeatureCache` keeps an utterance by: its source, its length and 64 of its samples,
    so that a source name reused for other audio (an edited file, a test) is not served stale
    features; None for an example without a source."""
    if not example.get("source"):
        return None
    audio = np.asarray(example["audio"])
    return example["source"], len(audio), audio[:: max(1, len(audio) // 64)][:64].tobytes()


def float_samples(audio, out: np.ndarray | None = None) -> np.ndarray:
    """An example's `audio` as float32 samples, written into `out` if given (a float32 array of
    its length). `audio` is float32 samples, or int16 PCM (full scale 2**15), as the synthesized
    corpus stores it and hands it on: scaled by 2**-15 here, in one exact pass."""
    audio = np.asarray(audio)
    if audio.dtype == np.int16:
        return np.multiply(audio, PCM16_SCALE, out=out, dtype=np.float32)
    if out is None:
        return audio.astype(np.float32, copy=False)
    out[...] = audio
    return out


def pad_waveforms(examples: list[dict]) -> tuple[torch.Tensor, torch.Tensor]:
    """(batch, longest) float32 waveforms padded with zeros, and their lengths in samples
    (each example's samples written straight into its row by `float_samples`).

    Padded in numpy: torch copies long rows in OpenMP regions, whose worker threads then spin-wait
    while ONNX Runtime's session runs on the same cores (the bench's 2-thread speech student:
    23.8 ms in ONNX Runtime with torch's padding, 19.0 with this; eager 18.5)."""
    lengths = np.array([len(e["audio"]) for e in examples], dtype=np.int64)
    audio = np.zeros((len(examples), int(lengths.max())), dtype=np.float32)
    for row, e in enumerate(examples):
        float_samples(e["audio"], out=audio[row, : lengths[row]])
    return torch.from_numpy(audio), torch.from_numpy(lengths)


class WaveformModel(torch.nn.Module):
    """waveforms (batch, samples), lengths -> the model's log-probs: the front end inside the graph."""

    def __init__(self, frontend, model):
        super().__init__()
        self.frontend, self.model = frontend, model

    def forward(self, audio, lengths):
        features, frame_lengths = self.frontend(audio, lengths)
        return self.model(features, frame_lengths)


def char_spans(text: str, word_spans) -> torch.Tensor:
    """(len(text), 2) seconds: each character gets its word's span; spaces are NaN (no single place),
    and so are the characters of words past the last span."""
    space = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32) == ord(" ")
    starts = ~space & np.concatenate(([True], space[:-1]))  # a character after a space (or first) opens a word
    word = np.cumsum(starts) - 1
    spans = np.asarray(word_spans, dtype=np.float32).reshape(-1, 2)
    inside = ~space & (word < len(spans))
    out = np.full((len(text), 2), np.nan, dtype=np.float32)
    out[inside] = spans[word[inside]]
    return torch.from_numpy(out)


class SynthSplit(Dataset):
    """One split of the synthesized corpus (see synth.py for the layout), memory-mapped.

    Each example's `word_spans` are in seconds; its `label_spans` (labels, 2) give every
    character its word's span in frame units of a model emitting `frames_per_second`."""

    def __init__(self, folder: Path, split: str, augment: bool, frames_per_second: float):
        self.audio = np.load(folder / f"{split}_audio.npy", mmap_mode="r")
        self.offsets = np.load(folder / f"{split}_offsets.npy")
        self.meta = [json.loads(line) for line in (folder / f"{split}_meta.jsonl").read_text().splitlines() if line]
        self.augment, self.source = augment, f"{folder}:{split}"
        self.frames_per_second = frames_per_second
        self._label_spans: dict[int, np.ndarray] = {}

    def __len__(self):
        return len(self.meta)

    def identity(self) -> str:
        """A digest of the split's transcripts and audio: the same utterances have the same
        identity wherever the cache is and whatever the other splits hold."""
        if not hasattr(self, "_identity"):
            digest = hashlib.sha1(json.dumps([m["text"] for m in self.meta]).encode())
            digest.update(np.ascontiguousarray(self.offsets).tobytes())
            for start in range(0, len(self.audio), 1 << 24):
                digest.update(np.ascontiguousarray(self.audio[start : start + (1 << 24)]).tobytes())
            self._identity = f"speech:{len(self)}:{digest.hexdigest()[:16]}"
        return self._identity

    def source_lengths(self):
        return np.diff(self.offsets)

    def __getitem__(self, i):
        # int16 PCM as stored (a view of the file): converted where it is read (pad_waveforms), so an
        # utterance whose features are kept (FeatureCache) is never converted again; converting every
        # read was 1 ms of each speech training batch's 3 (issue 16)
        pcm = self.audio[self.offsets[i] : self.offsets[i + 1]]
        m = self.meta[i]
        if i not in self._label_spans:  # computed once: every epoch reads every example
            spans = (char_spans(m["text"], m["word_spans"]) * self.frames_per_second).numpy()
            spans.setflags(write=False)  # shared by every read of the example: nobody may change it
            self._label_spans[i] = spans
        return {"audio": pcm, "text": m["text"], "word_spans": m["word_spans"], "label_spans": self._label_spans[i],
                "index": i, "source": f"{self.source}:{i}", "augment": self.augment}

