"""Translation, English -> German: source subwords in, target subwords out (CTC non-autoregressive).

The tokenizer is data: sentencepiece models trained on the training split when
the data is prepared, saved beside the splits and inside every checkpoint
(`state`/`restore`). Until a data set or a checkpoint has given it one, the task
builds models with a placeholder vocabulary, which is enough to check configs.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from oracle_kd.data import Batch, pad_targets
from oracle_kd.io import InputError, atomic_write_json, atomic_write_text
from oracle_kd.parallel import cache_is_complete
from oracle_kd.safety import confine
from oracle_kd.skips import SkipLog
from oracle_kd.tasks.base import ExportSpec, MetricSpec, preset_student_config
from oracle_kd.tasks.translation.models import upsample_factor
from oracle_kd.tasks.translation.tokenizer import SubwordTokenizer, TokenizerConfig, train_tokenizer
from oracle_kd.vocab import ctc_min_frames

FORMAT_VERSION = 1
SPLITS = ("train", "val", "test")
PLACEHOLDER_VOCAB = 64  # labels of a task without a tokenizer yet: config checks only
# sacrebleu's statistics row is [hyp_len, ref_len, matches_1..4, totals_1..4]; ours puts lengths last
_BLEU_COLUMNS = [2, 3, 4, 5, 6, 7, 8, 9, 0, 1]
BLEU_COLUMNS = 10
CHRF_ORDER = 6  # sacrebleu's chrF defaults: character n-grams 1..6, no word n-grams, beta 2
CHRF_COLUMNS = 3 * CHRF_ORDER
CHRF_BETA = 2.0


@dataclass
class TranslationDataConfig:
    text_source: str = "pypi"  # "pypi": message catalogs (corpus.py); "numbers": offline number words (numbers.py)
    n_train: int = 0  # pairs per split; 0: all the corpus gives ("numbers" needs counts)
    n_val: int = 0
    n_test: int = 0
    seed: int = 0  # which pairs a smaller split keeps
    max_words: int = 40
    vocab_size: int = 1000
    model_type: str = "unigram"
    shared_vocab: bool = False


class TranslationTask:
    name = "translation"
    metrics = MetricSpec(primary="bleu", higher_is_better=True, tie_break="chrf", tie_break_higher=True,
                         blank_score={"bleu": 0.0, "chrf": 0.0})
    metric, higher_is_better = metrics.primary, metrics.higher_is_better
    input_kind = "lines"  # English sentences, one per line of standard input
    inference_command = "translate"

    def __init__(self):
        self.tokenizer: SubwordTokenizer | None = None

    @property
    def vocab(self):
        return self.tokenizer

    # --- the tokenizer travels with data folders and checkpoints ---------------------------

    def state(self) -> dict:
        """What a checkpoint keeps of the task: the tokenizer."""
        return {"tokenizer": self._tokenizer_or_fail().state()}

    def restore(self, state: dict) -> None:
        self.tokenizer = SubwordTokenizer.from_state(state["tokenizer"])

    def _tokenizer_or_fail(self) -> SubwordTokenizer:
        if self.tokenizer is None:
            raise InputError("translation: no tokenizer yet; prepare the data or load a checkpoint first")
        return self.tokenizer

    # --- data --------------------------------------------------------------------------------

    def prepare_data(self, data_cfg: dict, cache_root: Path, progress: bool = True) -> Path:
        from oracle_kd.config import from_dict

        cfg = from_dict(TranslationDataConfig, data_cfg)
        folder = _cache_folder(cfg, cache_root)
        if not cache_is_complete(folder, FORMAT_VERSION, asdict(cfg)):
            write_corpus(cfg, folder, Path(cache_root) / "translation" / "archives")
        self.tokenizer = SubwordTokenizer.from_state(json.loads((folder / "tokenizer.json").read_text()))
        return folder

    def cached_data(self, data_cfg: dict, cache_root: Path) -> Path | None:
        """The folder `prepare_data` would return, if it is already complete; None (and nothing
        fetched or written) otherwise: the benchmarks use the catalogs only where they are cached."""
        from oracle_kd.config import from_dict

        cfg = from_dict(TranslationDataConfig, data_cfg)
        folder = _cache_folder(cfg, cache_root)
        return folder if cache_is_complete(folder, FORMAT_VERSION, asdict(cfg)) else None

    def dataset(self, path: Path, split: str | None, skips: SkipLog, train: bool = False,
                model_cfg: dict | None = None, data_root: Path | None = None) -> Dataset:
        """See `Task.dataset`; a user data set is one file (or two) that names no others, so
        `data_root` confines the data set itself."""
        model_cfg = preset_student_config(self.name) if model_cfg is None else model_cfg
        if split is None:
            outside = confine(path, data_root)
            if outside:
                raise InputError(f"{path}: {outside}")
            return self._user_dataset(Path(path), skips, train, upsample_factor(model_cfg))
        folder = Path(path)
        tokenizer_file = folder / "tokenizer.json"
        if self.tokenizer is None and tokenizer_file.exists():
            self.restore({"tokenizer": json.loads(tokenizer_file.read_text())})
        pairs = read_tsv(folder / f"{split}.tsv")
        return PairSplit(pairs, self._tokenizer_or_fail(), f"{folder}:{split}", upsample_factor(model_cfg),
                         drop_infeasible=train, skips=skips)

    def _user_dataset(self, path: Path, skips: SkipLog, train: bool, upsample: int) -> Dataset:
        """A TSV file or aligned files (formats.py). A task without a tokenizer trains one on the
        first training set it is given (the default TokenizerConfig); any other set needs one."""
        from oracle_kd.tasks.translation.formats import read_pairs

        pairs = read_pairs(path, skips)
        if self.tokenizer is None:
            if not train:
                raise InputError(f"{path}: no tokenizer to read it with; give the training data first, "
                                 "or a checkpoint (it carries its tokenizer)")
            self.tokenizer = train_tokenizer([s for s, _, _ in pairs], [t for _, t, _ in pairs], TokenizerConfig())
        return PairSplit([(s, t) for s, t, _ in pairs], self.tokenizer, str(path), upsample, drop_infeasible=train,
                         skips=skips, names=[where for _, _, where in pairs])

    def example_inputs(self, n: int) -> list[dict]:
        words = ["Save", "the", "file", "Open", "settings", "Delete", "<1>", "device", "now"]
        rng = np.random.default_rng(0)
        return [self._input(" ".join(rng.choice(words, size=3 + i % 4)), f"example-{i}") for i in range(n)]

    def load_inputs(self, paths: list[str], skips: SkipLog) -> list[dict]:
        """`paths` are the lines of standard input (input_kind "lines"); an empty line is skipped."""
        examples = []
        for i, line in enumerate(paths, 1):
            if not line.strip():
                skips.add(f"line {i}", "empty line")
                continue
            examples.append(self._input(line.strip(), f"line {i}"))
        return examples

    def _input(self, text: str, name: str) -> dict:
        return {"source_ids": self._tokenizer_or_fail().encode_source(text), "source_text": text, "text": "",
                "source": name}

    # --- batches and models ------------------------------------------------------------------

    def collate(self, examples: list[dict]) -> Batch:
        sources, source_lengths = pad_targets([e["source_ids"] for e in examples])  # 0 is padding
        targets, target_lengths = pad_targets([self._tokenizer_or_fail().encode(e["text"]) for e in examples])
        return Batch(sources=sources, source_lengths=source_lengths, targets=targets, target_lengths=target_lengths,
                     texts=[e["text"] for e in examples], indices=torch.tensor([e.get("index", -1) for e in examples]))

    def build_model(self, kind: str, cfg: dict) -> torch.nn.Module:
        from oracle_kd.tasks.translation.autoregressive import build_autoregressive
        from oracle_kd.tasks.translation.models import build_model

        sizes = (PLACEHOLDER_VOCAB, PLACEHOLDER_VOCAB) if self.tokenizer is None else \
            (self.tokenizer.source_size, self.tokenizer.num_classes)  # no tokenizer yet: config checks only
        if kind == "autoregressive":
            return build_autoregressive(cfg, *sizes)
        return build_model(kind, cfg, *sizes)

    def frame_count(self, source_length: int, model_cfg: dict) -> int:
        """k frames per source subword (of a CTC model's config)."""
        return upsample_factor(model_cfg) * int(source_length)

    def export_spec(self) -> ExportSpec:
        """Source subword ids (batch, tokens), zero-padded, and their lengths."""
        return ExportSpec(input_names=("sources", "source_lengths"), input_dtypes=("int64", "int64"),
                          dynamic_axes={"sources": {0: "batch", 1: "tokens"}, "source_lengths": {0: "batch"}},
                          opset=23)  # ONNX's Attention operator (models.EncoderLayer)

    def export_graph(self, model, examples: list[dict]):
        return model, self.export_inputs(examples)

    def export_inputs(self, examples: list[dict]) -> tuple[torch.Tensor, torch.Tensor]:
        """Source subword ids (0-padded) and their counts: the tokenizer runs outside the graph."""
        return pad_targets([e["source_ids"] for e in examples])

    # --- metrics -----------------------------------------------------------------------------

    def score(self, hypotheses: list[str], references: list[str]) -> dict[str, float]:
        import sacrebleu

        if not references:
            return dict(self.metrics.blank_score)
        hyps = [h.strip() for h in hypotheses]
        return {"bleu": float(sacrebleu.corpus_bleu(hyps, [references]).score),
                "chrf": float(sacrebleu.corpus_chrf(hyps, [references]).score)}

    def example_stats(self, hypotheses: list[str], references: list[str]) -> np.ndarray:
        """(examples, 28) sufficient statistics: BLEU's 10 (n-gram matches and totals for n = 1..4,
        hypothesis and reference length), then chrF's 18 (hypothesis, reference and matched
        character n-grams for n = 1..6); column sums give `score`'s corpus BLEU and chrF."""
        from sacrebleu.metrics import BLEU, CHRF

        hyps = [h.strip() for h in hypotheses]
        bleu = np.array([BLEU()._extract_corpus_statistics([h], [[r]])[0] for h, r in zip(hyps, references)],
                        dtype=np.float64).reshape(len(references), -1)[:, _BLEU_COLUMNS]
        chrf = np.array(CHRF()._extract_corpus_statistics(hyps, [references]),
                        dtype=np.float64).reshape(len(references), CHRF_COLUMNS)
        return np.concatenate([bleu, chrf], axis=1)

    @staticmethod
    def corpus_score(sums: np.ndarray) -> np.ndarray:
        """Corpus BLEU (0-100) from column sums of `example_stats` ((..., 10 or more) -> (...))."""
        return corpus_bleu(np.asarray(sums)[..., :BLEU_COLUMNS])

    # every metric the paired bootstrap can score from `example_stats` (results.json's per-metric bootstraps)
    corpus_scores = {"bleu": corpus_score,
                     "chrf": lambda sums: corpus_chrf(np.asarray(sums)[..., BLEU_COLUMNS:BLEU_COLUMNS + CHRF_COLUMNS])}
    stats_columns = {"bleu": BLEU_COLUMNS, "chrf": BLEU_COLUMNS + CHRF_COLUMNS}  # columns each metric needs

    def plot_spikes(self, ax, example, title, label_ids, spike_frames, frames):
        labels = self._tokenizer_or_fail().labels
        ax.set_xlim(0, frames)
        ax.set_ylim(0, 1)
        from oracle_kd.plots import fit_title, spike_labels

        ax.text(0, 0.05, example.get("source_text", ""), fontsize=7, va="bottom")
        for t in spike_frames:
            ax.axvline(t + 0.5, color="gray", lw=0.5)
        spike_labels(ax, [t + 0.5 for t in spike_frames], [labels[k - 1] for k in label_ids], fontsize=6)
        fit_title(ax, title)
        ax.set_yticks([])


def _cache_folder(cfg: TranslationDataConfig, cache_root: Path) -> Path:
    key = hashlib.sha1(json.dumps(asdict(cfg), sort_keys=True).encode()).hexdigest()[:12]
    return Path(cache_root) / "translation" / key


def corpus_bleu(sums: np.ndarray) -> np.ndarray:
    """BLEU (Papineni et al., 2002; sacrebleu's defaults: no smoothing, brevity penalty) from
    summed statistics [matches_1..4, totals_1..4, hyp_len, ref_len] along the last axis."""
    sums = np.asarray(sums, dtype=np.float64)
    matches, totals, hyp, ref = sums[..., :4], sums[..., 4:8], sums[..., 8], sums[..., 9]
    with np.errstate(divide="ignore", invalid="ignore"):
        log_precision = np.where(matches > 0, np.log(matches / np.maximum(totals, 1)), -np.inf).mean(axis=-1)
        brevity = np.where(hyp < ref, 1 - ref / np.maximum(hyp, 1), 0.0)
        bleu = 100 * np.exp(log_precision + brevity)
    return np.where(hyp > 0, bleu, 0.0)


def corpus_chrf(sums: np.ndarray) -> np.ndarray:
    """chrF (Popovic, 2015; sacrebleu's defaults) from summed statistics [hyp, ref, match] per
    character n-gram order 1..6 along the last axis: precision and recall averaged over the orders
    both sides have, then their F-beta; vectorized over the leading axes (bootstrap resamples)."""
    sums = np.asarray(sums, dtype=np.float64).reshape(*np.shape(sums)[:-1], CHRF_ORDER, 3)
    hyp, ref, match = sums[..., 0], sums[..., 1], sums[..., 2]
    present = (hyp > 0) & (ref > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        orders = present.sum(axis=-1)
        precision = np.where(present, match / np.maximum(hyp, 1), 0.0).sum(axis=-1) / np.maximum(orders, 1)
        recall = np.where(present, match / np.maximum(ref, 1), 0.0).sum(axis=-1) / np.maximum(orders, 1)
        factor = CHRF_BETA ** 2
        f = (1 + factor) * precision * recall / (factor * precision + recall)
    return np.where(precision + recall > 0, 100 * f, 0.0)


# --- the generated splits -------------------------------------------------------------------


def write_corpus(cfg: TranslationDataConfig, folder: Path, archives: Path) -> None:
    """Build the corpus, train the tokenizer on its training split, write splits, tokenizer, card."""
    if cfg.text_source == "pypi":
        from oracle_kd.tasks.translation.corpus import build_corpus

        corpus = build_corpus(archives, max_words=cfg.max_words)
        splits, card = corpus.splits, corpus.card
        for split in SPLITS:
            splits[split] = _subset(splits[split], getattr(cfg, f"n_{split}"), cfg.seed, split)
    elif cfg.text_source == "numbers":
        from oracle_kd.tasks.translation.numbers import number_splits

        splits = number_splits({s: getattr(cfg, f"n_{s}") for s in SPLITS}, cfg.seed)
        card = {"kind": "English number words -> German number words, generated (not natural text)"}
    else:
        raise InputError(f"data.text_source: {cfg.text_source!r}; use 'pypi' or 'numbers'")
    tokenizer = train_tokenizer([s for s, _ in splits["train"]], [t for _, t in splits["train"]],
                                TokenizerConfig(cfg.vocab_size, cfg.model_type, cfg.shared_vocab))
    folder.mkdir(parents=True, exist_ok=True)
    for split in SPLITS:
        atomic_write_text(folder / f"{split}.tsv", "".join(f"{s}\t{t}\n" for s, t in splits[split]))
    atomic_write_json(folder / "tokenizer.json", tokenizer.state())
    card["pairs"] = {split: len(pairs) for split, pairs in splits.items()}
    card["ctc_infeasible_train"] = {f"k={k}": sum(1 for s, t in splits["train"]
                                                  if ctc_min_frames(tokenizer.encode(t)) > k * len(tokenizer.encode_source(s)))
                                    for k in (1, 2, 3, 4)}
    atomic_write_json(folder / "meta.json", {"format_version": FORMAT_VERSION, "config": asdict(cfg), "card": card})


def _subset(pairs: list, n: int, seed: int, split: str) -> list:
    """All pairs (n 0), or n of them chosen with the seed, in corpus order."""
    if not n or n >= len(pairs):
        return pairs
    rng = np.random.default_rng([seed, SPLITS.index(split)])
    return [pairs[i] for i in sorted(rng.choice(len(pairs), size=n, replace=False))]


def read_tsv(path: Path) -> list[tuple[str, str]]:
    """(source, target) pairs of a generated split."""
    pairs = []
    for line in path.read_text(encoding="utf-8").splitlines():
        source, _, target = line.partition("\t")
        pairs.append((source, target))
    return pairs


class PairSplit(Dataset):
    """Pairs tokenized once. drop_infeasible (training): a target that needs more CTC frames
    than the upsampled source has is skipped (and counted in `skips`)."""

    def __init__(self, pairs, tokenizer: SubwordTokenizer, name: str, upsample: int, drop_infeasible: bool,
                 skips: SkipLog, names: list[str] | None = None):
        self.examples, self.name, self.augment = [], name, False
        for i, (source, target) in enumerate(pairs):
            where = names[i] if names else f"{name}:{i}"
            ids = tokenizer.encode_source(source)
            if drop_infeasible and ctc_min_frames(tokenizer.encode(target)) > upsample * len(ids):
                skips.add(where, f"target needs {ctc_min_frames(tokenizer.encode(target))} CTC frames, "
                                 f"the source gives {upsample * len(ids)} ({len(ids)} subwords x {upsample})")
                continue
            self.examples.append({"source_ids": ids, "source_text": source, "text": target, "source": where})
        digest = hashlib.sha1(json.dumps(tokenizer.state(), sort_keys=True).encode())
        for e in self.examples:
            digest.update(f"{e['source_text']}\t{e['text']}\n".encode())
        self._identity = f"translation:{len(self.examples)}:{digest.hexdigest()[:16]}"

    def identity(self) -> str:
        return self._identity

    def __len__(self):
        return len(self.examples)

    def source_lengths(self):
        return np.array([len(e["source_ids"]) for e in self.examples])

    def __getitem__(self, i):
        return {**self.examples[i], "index": i, "augment": False}
