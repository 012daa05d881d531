"""The autoregressive translation teacher and sequence-level KD's retargeted training set."""

import math

import pytest
import torch

from oracle_kd.models.oracle import sinusoids
from oracle_kd.store import RetargetedDataset
from oracle_kd.tasks.translation.autoregressive import PAD, AutoregressiveConfig, AutoregressiveTransformer


def tiny(seed=0):
    torch.manual_seed(seed)
    cfg = AutoregressiveConfig(d_model=16, heads=2, encoder_layers=1, decoder_layers=1, dropout=0.0,
                               label_smoothing=0.0, max_ratio=1.0)
    return AutoregressiveTransformer(source_size=12, num_classes=7, cfg=cfg).eval()


def test_teacher_forcing_predicts_each_label_then_eos_and_ignores_padding():
    model = tiny()
    sources, source_lengths = torch.tensor([[3, 4, 5], [6, 7, 0]]), torch.tensor([3, 2])
    targets, target_lengths = torch.tensor([[1, 2, 3], [4, 0, 0]]), torch.tensor([3, 1])
    memory, pad = model.encode(sources, source_lengths)
    log_probs = model.next_log_probs(memory, pad, torch.tensor([[model.bos, 1, 2, 3], [model.bos, 4, 0, 0]]))
    gold = [(0, 0, 1), (0, 1, 2), (0, 2, 3), (0, 3, model.eos), (1, 0, 4), (1, 1, model.eos)]  # 6 real tokens
    expected = -sum(float(log_probs[b, t, k]) for b, t, k in gold) / len(gold)
    assert math.isclose(float(model.sequence_loss(sources, source_lengths, targets, target_lengths)), expected,
                        rel_tol=1e-5)


def test_beam_one_is_greedy_decoding_step_by_step():
    model = tiny(1)
    sources, source_lengths = torch.tensor([[3, 4, 5, 6]]), torch.tensor([4])
    memory, pad = model.encode(sources, source_lengths)
    prefix, greedy = [model.bos], []
    for _ in range(int(model.cfg.max_ratio * 4 + 10)):
        scores = model.next_log_probs(memory, pad, torch.tensor([prefix]))[0, -1]
        scores[0] = scores[model.bos] = -math.inf  # never padding or BOS
        token = int(scores.argmax())
        if token == model.eos:
            break
        greedy.append(token)
        prefix.append(token)
    assert model.generate(sources, source_lengths, beam=1) == [greedy]


def test_beam_search_returns_one_output_per_source_without_special_tokens():
    model = tiny(2)
    out = model.generate(torch.tensor([[3, 4, 5], [6, 7, 0]]), torch.tensor([3, 2]), beam=3)
    assert len(out) == 2
    assert all(0 < k < model.num_classes for ids in out for k in ids)  # labels only: no pad, BOS or EOS


def test_incremental_steps_give_the_full_prefix_log_probs():
    model = tiny_two_layers()
    sources, source_lengths = torch.tensor([[3, 4, 5, 6], [7, 8, 0, 0]]), torch.tensor([4, 2])
    memory, pad = model.encode(sources, source_lengths)
    prefixes = torch.cat([torch.full((4, 1), model.bos), torch.randint(1, model.eos + 1, (4, 6))], 1)  # 2 beams each
    full = model.next_log_probs(memory.repeat_interleave(2, 0), pad.repeat_interleave(2, 0), prefixes)
    cache, positions = model.start_cache(memory, pad, beam=2), sinusoids(7, 16)
    for t in range(7):
        step = model.decode_step(prefixes[:, t], positions[t], cache)
        assert torch.allclose(step, full[:, t], atol=1e-5)


def test_selected_rows_go_on_as_their_own_prefixes():
    model = tiny_two_layers()
    sources, source_lengths = torch.tensor([[3, 4, 5, 6], [7, 8, 0, 0]]), torch.tensor([4, 2])
    memory, pad = model.encode(sources, source_lengths)
    prefixes = torch.cat([torch.full((4, 1), model.bos), torch.randint(1, model.eos + 1, (4, 5))], 1)
    cache, positions = model.start_cache(memory, pad, beam=2), sinusoids(6, 16)
    for t in range(3):
        model.decode_step(prefixes[:, t], positions[t], cache)
    rows = torch.tensor([3, 3])  # sentence 0 is done; sentence 1 keeps its second hypothesis twice
    cache.select(rows, torch.tensor([1]))
    kept = torch.cat([prefixes[rows, :3], torch.tensor([[1, 2, 3], [4, 5, 6]])], 1)
    full = model.next_log_probs(memory[1:].repeat_interleave(2, 0), pad[1:].repeat_interleave(2, 0), kept)
    for t in range(3, 6):
        assert torch.allclose(model.decode_step(kept[:, t], positions[t], cache), full[:, t], atol=1e-5)


@pytest.mark.parametrize("beam", [1, 2, 4])
def test_generate_finds_what_the_reference_search_finds(trained, beam):
    model, sources, source_lengths = trained
    ended = 0
    for start in range(0, len(sources), 24):  # batches of sentences that end at different steps
        batch, lengths = sources[start:start + 24], source_lengths[start:start + 24]
        ids = model.generate(batch, lengths, beam=beam)
        assert ids == alone(model, batch, lengths, beam)  # a sentence is translated the same in any batch
        ended += sum(len(out) < model.cfg.max_ratio * int(n) + 10 for out, n in zip(ids, lengths))
    assert ended > 0.9 * len(sources)  # most end with EOS before the limit


@pytest.mark.parametrize("beam", [1, 3])
def test_without_eos_in_the_limit_generate_gives_the_reference_best_live_hypothesis(beam):
    model = tiny(3)
    model.cfg.max_ratio = 0.5  # a limit of 11 tokens: an untrained decoder seldom ends that early
    sources, source_lengths = torch.tensor([[3, 4, 5], [6, 7, 0], [8, 0, 0]]), torch.tensor([3, 2, 1])
    ids = model.generate(sources, source_lengths, beam=beam)
    assert ids == alone(model, sources, source_lengths, beam)
    assert max(map(len, ids)) == 11  # each sentence's own limit: int(0.5 x 3 + 10), int(0.5 x 2 + 10), 10


def alone(model, sources, source_lengths, beam):
    """The reference search of every sentence on its own."""
    return [reference_generate(model, sources[i : i + 1], source_lengths[i : i + 1], beam)[0]
            for i in range(len(sources))]


def test_a_retargeted_set_serves_the_new_targets_under_its_own_identity():
    base = [{"text": "a", "source": "x:0"}, {"text": "b", "source": "x:1"}]
    retargeted = RetargetedDataset(base, ["A", "B"], "data+targets:k1")
    assert [retargeted[i]["text"] for i in range(2)] == ["A", "B"]
    assert retargeted[1]["source"] == "x:1" and retargeted.identity() == "data+targets:k1"


def tiny_two_layers(seed=0):
    torch.manual_seed(seed)
    cfg = AutoregressiveConfig(d_model=16, heads=2, encoder_layers=1, decoder_layers=2, dropout=0.0)
    return AutoregressiveTransformer(source_size=12, num_classes=7, cfg=cfg).eval()


def reversed_pairs(count, generator):
    """Sources of 2-8 ids (3..11) and targets that read them backwards, mapped to labels 1..6."""
    lengths = torch.randint(2, 9, (count,), generator=generator)
    sources = torch.randint(3, 12, (count, 8), generator=generator) * (torch.arange(8) < lengths[:, None])
    targets = torch.stack([torch.cat([row[:n].flip(0) % 6 + 1, row[n:]]) for row, n in zip(sources, lengths)])
    return sources, lengths, targets, lengths


@pytest.fixture(scope="module")
def trained():
    """A two-layer decoder trained 100 steps on reversal: it ends its outputs, not always right."""
    generator = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    model = AutoregressiveTransformer(12, 7, AutoregressiveConfig(d_model=32, heads=2, encoder_layers=1,
                                                                  decoder_layers=2, dropout=0.0))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(100):
        loss = model.sequence_loss(*reversed_pairs(32, generator))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    sources, source_lengths, _, _ = reversed_pairs(96, generator)
    return model.eval(), sources, source_lengths


def reference_generate(model, sources, source_lengths, beam):
    """The search as first written (before incremental decoding): every step re-runs the decoder
    over the whole prefix of every hypothesis, finished sentences included, with its bookkeeping
    in Python. `generate` must find the same ids."""
    with torch.no_grad():
        memory, memory_pad = model.encode(sources, source_lengths)
        batch = sources.shape[0]
        limit = int(model.cfg.max_ratio * int(source_lengths.max()) + 10)
        memory, memory_pad = memory.repeat_interleave(beam, 0), memory_pad.repeat_interleave(beam, 0)
        prefix = torch.full((batch * beam, 1), model.bos, dtype=torch.long)
        scores = torch.zeros(batch, beam)
        scores[:, 1:] = -math.inf
        finished = [[] for _ in range(batch)]  # (score, ids)
        alive = torch.ones(batch, dtype=torch.bool)
        for step in range(limit):
            log_probs = model.next_log_probs(memory, memory_pad, prefix)[:, -1]
            log_probs[:, PAD] = log_probs[:, model.bos] = -math.inf
            total = (scores.reshape(-1, 1) + log_probs).reshape(batch, -1)
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
                    if t == model.eos:
                        if rank < beam:
                            finished[b].append((score / (len(ids) + 1), ids))
                        continue
                    new_prefix[b, kept, :-1], new_prefix[b, kept, -1] = prefix[b * beam + o], t
                    new_scores[b, kept] = score
                    kept += 1
                if finished[b] and kept and max(f for f, _ in finished[b]) >= \
                        float(new_scores[b, :kept].max()) / prefix.shape[1]:
                    alive[b] = False
                if not kept:
                    alive[b] = False
            new_prefix[new_scores == -math.inf] = model.bos
            prefix, scores = new_prefix.reshape(batch * beam, -1), new_scores
            if not alive.any():
                break
        out = []
        for b in range(batch):
            if not finished[b]:
                k = int(scores[b].argmax())
                finished[b].append((0.0, prefix[b * beam + k, 1:].tolist()))
            out.append(max(finished[b], key=lambda pair: pair[0])[1])
        return out
