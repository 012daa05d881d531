"""The autoregressive translation teacher and sequence-level KD's retargeted training set."""

import math

import torch

from oracle_kd.store import RetargetedDataset
from oracle_kd.tasks.translation.autoregressive import AutoregressiveConfig, AutoregressiveTransformer


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


def test_a_retargeted_set_serves_the_new_targets_under_its_own_identity():
    base = [{"text": "a", "source": "x:0"}, {"text": "b", "source": "x:1"}]
    retargeted = RetargetedDataset(base, ["A", "B"], "data+targets:k1")
    assert [retargeted[i]["text"] for i in range(2)] == ["A", "B"]
    assert retargeted[1]["source"] == "x:1" and retargeted.identity() == "data+targets:k1"
