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

from oracle_kd.models.layers import Dropout
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
        self.drop = Dropout(cfg.dropout)

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
        per token, EOS included, so that long outputs are not penalized for their length).

        Each step decodes one new position per hypothesis over cached keys and values, and a
        sentence leaves the batch when its search is done. A sentence's longest output is its
        limit, max_ratio x its source's length + 10 (its own, so that a sentence is translated
        the same in any batch); one with no ending by then gives its best live hypothesis."""
        beam = beam or self.cfg.beam
        memory, memory_pad = self.encode(sources, source_lengths)
        batch, device = sources.shape[0], sources.device
        limits = torch.tensor([int(self.cfg.max_ratio * n + 10) for n in source_lengths.tolist()], device=device)
        limit = int(limits.max())
        positions = sinusoids(limit, self.cfg.d_model, device)
        cache = self.start_cache(memory, memory_pad, beam)
        # the live sentences: their index in the batch, and per hypothesis (row = sentence x beam
        # + slot, slots best first) its summed log-probability, its labels and its last token
        sentence = torch.arange(batch, device=device)
        scores = torch.zeros(batch, beam, device=device)
        scores[:, 1:] = -math.inf  # the beams start as one hypothesis
        tokens = torch.zeros(batch * beam, 0, dtype=torch.long, device=device)
        last = torch.full((batch * beam,), self.bos, dtype=torch.long, device=device)
        # each sentence's best ended hypothesis: per-token score (float64, as the scores were
        # compared when they were Python floats), labels and length
        ended_score = torch.full((batch,), -math.inf, dtype=torch.float64, device=device)
        ended = torch.zeros(batch, limit, dtype=torch.long, device=device)
        ended_length = torch.zeros(batch, dtype=torch.long, device=device)
        at_limit = {}  # sentence -> its best live hypothesis, where its limit came before any ending
        rank = torch.arange(2 * beam, device=device)
        for step in range(limit):  # the new hypotheses have step + 1 tokens (EOS included)
            log_probs = self.decode_step(last, positions[step], cache)  # (rows, classes)
            log_probs[:, PAD] = log_probs[:, self.bos] = -math.inf
            classes, live = log_probs.shape[1], len(sentence)
            total = (scores.reshape(-1, 1) + log_probs).reshape(live, beam * classes)
            best, index = total.topk(2 * beam, dim=1)  # (live, 2 beam), best first
            origin, token = index // classes, index % classes
            real = best > -math.inf
            # an ending counts only among the best `beam` candidates (as fairseq); of the others,
            # the best `beam` go on
            ending = real & (token == self.eos) & (rank < beam)
            going = real & (token != self.eos)
            going &= going.cumsum(1) <= beam

            per_token = torch.where(ending, best.double() / (step + 1), -math.inf)
            first = per_token.argmax(1)  # among equal endings the best ranked, and (strict >) the earliest
            better = (per_token.gather(1, first[:, None])[:, 0] > ended_score[sentence]).nonzero()[:, 0]
            if len(better):
                ended_score[sentence[better]] = per_token[better, first[better]]
                ended[sentence[better], :step] = tokens[better * beam + origin[better, first[better]]]
                ended_length[sentence[better]] = step

            slot = (~going).to(torch.uint8).sort(dim=1, stable=True).indices[:, :beam]  # going ones first, by rank
            scores = torch.where(going.gather(1, slot), best.gather(1, slot), -math.inf)
            origin, token = origin.gather(1, slot), token.gather(1, slot)
            # done when an ended hypothesis beats every live one on the same per-token score
            # (stopping after `beam` endings instead keeps short early endings: numbers lost 30 %);
            # done too with no hypothesis left going (score -inf; labels then: its ending's or none)
            done = ended_score[sentence] >= scores[:, 0].double() / (step + 1)
            expiring = ~done & (limits[sentence] == step + 1)  # at its limit: its best live hypothesis
            for row in (expiring & (ended_score[sentence] == -math.inf)).nonzero()[:, 0].tolist():
                at_limit[int(sentence[row])] = tokens[row * beam + origin[row, 0]].tolist() + [int(token[row, 0])]
            keep = (~done & ~expiring).nonzero()[:, 0]
            rows = (keep[:, None] * beam + origin[keep]).reshape(-1)
            tokens = torch.cat([tokens.index_select(0, rows), token[keep].reshape(-1, 1)], 1)
            cache.select(rows, keep if len(keep) < live else None)
            sentence, scores, last = sentence[keep], scores[keep], token[keep].reshape(-1)
            if not len(sentence):
                break
        out = [ids[:length] for ids, length in zip(ended.tolist(), ended_length.tolist())]
        for b, ids in at_limit.items():
            out[b] = ids
        return out

    def start_cache(self, memory, memory_pad, beam: int) -> DecoderCache:
        """The cache of `beam` hypotheses of each memory row, before their first position."""
        batch, d, heads = memory.shape[0], self.cfg.d_model, self.cfg.heads
        empty = memory.new_zeros(batch * beam, heads, 0, d // heads)
        cache = DecoderCache([empty] * len(self.decoder.layers), [empty] * len(self.decoder.layers), [], [],
                             memory_pad)
        for layer in self.decoder.layers:
            attention = layer.multihead_attn
            keys, values = nn.functional.linear(memory, attention.in_proj_weight[d:],
                                                attention.in_proj_bias[d:]).chunk(2, -1)
            cache.memory_keys.append(split_heads(keys, heads))
            cache.memory_values.append(split_heads(values, heads))
        return cache

    def decode_step(self, tokens, position, cache: DecoderCache):
        """(rows, classes) log-probabilities of the next token of each row, whose prefix ends with
        `tokens` (rows,) at `position` (its sinusoid, (d_model,)): next_log_probs' last position,
        computed over the earlier positions' keys and values in `cache`, which gains this one's.

        The decoder layers' pre-norm forward (nn.TransformerDecoderLayer, norm_first) written out
        with their own submodules, so that checkpoints keep their parameters' names."""
        d, heads = self.cfg.d_model, self.cfg.heads
        rows, sentences = tokens.shape[0], cache.memory_pad.shape[0]
        x = self.drop(self.target_embedding(tokens) * math.sqrt(d) + position)[:, None]  # (rows, 1, d_model)
        for i, layer in enumerate(self.decoder.layers):
            attention = layer.self_attn
            q, k, v = nn.functional.linear(layer.norm1(x), attention.in_proj_weight,
                                           attention.in_proj_bias).chunk(3, -1)
            cache.keys[i] = torch.cat([cache.keys[i], split_heads(k, heads)], 2)
            cache.values[i] = torch.cat([cache.values[i], split_heads(v, heads)], 2)
            attended = nn.functional.scaled_dot_product_attention(  # every earlier position: no mask
                split_heads(q, heads), cache.keys[i], cache.values[i],
                dropout_p=attention.dropout if self.training else 0.0)
            x = x + layer.dropout1(attention.out_proj(attended.transpose(1, 2).reshape(rows, 1, d)))

            attention = layer.multihead_attn  # a sentence's hypotheses are queries of one memory
            q = nn.functional.linear(layer.norm2(x), attention.in_proj_weight[:d], attention.in_proj_bias[:d])
            attended = nn.functional.scaled_dot_product_attention(
                split_heads(q.reshape(sentences, -1, d), heads), cache.memory_keys[i], cache.memory_values[i],
                attn_mask=~cache.memory_pad[:, None, None, :], dropout_p=attention.dropout if self.training else 0.0)
            x = x + layer.dropout2(attention.out_proj(attended.transpose(1, 2).reshape(rows, 1, d)))

            ff = layer.linear2(layer.dropout(layer.activation(layer.linear1(layer.norm3(x)))))
            x = x + layer.dropout3(ff)
        return self.head(self.decoder.norm(x[:, 0])).log_softmax(-1)


@dataclass
class DecoderCache:
    """What a decoder step reads besides its new tokens, per decoder layer: the self-attention
    keys and values of the earlier positions, (rows, heads, positions, head size), and the
    cross-attention keys and values of the memory, (sentences, heads, source tokens, head size),
    computed once and shared by a sentence's rows (row = sentence x beam + slot)."""

    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    memory_keys: list[torch.Tensor]
    memory_values: list[torch.Tensor]
    memory_pad: torch.Tensor  # (sentences, source tokens), True at padding

    def select(self, rows, sentences=None) -> None:
        """Keep `rows` (the hypotheses going on, in their new order) of `sentences` (None: all)."""
        # index_select: on CPU several times faster than indexing (k[rows]) for these copies
        self.keys = [k.index_select(0, rows) for k in self.keys]
        self.values = [v.index_select(0, rows) for v in self.values]
        if sentences is not None:
            self.memory_keys = [k.index_select(0, sentences) for k in self.memory_keys]
            self.memory_values = [v.index_select(0, sentences) for v in self.memory_values]
            self.memory_pad = self.memory_pad.index_select(0, sentences)


def split_heads(x, heads: int):
    """(batch, length, d_model) -> (batch, heads, length, d_model / heads)."""
    return x.reshape(x.shape[0], x.shape[1], heads, -1).transpose(1, 2)


def build_autoregressive(cfg: dict, source_size: int, num_classes: int) -> AutoregressiveTransformer:
    from oracle_kd.config import from_dict

    return AutoregressiveTransformer(source_size, num_classes, from_dict(AutoregressiveConfig, cfg))
