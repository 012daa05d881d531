"""Scene text recognition: word images in, lowercase alphanumeric labels out."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from oracle_kd.data import Batch, pad_targets
from oracle_kd.lazy import LazyDataset
from oracle_kd.skips import SkipLog, require_usable
from oracle_kd.tasks.base import ExportSpec, MetricSpec, corpus_error_rate, preset_student_config
from oracle_kd.tasks.scene_text.images import CHARSET, IMAGE_HEIGHT, IMAGE_WIDTH, normalize_label
from oracle_kd.tasks.scene_text.models import conv_config, frame_count, width_stride
from oracle_kd.tasks.spans import pad_label_spans
from oracle_kd.vocab import Vocab, ctc_min_frames

PIXEL_DIVISOR, PIXEL_OFFSET = 127.5, 1.0  # uint8 pixel p -> p / 127.5 - 1.0, in [-1, 1]

# How `recognize` turns an image file into the graph's input (see images.to_model_image), for
# deployments that do it without this package: the exported file's `input` metadata.
PREPROCESSING = {
    "kind": "image",
    "color": "grayscale",  # PIL's convert("L") (ITU-R 601-2 luma)
    "height": IMAGE_HEIGHT,
    "width": IMAGE_WIDTH,
    "resize": "stretch to height x width, bilinear (PIL Image.Resampling.BILINEAR); the graph takes other "
              "widths too, but training saw only this one",
    "layout": "NCHW",
    "channels": 1,
    "dtype": "float32",
    "normalize": {"divide": PIXEL_DIVISOR, "subtract": PIXEL_OFFSET},  # uint8 pixel p -> p / 127.5 - 1.0
    "source_lengths": "each image's width in pixels (int64)",
}


class SceneTextTask:
    name = "scene-text"
    metrics = MetricSpec(primary="word_accuracy", higher_is_better=True, tie_break="cer", tie_break_higher=False,
                         blank_score={"word_accuracy": 0.0, "cer": 1.0})
    metric, higher_is_better = metrics.primary, metrics.higher_is_better  # aliases the core still reads
    tokenizer = Vocab(CHARSET)
    vocab = tokenizer  # alias the core still reads
    input_kind = "files"  # image files
    inference_command = "recognize"

    def prepare_data(self, data_cfg: dict, cache_root: Path, progress: bool = True) -> Path:
        from oracle_kd.config import from_dict
        from oracle_kd.tasks.scene_text.render import RenderConfig, render_dataset

        cfg = from_dict(RenderConfig, data_cfg)
        key = json.dumps(data_cfg, sort_keys=True)
        import hashlib

        folder = Path(cache_root) / "scene-text" / hashlib.sha1(key.encode()).hexdigest()[:12]
        return render_dataset(cfg, folder, workers=2, progress=progress)

    def dataset(self, path: Path, split: str | None, skips: SkipLog, train: bool = False,
                model_cfg: dict | None = None, data_root: Path | None = None) -> Dataset:
        """See `Task.dataset`; `model_cfg` None: the `quick` preset's student config."""
        model_cfg = preset_student_config(self.name) if model_cfg is None else model_cfg
        if split is not None:
            return RenderedSplit(Path(path), split, pixels_per_frame=width_stride(conv_config(model_cfg)))
        from oracle_kd.tasks.scene_text.formats import index_examples

        frames = self.frame_count(IMAGE_WIDTH, model_cfg)  # every image is stretched to IMAGE_WIDTH
        index, before = index_examples(Path(path), skips, max_label_length=frames, data_root=data_root), len(skips)
        rows = []
        for i, label in enumerate(index.labels):
            need = ctc_min_frames(self.tokenizer.encode(label))
            if need > frames:
                skips.add(index.source(i), f"label {label!r} needs {need} CTC frames, the models have {frames}")
            else:
                rows.append(i)
        skipped = index.skipped + len(skips) - before  # the reader's own skips and the CTC-infeasible ones
        require_usable(rows, index.total, path, skipped, "examples")
        return LazyImages(index.select(rows) if len(rows) < len(index) else index)

    def load_inputs(self, paths: list[str], skips: SkipLog) -> list[dict]:
        from oracle_kd.safety import BadFile, read_bytes
        from oracle_kd.tasks.scene_text.images import decode_image_bytes

        examples = []
        for p in paths:
            try:
                examples.append({"image": decode_image_bytes(read_bytes(p)), "text": "", "source": str(p)})
            except BadFile as e:
                skips.add(p, e.reason)
            except ValueError as e:
                skips.add(p, str(e))
        return examples

    def example_inputs(self, n: int) -> list[dict]:
        """`n` unlabelled noise images (for export tracing and benchmarks)."""
        rng = np.random.default_rng(0)
        return [{"image": rng.integers(0, 256, (IMAGE_HEIGHT, IMAGE_WIDTH), dtype=np.uint8), "text": "",
                 "source": f"example-{i}"} for i in range(n)]

    def export_spec(self) -> ExportSpec:
        """Float images (batch, 1, IMAGE_HEIGHT, width) in [-1, 1] and their widths in pixels."""
        return ExportSpec(input_names=("sources", "source_lengths"), input_dtypes=("float32", "int64"),
                          dynamic_axes={"sources": {0: "batch", 3: "width"}, "source_lengths": {0: "batch"}},
                          preprocessing=PREPROCESSING)

    def export_graph(self, model, examples: list[dict]):
        """(module, example inputs) for ONNX: float images in [-1, 1] and their widths."""
        return model, self.export_inputs(examples)

    def export_inputs(self, examples: list[dict]) -> tuple[torch.Tensor, torch.Tensor]:
        batch = self.collate(examples)
        return batch.sources, batch.source_lengths

    def collate(self, examples: list[dict]) -> Batch:
        images = np.stack([e["image"] for e in examples])
        sources = torch.from_numpy(images).float().unsqueeze(1) / PIXEL_DIVISOR - PIXEL_OFFSET  # (batch, 1, H, W) in [-1, 1]
        targets, target_lengths = pad_targets([self.tokenizer.encode(e["text"]) for e in examples])
        return Batch(
            sources=sources,
            source_lengths=torch.full((len(examples),), images.shape[2], dtype=torch.long),
            targets=targets,
            target_lengths=target_lengths,
            texts=[e["text"] for e in examples],
            indices=torch.tensor([e.get("index", -1) for e in examples]),
            spans=pad_label_spans(examples, targets.shape[1]),
        )

    def build_model(self, kind: str, cfg: dict) -> torch.nn.Module:
        from oracle_kd.tasks.scene_text.models import build_model

        return build_model(kind, cfg, self.tokenizer.num_classes)

    def frame_count(self, source_length: int, model_cfg: dict) -> int:
        """Frames a model of config `model_cfg` emits for an image `source_length` pixels wide."""
        return frame_count(conv_config(model_cfg), source_length)

    def score(self, hypotheses: list[str], references: list[str]) -> dict[str, float]:
        import jiwer

        if not references:
            return dict(self.metrics.blank_score)
        hyps = [normalize_label(h) for h in hypotheses]
        refs = [normalize_label(r) for r in references]
        accuracy = sum(h == r for h, r in zip(hyps, refs)) / len(refs)
        return {"word_accuracy": accuracy, "cer": corpus_error_rate(jiwer.process_characters, refs, hyps)}

    def example_errors(self, hypotheses: list[str], references: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(1.0 per wrong word after normalize_label, else 0.0; 1.0 each): 1 - word accuracy."""
        errors = [float(normalize_label(h) != normalize_label(r)) for h, r in zip(hypotheses, references)]
        return np.array(errors, dtype=np.float64), np.ones(len(errors), dtype=np.float64)

    def plot_spikes(self, ax, example, title, label_ids, spike_frames, frames):
        ax.imshow(example["image"], cmap="gray", aspect="auto", extent=(0, IMAGE_WIDTH, IMAGE_HEIGHT, 0))
        from oracle_kd.plots import fit_title, spike_labels

        xs = [(t + 0.5) * IMAGE_WIDTH / frames for t in spike_frames]  # a frame's centre, in pixels
        for x in xs:
            ax.axvline(x, color="red", lw=0.8)
        spike_labels(ax, xs, [self.tokenizer.decode([k]) for k in label_ids], color="yellow", fontsize=8,
                     bbox=dict(facecolor="black", alpha=0.6, pad=0.5, lw=0))
        fit_title(ax, title)
        ax.set_xticks([])
        ax.set_yticks([])


class RenderedSplit(Dataset):
    """One split of the generated cache, memory-mapped (see render.py for the layout).

    Each example's `label_spans` (labels, 2) are its characters' x-extents in frame
    units of a model that emits one frame per `pixels_per_frame` pixels."""

    def __init__(self, folder: Path, split: str, pixels_per_frame: int):
        self.images = np.load(folder / f"{split}_images.npy", mmap_mode="r")
        self.spans = np.load(folder / f"{split}_spans.npy", mmap_mode="r")  # pixels, -1 past the label
        self.texts = [normalize_label(t) for t in json.loads((folder / f"{split}_texts.json").read_text())]
        self.source, self.pixels_per_frame = f"{folder}:{split}", pixels_per_frame

    def __len__(self):
        return len(self.texts)

    def identity(self) -> str:
        """A digest of the split's images and labels: every example is drawn from (seed, split,
        index) alone, so the same examples have the same identity whatever the other splits'
        sizes (a larger test set leaves the training runs reusable)."""
        if not hasattr(self, "_identity"):
            digest = hashlib.sha1(json.dumps(self.texts).encode())
            for start in range(0, len(self.images), 4096):
                digest.update(np.ascontiguousarray(self.images[start : start + 4096]).tobytes())
            self._identity = f"scene-text:{len(self)}:{digest.hexdigest()[:16]}"
        return self._identity

    def __getitem__(self, i):
        text = self.texts[i]
        return {"image": np.array(self.images[i]), "text": text,
                "label_spans": np.array(self.spans[i][: len(text)], dtype=np.float32) / self.pixels_per_frame,
                "index": i, "source": f"{self.source}:{i}"}



class LazyImages(LazyDataset):
    """A user data set (labels.tsv folder or LMDB) whose images are decoded when read
    (see `formats.index_examples`): the same examples `formats.read_examples` gives."""

    def __init__(self, index):
        self.index, self.texts = index, index.labels

    def source(self, i: int) -> str:
        return self.index.source(i)

    def read(self, i: int):
        image, problem = self.index.load(i)
        if problem:
            return None, problem
        return {"image": image, "text": self.texts[i], "source": self.index.source(i)}, None
