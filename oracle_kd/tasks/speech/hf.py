"""Hugging Face speech CTC models (`AutoModelForCTC`: wav2vec 2.0, HuBERT, WavLM, ...) as oracle-kd models.

`HFCTC` wraps a `*ForCTC` model so that it keeps the contract of every model here (distil.py),

    forward(sources, source_lengths, targets=None, target_lengths=None) -> (log_probs, frame_lengths),

on the speech task's waveform batches (`get_task("speech", sources="waveform")`: 16 kHz samples
(batch, samples) in [-1, 1], each row's length in samples). It is a student, or a conventional
teacher. `HFEncoder` is the model without its CTC head, as an Oracle Teacher's source encoder;
`HFOracle` is that teacher (for example on a copy of the student's encoder). All three say what
rebuilds them from a checkpoint (`checkpoint_config`), so `load_model` loads what `distil` wrote.
`transformers` is an optional dependency (`pip install "oracle-kd[hf]"`), imported on first use.

Frames. The feature encoder is a stack of unpadded strided convolutions, so n samples give
(n - field) // stride + 1 frames (field 400, stride 320 for wav2vec 2.0). The speech task's own
models give n // 320 + 1 frames, centred on samples 0, 320, 640, ... (log-mel frames centred every
160 samples, halved). Padding each waveform with `field` zeros, half on each side, as the log-mel
front end pads by half its window, makes the two agree frame by frame: the same count and the same
centres, so a wav2vec 2.0 student distils from the project's teachers. Lengths come from the
model's own `_get_feat_extract_output_lengths`.

Labels. oracle-kd's classes are the blank at 0, then the task's labels in order (`vocab.py`; speech:
a-z, apostrophe, space). Hugging Face's CTC models take `config.pad_token_id` as the blank and order
a vocabulary of their own (wav2vec2-base-960h: <pad> 0, <s>, </s>, <unk>, | 4 (the word delimiter),
E, T, A, ..., upper case). A model built from a config gets a head of the task's classes and
`pad_token_id = 0`. A pretrained model's head is cut down to the task's classes row by row: the
blank keeps the pad token's row; a label keeps the row of the same token, else of its upper case,
and the space that of the tokenizer's word delimiter; a label the vocabulary lacks gets a new row
(listed in `new_labels`). The config is updated to the new head (`vocab_size`, `pad_token_id`).
"""

from __future__ import annotations

import copy
from dataclasses import asdict

import torch
from torch import nn

from oracle_kd.io import InputError
from oracle_kd.models.oracle import OracleConfig, OracleTeacher
from oracle_kd.vocab import BLANK

# A stored config's largest number: one layer (wav2vec 2.0's mask embedding) is allocated for real
# even when a checkpoint's model is first built on the meta device to check its shapes.
MAX_CONFIG_NUMBER = 1 << 20


class HFCTC(nn.Module):
    """A Hugging Face `*ForCTC` model: waveforms -> (log_probs (batch, frames, classes), frame_lengths)."""

    needs_targets = False

    def __init__(self, model: nn.Module):
        super().__init__()
        check_reads_waveforms(model)
        if not isinstance(getattr(model, "lm_head", None), nn.Linear):
            raise InputError(f"{type(model).__name__} has no linear CTC head (lm_head)")
        self.model = model
        self.field, self.stride = conv_geometry(model)
        self.new_labels: list[str] = []  # labels whose head rows were not in a pretrained vocabulary

    @classmethod
    def from_config(cls, config, num_classes: int) -> "HFCTC":
        """A new model of `config` (e.g. a `Wav2Vec2Config`) with a head of `num_classes`, blank 0."""
        transformers = require_transformers()
        config = copy.deepcopy(config)
        config.vocab_size, config.pad_token_id = num_classes, BLANK
        try:
            model_class = transformers.MODEL_FOR_CTC_MAPPING[type(config)]
        except KeyError:
            raise InputError(f"transformers has no CTC model for a {type(config).__name__}") from None
        return cls(model_class(config))  # built directly, not by `from_config`, so the meta device holds

    @classmethod
    def from_pretrained(cls, folder, labels: list[str]) -> "HFCTC":
        """The model saved in `folder` (`save_pretrained`: config.json, model.safetensors, and the
        tokenizer's vocab.json if it has one), its head cut down to the blank and `labels` (the
        task's `tokenizer.labels`). Nothing is downloaded and no pickle is read."""
        transformers = require_transformers()
        try:
            model = transformers.AutoModelForCTC.from_pretrained(str(folder), local_files_only=True,
                                                                 use_safetensors=True)
        except (OSError, ValueError) as e:
            raise InputError(f"{folder}: not a Hugging Face CTC model with safetensors weights "
                             f"({str(e).splitlines()[0][:200]})") from None
        adapter = cls(model)
        vocab, delimiter = read_vocabulary(folder)
        rows = label_rows(labels, vocab, model.config.pad_token_id, delimiter)
        adapter.new_labels = [label for label, row in zip(labels, rows[1:]) if row is None]
        cut_head(model, rows)
        return adapter

    def frame_count(self, source_length: int) -> int:
        """CTC frames for `source_length` samples: source_length // stride + 1 (see the module docstring)."""
        return int(self.model._get_feat_extract_output_lengths(torch.tensor([source_length + self.field]))[0])

    def forward(self, sources, source_lengths, targets=None, target_lengths=None):
        values, mask, frame_lengths = model_inputs(self.model, sources, source_lengths, self.field)
        return self.model(values, attention_mask=mask).logits.log_softmax(-1), frame_lengths

    def checkpoint_config(self) -> dict:
        return {"builder": "hf-ctc", "hf_config": stored_config(self.model.config)}


class HFEncoder(nn.Module):
    """A Hugging Face speech encoder (a base model such as `Wav2Vec2Model`, or the base of a
    `*ForCTC`) as a source encoder: waveforms -> (frames (batch, frames, out_dim), frame_lengths)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.base = getattr(model, "base_model", model)  # a *ForCTC's encoder; a base model is its own
        check_reads_waveforms(self.base)
        self.field, self.stride = conv_geometry(self.base)
        config = self.base.config
        self.out_dim = config.output_hidden_size if getattr(config, "add_adapter", False) else config.hidden_size

    def frame_count(self, source_length: int) -> int:
        return int(self.base._get_feat_extract_output_lengths(torch.tensor([source_length + self.field]))[0])

    def forward(self, sources, source_lengths):
        values, mask, frame_lengths = model_inputs(self.base, sources, source_lengths, self.field)
        return self.base(values, attention_mask=mask).last_hidden_state, frame_lengths


class HFOracle(OracleTeacher):
    """The Oracle Teacher (`models/oracle.py`) with a Hugging Face encoder as its source encoder."""

    def __init__(self, encoder: nn.Module, num_classes: int, cfg: OracleConfig | None = None):
        super().__init__(HFEncoder(encoder), num_classes, cfg or OracleConfig())

    def checkpoint_config(self) -> dict:
        return {"builder": "hf-oracle", "hf_config": stored_config(self.source_encoder.base.config),
                "oracle": asdict(self.cfg)}


def rebuild(cfg: dict, num_classes: int) -> nn.Module:
    """The module a checkpoint's config describes (what `checkpoint_config` gave), untrained: what
    `load_model` loads a `distil` checkpoint's weights into. Only model types that transformers
    ships are built; nothing in the file is run."""
    from oracle_kd.config import from_dict

    builder, stored = cfg.get("builder"), cfg.get("hf_config")
    if builder not in ("hf-ctc", "hf-oracle") or not isinstance(stored, dict):
        raise InputError(f"no Hugging Face model in this config (builder {str(builder)[:40]!r})")
    config = hf_config(stored)
    if builder == "hf-ctc":
        return HFCTC.from_config(config, num_classes)
    base_class = require_transformers().MODEL_MAPPING[type(config)]
    return HFOracle(base_class(config), num_classes, from_dict(OracleConfig, cfg.get("oracle") or {}))


# --- helpers -------------------------------------------------------------------------------------


def require_transformers():
    try:
        import transformers
    except ImportError:
        raise InputError('Hugging Face models need transformers: pip install "oracle-kd[hf]"') from None
    return transformers


def check_reads_waveforms(model: nn.Module) -> None:
    if getattr(model, "main_input_name", None) != "input_values" or \
            not hasattr(model, "_get_feat_extract_output_lengths"):
        raise InputError(f"{type(model).__name__} does not read waveforms with a convolutional feature encoder "
                         f"(it takes {getattr(model, 'main_input_name', '?')}); wav2vec 2.0, HuBERT, WavLM, "
                         "Data2VecAudio, SEW and UniSpeech models do")


def conv_geometry(model: nn.Module) -> tuple[int, int]:
    """(receptive field, stride) in samples of a model's feature encoder, read off its own length
    function: an unpadded convolution stack gives (n - field) // stride + 1 frames."""
    n = torch.arange(1, 1 << 15, device="cpu")  # past wav2vec 2.0's 400 + 320 (built on the meta device too)
    frames = model._get_feat_extract_output_lengths(n)
    if not (frames >= 2).any():
        raise InputError(f"{type(model).__name__}: its feature encoder spans more than {len(n)} samples")
    field = int(n[frames >= 1][0])
    return field, int(n[frames >= 2][0]) - field


def model_inputs(model, sources, source_lengths, field: int):
    """(input_values, attention_mask or None, frame_lengths) for a Hugging Face model.

    Each row is normalised to zero mean and unit variance over its own samples, as Hugging
    Face's feature extractor does for these models (padding stays zero), then padded with
    `field` zeros, half before and half after (see the module docstring)."""
    if sources.dim() != 2:
        raise InputError(f"Hugging Face speech models read waveforms (batch, samples), not {tuple(sources.shape)}: "
                         'give them get_task("speech", sources="waveform")')
    valid = (torch.arange(sources.shape[1], device=sources.device)[None] < source_lengths[:, None]).to(sources.dtype)
    count = source_lengths.clamp(min=1)[:, None].to(sources.dtype)
    mean = (sources * valid).sum(1, keepdim=True) / count
    var = (((sources - mean) * valid) ** 2).sum(1, keepdim=True) / count
    values = (sources - mean) / torch.sqrt(var + 1e-7) * valid  # 1e-7: Hugging Face's own epsilon
    values = nn.functional.pad(values, (field // 2, field - field // 2))
    lengths = source_lengths + field
    frame_lengths = model._get_feat_extract_output_lengths(lengths).long()
    mask = None
    # Hugging Face passes a mask only to encoders normalised per layer; those with group norm
    # (wav2vec2-base) were trained on zero-padded batches without one.
    if getattr(model.config, "feat_extract_norm", "layer") == "layer":
        mask = (torch.arange(values.shape[1], device=values.device)[None] < lengths[:, None]).long()
    return values, mask, frame_lengths


def read_vocabulary(folder) -> tuple[dict[str, int], str | None]:
    """(token -> id, word delimiter) of the tokenizer saved beside a model; ({}, None) if none is."""
    transformers = require_transformers()
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError, KeyError, TypeError):
        return {}, None
    return tokenizer.get_vocab(), getattr(tokenizer, "word_delimiter_token", None)


def label_rows(labels: list[str], vocab: dict[str, int], pad_id: int, delimiter: str | None) -> list[int | None]:
    """The old head's row for each new class: the blank's (the pad token's), then each label's,
    None where the vocabulary has no such token."""
    rows: list[int | None] = [pad_id]
    for label in labels:
        names = ([delimiter] if label == " " and delimiter else []) + [label, label.upper()]
        rows.append(next((vocab[name] for name in names if name in vocab), None))
    return rows


def cut_head(model: nn.Module, rows: list[int | None]) -> None:
    """Give `model` a CTC head whose class i is the old head's row rows[i] (None: a new row,
    initialised as Hugging Face initialises heads); its config follows (blank 0)."""
    old = model.lm_head
    new = nn.Linear(old.in_features, len(rows), device=old.weight.device, dtype=old.weight.dtype)
    with torch.no_grad():
        new.weight.normal_(0.0, model.config.initializer_range)
        new.bias.zero_()
        for i, row in enumerate(rows):
            if row is not None:
                new.weight[i], new.bias[i] = old.weight[row], old.bias[row]
    model.lm_head = new
    model.config.vocab_size, model.config.pad_token_id = len(rows), BLANK


def stored_config(config) -> dict:
    """A Hugging Face config as the JSON a checkpoint keeps (without the folder it came from)."""
    return {k: v for k, v in config.to_dict().items() if k != "_name_or_path"}


def hf_config(stored: dict):
    """The config a checkpoint keeps, as a transformers config of a model type it ships."""
    transformers = require_transformers()
    stored = dict(stored)
    model_type = stored.pop("model_type", None)
    if model_type not in transformers.CONFIG_MAPPING:
        raise InputError(f"unknown Hugging Face model type {str(model_type)[:40]!r}")
    too_large = [k for k, v in stored.items() if any(abs(x) > MAX_CONFIG_NUMBER for x in numbers(v))]
    if too_large:
        raise InputError(f"Hugging Face config: {too_large[0]} is larger than {MAX_CONFIG_NUMBER:,}")
    return transformers.AutoConfig.for_model(model_type, **stored)


def numbers(value) -> list[int]:
    """The whole numbers (sizes, counts) in a config value: a number, or a list of them."""
    items = value if isinstance(value, (list, tuple)) else [value]
    return [x for x in items if isinstance(x, int) and not isinstance(x, bool)]
