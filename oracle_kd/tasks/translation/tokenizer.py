"""Subword tokenizers of the translation task: sentencepiece, trained on the training split only.

The target side is the CTC label set: label id = sentencepiece id + 1, so that 0
stays the blank. The source side is what the encoder embeds: id = sentencepiece
id + 1, so that 0 is padding. With `shared` one model serves both sides (its
labels are then also the source pieces). The corpus's placeholder tokens <1>,
<2>, ... are user-defined pieces: never split, always one label.

A tokenizer travels with every checkpoint (`state`/`from_state`: the serialized
sentencepiece models, base64 in the checkpoint's JSON header), so that
`evaluate` and `translate` need nothing else.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass

PLACEHOLDERS = tuple(f"<{i}>" for i in range(1, 21))  # as many as the corpus's longest strings hold


@dataclass(frozen=True)
class TokenizerConfig:
    vocab_size: int = 1000  # pieces per sentencepiece model (per side unless shared)
    model_type: str = "unigram"  # or "bpe"
    shared: bool = False  # one model for source and target


def train_tokenizer(sources: list[str], targets: list[str], cfg: TokenizerConfig) -> SubwordTokenizer:
    """Sentencepiece model(s) trained on these training texts (deterministic: one thread, no sampling)."""
    if cfg.shared:
        model = _train(sources + targets, cfg)
        return SubwordTokenizer(model, model)
    return SubwordTokenizer(_train(sources, cfg), _train(targets, cfg))


class SubwordTokenizer:
    """A `Tokenizer` over target pieces, plus `encode_source` for the encoder's input ids."""

    kind = "sentencepiece"

    def __init__(self, source_model: bytes, target_model: bytes):
        import sentencepiece as spm

        self.source_model, self.target_model = source_model, target_model
        self._source = spm.SentencePieceProcessor(model_proto=source_model)
        self._target = spm.SentencePieceProcessor(model_proto=target_model)
        self.labels = [self._target.id_to_piece(i) for i in range(self._target.get_piece_size())]
        self.num_classes = len(self.labels) + 1  # + blank
        self.source_size = self._source.get_piece_size() + 1  # + padding

    def encode(self, text: str) -> list[int]:
        return [i + 1 for i in self._target.encode(text)]

    def decode(self, ids) -> str:
        return self._target.decode([int(i) - 1 for i in ids if 0 < int(i) < self.num_classes])

    def encode_source(self, text: str) -> list[int]:
        return [i + 1 for i in self._source.encode(text)]

    def state(self) -> dict:
        """JSON-able: what `from_state` rebuilds the same tokenizer from."""
        encode = lambda model: base64.b64encode(model).decode("ascii")  # noqa: E731
        if self.source_model == self.target_model:
            return {"shared": encode(self.target_model)}
        return {"source": encode(self.source_model), "target": encode(self.target_model)}

    @classmethod
    def from_state(cls, state: dict) -> SubwordTokenizer:
        if "shared" in state:
            model = base64.b64decode(state["shared"])
            return cls(model, model)
        return cls(base64.b64decode(state["source"]), base64.b64decode(state["target"]))


def _train(texts: list[str], cfg: TokenizerConfig) -> bytes:
    import sentencepiece as spm

    if not texts:
        raise ValueError("no training text for the tokenizer")
    model = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(texts), model_writer=model, vocab_size=cfg.vocab_size, model_type=cfg.model_type,
            character_coverage=1.0, user_defined_symbols=list(PLACEHOLDERS), bos_id=-1, eos_id=-1, pad_id=-1,
            unk_id=0, num_threads=1, shuffle_input_sentence=False, input_sentence_size=0, hard_vocab_limit=False,
            minloglevel=2,
        )
    except RuntimeError as err:  # e.g. fewer pieces asked for than the text has characters
        raise ValueError(f"sentencepiece cannot make {cfg.vocab_size} pieces of this text: "
                         f"{str(err).splitlines()[-1].split('] ')[-1]}") from None
    return model.getvalue()
