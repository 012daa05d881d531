"""The autoregressive Transformer teacher (Vaswani et al., 2017): the teacher translation users
distil non-autoregressive students from, by sequence-level KD (Kim and Rush, 2016): the
student learns, with CTC, the teacher's beam-search outputs for the training sources.

It is no CTC model: it brings its own loss (`sequence_loss`, label-smoothed cross-entropy
with teacher forcing) and its own decoder (`generate`, beam search), which the core's
training and evaluation use when a model has them. Its output classes are the CTC label
ids (0, the CTC blank, is padding here), then BOS and EOS.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from oracle_kd.models.oracle import sinusoids
from oracle_kd.tasks.translation.models import EncoderConfig, LayerStack

PAD = 0


@dataclass
class AutoregressiveConfig:
    d_model: int = 256
    heads: int = 4
    encoder_layers: int = 3
    decoder_layers: int = 3
    ff_mult: int = 4
    dropout: float = 0.1
    label_smoothing: float = 0.1
    beam: int = 4  # beam width of `generate` (1: greedy)
    max_ratio: float = 2.0  # longest output: max_ratio x source subwords + 10


class AutoregressiveTransformer(nn.Module):
    """forward is not a CTC forward: use sequence_loss (training) and generate (decoding)."""

    needs_targets = False
    decodes_itself = True  # the core decodes it with `generate`, not greedy CTC

    def __init__(self, source_size: int, num_classes: int, cfg: AutoregressiveConfig):
        super().__init__()
        self.cfg, self.num_classes = cfg, num_classes
        self.bos, self.eos = num_classes, num_classes + 1
        d = cfg.d_model
        self.source_embedding = nn.Embedding(source_size, d, padding_idx=0)
        self.encoder = LayerStack(EncoderConfig(d_model=d, heads=cfg.heads, ff_mult=cfg.ff_mult, dropout=cfg.dropout),
                                  cfg.encoder_layers)
        self.target_embedding = nn.Embedding(num_classes + 2, d, padding_idx=PAD)
        layer = nn.TransformerDecoderLayer(d, cfg.heads, cfg.ff_mult * d, cfg.dropout, batch_first=True, norm_first=True)
        self.decoder = nn.TransformerDecoder(layer, cfg.decoder_layers, norm=nn.LayerNorm(d))
        self.head = nn.Linear(d, num_classes + 2)
        self.drop = nn.Dropout(cfg.dropout)

    def frame_count(self, source_length: int) -> int:
        return int(source_length)  # no CTC frames; the core asks every model

    def encode(self, sources, source_lengths):
        d = self.cfg.d_model
        x = self.source_embedding(sources) * math.sqrt(d) + sinusoids(sources.shape[1], d, sources.device)
        memory = self.encoder(self.drop(x), source_lengths)
        return memory, torch.arange(sources.shape[1], device=sources.device)[None] >= source_lengths[:, None]

    def next_log_probs(self, memory, memory_pad, prefix):
        """(batch, prefix length, classes) log-probabilities of each next token given the prefix."""
        d, length = self.cfg.d_model, prefix.shape[1]
        y = self.target_embedding(prefix) * math.sqrt(d) + sinusoids(length, d, prefix.device)
        causal = torch.triu(torch.ones(length, length, dtype=torch.bool, device=prefix.device), 1)
        h = self.decoder(self.drop(y), memory, tgt_mask=causal, tgt_key_padding_mask=prefix == PAD,
                         memory_key_padding_mask=memory_pad, tgt_is_causal=True)
        return self.head(h).log_softmax(-1)

    def sequence_loss(self, sources, source_lengths, targets, target_lengths):
        """Label-smoothed cross-entropy of BOS + targets -> targets + EOS, mean over real tokens."""
        batch = targets.shape[0]
        bos = torch.full((batch, 1), self.bos, dtype=targets.dtype, device=targets.device)
        prefix = torch.cat([bos, targets], 1)  # padding (0) after each row's labels
        gold = torch.cat([targets, torch.zeros_like(bos)], 1)
        gold[torch.arange(batch), target_lengths] = self.eos
        memory, memory_pad = self.encode(sources, source_lengths)
        log_probs = self.next_log_probs(memory, memory_pad, prefix)
        return nn.functional.nll_loss(log_probs.transpose(1, 2), gold, ignore_index=PAD) * (1 - self.cfg.label_smoothing) \
            - self.cfg.label_smoothing * log_probs.mean(-1)[gold != PAD].mean()

    @torch.no_grad()
    def generate(self, sources, source_lengths, beam: int | None = None) -> list[list[int]]:
        """Label ids of each source's best translation by beam search (score: mean log-probability
        per token, EOS included, so that long outputs are not penalized for their length)."""
        beam = beam or self.cfg.beam
        memory, memory_pad = self.encode(sources, source_lengths)
        batch = sources.shape[0]
        limit = int(self.cfg.max_ratio * int(source_lengths.max()) + 10)
        memory, memory_pad = memory.repeat_interleave(beam, 0), memory_pad.repeat_interleave(beam, 0)
        prefix = torch.full((batch * beam, 1), self.bos, dtype=torch.long, device=sources.device)
        scores = torch.zeros(batch, beam, device=sources.device)
        scores[:, 1:] = -math.inf  # the beams start as one hypothesis
        finished = [[] for _ in range(batch)]  # (score, ids)
        alive = torch.ones(batch, dtype=torch.bool, device=sources.device)
        for step in range(limit):
            log_probs = self.next_log_probs(memory, memory_pad, prefix)[:, -1]  # (batch * beam, classes)
            log_probs[:, PAD] = log_probs[:, self.bos] = -math.inf
            total = (scores.reshape(-1, 1) + log_probs).reshape(batch, -1)  # (batch, beam * classes)
            best, index = total.topk(2 * beam, dim=1)
            origin, token = index // log_probs.shape[1], index % log_probs.shape[1]
            new_scores = torch.full_like(scores, -math.inf)
            new_prefix = prefix.new_zeros(batch, beam, prefix.shape[1] + 1)
            for b in range(batch):
                kept = 0
                for rank, (score, o, t) in enumerate(zip(best[b].tolist(), origin[b].tolist(), token[b].tolist())):
                    if not alive[b] or kept == beam or score == -math.inf:
                        break
                    ids = prefix[b * beam + o, 1:].tolist()
                    if t == self.eos:  # an ending counts only among the best `beam` candidates (as fairseq)
                        if rank < beam:
                            finished[b].append((score / (len(ids) + 1), ids))
                        continue
                    new_prefix[b, kept, :-1], new_prefix[b, kept, -1] = prefix[b * beam + o], t
                    new_scores[b, kept] = score
                    kept += 1
                # done when an ended hypothesis beats every live one on the same per-token score
                # (stopping after `beam` endings instead keeps short early endings: numbers lost 30 %)
                if finished[b] and kept and max(f for f, _ in finished[b]) >= \
                        float(new_scores[b, :kept].max()) / prefix.shape[1]:
                    alive[b] = False
                if not kept:
                    alive[b] = False
            # a beam left empty (or a finished sentence's) holds BOS only: all-padding rows would
            # make attention NaN, and topk ranks NaN above every real score
            new_prefix[new_scores == -math.inf] = self.bos
            prefix, scores = new_prefix.reshape(batch * beam, -1), new_scores
            if not alive.any():
                break
        out = []
        for b in range(batch):
            if not finished[b]:  # no EOS within the limit: the best live hypothesis
                k = int(scores[b].argmax())
                finished[b].append((0.0, prefix[b * beam + k, 1:].tolist()))
            out.append(max(finished[b], key=lambda pair: pair[0])[1])
        return out


def build_autoregressive(cfg: dict, source_size: int, num_classes: int) -> AutoregressiveTransformer:
    from oracle_kd.config import from_dict

    return AutoregressiveTransformer(source_size, num_classes, from_dict(AutoregressiveConfig, cfg))
