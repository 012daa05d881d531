"""Scene text recognition: word images in, lowercase alphanumeric labels out."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from oracle_kd.data import Batch, ListDataset, add_teacher, pad_targets
from oracle_kd.skips import SkipLog, require_usable
from oracle_kd.tasks.scene_text.images import CHARSET, IMAGE_HEIGHT, IMAGE_WIDTH, normalize_label
from oracle_kd.vocab import Vocab, ctc_min_frames

STRIDE = 4  # width downsampling of every scene-text model: 128 px -> 32 frames


class SceneTextTask:
    name = "scene-text"
    vocab = Vocab(CHARSET)
    metric = "word_accuracy"
    higher_is_better = True

    def prepare_data(self, data_cfg: dict, cache_root: Path, progress: bool = True) -> Path:
        from oracle_kd.config import from_dict
        from oracle_kd.tasks.scene_text.render import RenderConfig, render_dataset

        cfg = from_dict(RenderConfig, data_cfg)
        key = json.dumps(data_cfg, sort_keys=True)
        import hashlib

        folder = Path(cache_root) / "scene-text" / hashlib.sha1(key.encode()).hexdigest()[:12]
        return render_dataset(cfg, folder, workers=2, progress=progress)

    def dataset(self, path: Path, split: str | None, skips: SkipLog, train: bool = False) -> Dataset:
        frames = IMAGE_WIDTH // STRIDE
        if split is not None:
            return RenderedSplit(Path(path), split, self.vocab)
        from oracle_kd.tasks.scene_text.formats import read_examples

        examples, before = [], len(skips)
        for ex in read_examples(Path(path), skips, max_label_length=frames):
            ids = self.vocab.encode(ex.label)
            if ctc_min_frames(ids) > frames:
                skips.add(ex.source, f"label {ex.label!r} needs {ctc_min_frames(ids)} CTC frames, the models have {frames}")
                continue
            examples.append({"image": ex.image, "text": ex.label, "source": ex.source})
        skipped = len(skips) - before  # the reader's own skips and the CTC-infeasible ones
        require_usable(examples, len(examples) + skipped, path, skipped, "examples")
        return ListDataset(examples)

    def load_inputs(self, paths: list[str], skips: SkipLog) -> list[dict]:
        from oracle_kd.tasks.scene_text.images import decode_image_bytes

        examples = []
        for p in paths:
            try:
                data = Path(p).read_bytes()
                examples.append({"image": decode_image_bytes(data), "text": "", "source": str(p)})
            except FileNotFoundError:
                skips.add(p, "file not found")
            except (OSError, ValueError) as e:
                skips.add(p, str(e))
        return examples

    def example_inputs(self, n: int) -> list[dict]:
        """`n` unlabelled noise images (for export tracing and benchmarks)."""
        rng = np.random.default_rng(0)
        return [{"image": rng.integers(0, 256, (IMAGE_HEIGHT, IMAGE_WIDTH), dtype=np.uint8), "text": "",
                 "source": f"example-{i}"} for i in range(n)]

    def export_graph(self, model, examples: list[dict]):
        """(module, example inputs) for ONNX: float images in [-1, 1] and their widths."""
        batch = self.collate(examples)
        return model, (batch.sources, batch.source_lengths)

    def collate(self, examples: list[dict]) -> Batch:
        images = np.stack([e["image"] for e in examples])
        sources = torch.from_numpy(images).float().unsqueeze(1) / 127.5 - 1.0  # (batch, 1, H, W) in [-1, 1]
        targets, target_lengths = pad_targets([self.vocab.encode(e["text"]) for e in examples])
        spans = None
        if "spans" in examples[0]:
            spans = torch.full((len(examples), targets.shape[1], 2), float("nan"))
            for row, e in enumerate(examples):
                s = torch.as_tensor(e["spans"][: len(e["text"])], dtype=torch.float32) / STRIDE
                spans[row, : len(s)] = s
        batch = Batch(
            sources=sources,
            source_lengths=torch.full((len(examples),), images.shape[2], dtype=torch.long),
            targets=targets,
            target_lengths=target_lengths,
            texts=[e["text"] for e in examples],
            indices=torch.tensor([e.get("index", -1) for e in examples]),
            spans=spans,
        )
        return add_teacher(batch, examples)

    def build_model(self, kind: str, cfg: dict) -> torch.nn.Module:
        from oracle_kd.tasks.scene_text.models import build_model

        return build_model(kind, cfg, self.vocab.num_classes)

    def frame_count(self, source_length: int, model_cfg: dict) -> int:
        return source_length // STRIDE

    def score(self, hypotheses: list[str], references: list[str]) -> dict[str, float]:
        import jiwer

        hyps = [normalize_label(h) for h in hypotheses]
        refs = [normalize_label(r) for r in references]
        if not refs:
            return {"word_accuracy": 0.0, "cer": 1.0}
        accuracy = sum(h == r for h, r in zip(hyps, refs)) / len(refs)
        return {"word_accuracy": accuracy, "cer": float(jiwer.cer(refs, hyps))}

    def plot_spikes(self, ax, example, title, label_ids, spike_frames, frames):
        ax.imshow(example["image"], cmap="gray", aspect="auto", extent=(0, IMAGE_WIDTH, IMAGE_WIDTH // 4, 0))
        scale = IMAGE_WIDTH / frames
        for k, t in zip(label_ids, spike_frames):
            x = (t + 0.5) * scale
            ax.axvline(x, color="red", lw=0.8)
            ax.text(x, 2, self.vocab.decode([k]), color="yellow", fontsize=8, ha="center", va="top",
                    bbox=dict(facecolor="black", alpha=0.6, pad=0.5, lw=0))
        ax.set_title(title, fontsize=8, loc="left")
        ax.set_xticks([])
        ax.set_yticks([])


class RenderedSplit(Dataset):
    """One split of the generated cache, memory-mapped (see render.py for the layout)."""

    def __init__(self, folder: Path, split: str, vocab: Vocab):
        self.images = np.load(folder / f"{split}_images.npy", mmap_mode="r")
        self.spans = np.load(folder / f"{split}_spans.npy", mmap_mode="r")
        self.texts = [normalize_label(t) for t in json.loads((folder / f"{split}_texts.json").read_text())]
        self.source = f"{folder}:{split}"

    def __len__(self):
        return len(self.texts)

    def __getitem__(self, i):
        return {"image": np.array(self.images[i]), "text": self.texts[i], "spans": np.array(self.spans[i]),
                "index": i, "source": f"{self.source}:{i}"}

