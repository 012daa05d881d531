"""Every model emits CTC posteriors of the right shape; the Oracle Teacher reads its source."""

import pytest
import torch

from oracle_kd import diagnostics
from oracle_kd.losses import ctc
from oracle_kd.tasks import get_task
from oracle_kd.tasks.scene_text.images import IMAGE_WIDTH

from .conftest import TINY

@pytest.fixture(scope="module")
def task():
    return get_task("scene-text")


def noise_examples(n, generator, alphabet="abcdefgh", lengths=(3, 6)):
    """Images of pure noise with random labels: the source tells nothing about the label."""
    out = []
    for i in range(n):
        length = int(torch.randint(*lengths, (1,), generator=generator))
        text = "".join(alphabet[int(k)] for k in torch.randint(0, len(alphabet), (length,), generator=generator))
        image = (torch.rand(32, IMAGE_WIDTH, generator=generator) * 255).byte().numpy()
        out.append({"image": image, "text": text, "index": i})
    return out


@pytest.mark.parametrize("kind", ["student", "conventional", "oracle"])
def test_every_model_emits_one_distribution_per_frame(task, kind):
    batch = task.collate(noise_examples(3, torch.Generator().manual_seed(0)))
    model = task.build_model(kind, TINY[kind]).eval()
    log_probs, frame_lengths = model(batch.sources, batch.source_lengths, batch.targets, batch.target_lengths)
    frames = IMAGE_WIDTH // 4
    assert log_probs.shape == (3, frames, task.vocab.num_classes)
    assert frame_lengths.tolist() == [frames] * 3
    assert torch.allclose(log_probs.exp().sum(-1), torch.ones(3, frames), atol=1e-5)
    assert torch.isfinite(ctc(log_probs, frame_lengths, batch.targets, batch.target_lengths))


def test_teachers_and_students_share_the_frame_rate_for_preset_sizes(task):
    from oracle_kd.config import load_preset

    cfg = load_preset("scene-text", "quick")["models"]
    batch = task.collate(noise_examples(2, torch.Generator().manual_seed(1)))
    frames = {k: task.build_model(k, cfg[k]).eval()(batch.sources, batch.source_lengths, batch.targets,
                                                    batch.target_lengths)[0].shape[1] for k in cfg}
    assert len(set(frames.values())) == 1


def test_oracle_output_depends_on_the_source(task):
    g = torch.Generator().manual_seed(2)
    examples = noise_examples(2, g)
    batch = task.collate(examples)
    other = task.collate(noise_examples(2, g))
    model = task.build_model("oracle", TINY["oracle"]).eval()
    a, _ = model(batch.sources, batch.source_lengths, batch.targets, batch.target_lengths)
    b, _ = model(other.sources, other.source_lengths, batch.targets, batch.target_lengths)
    assert (a - b).abs().max() > 1e-3


def test_oracle_output_depends_on_the_labels(task):
    g = torch.Generator().manual_seed(3)
    batch = task.collate(noise_examples(2, g))
    model = task.build_model("oracle", TINY["oracle"]).eval()
    a, _ = model(batch.sources, batch.source_lengths, batch.targets, batch.target_lengths)
    b, _ = model(batch.sources, batch.source_lengths, (batch.targets % 5) + 1, batch.target_lengths)
    assert (a - b).abs().max() > 1e-3


def test_label_context_tells_occurrences_apart_without_positions(task):
    # target_context: a label's key carries its neighbours, not where it stands, and a
    # row's padding (another example being longer) changes nothing.
    torch.manual_seed(4)
    model = task.build_model("oracle", {**TINY["oracle"], "target_context": 3}).eval()
    keys = model.label_keys(torch.tensor([[1, 2, 3, 1, 4, 3]]), torch.tensor([6]))[0][0]
    assert (keys[0] - keys[3]).abs().max() > 1e-3  # the two 1s: different neighbours, different keys
    shifted = model.label_keys(torch.tensor([[5, 1, 2, 3, 1, 4]]), torch.tensor([6]))[0][0]
    assert torch.allclose(keys[1], shifted[2], atol=1e-6)  # "1 2 3" moved right: same key
    g = torch.Generator().manual_seed(5)
    one = task.collate(noise_examples(1, g, lengths=(3, 4)))
    both = task.collate([*noise_examples(1, torch.Generator().manual_seed(5), lengths=(3, 4)),
                         *noise_examples(1, g, lengths=(8, 9))])
    alone, _ = model(one.sources, one.source_lengths, one.targets, one.target_lengths)
    padded, _ = model(both.sources, both.source_lengths, both.targets, both.target_lengths)
    assert torch.allclose(alone[0], padded[0], atol=1e-5)
    with pytest.raises(ValueError, match="odd width"):
        task.build_model("oracle", {**TINY["oracle"], "target_context": 4})


def train_on_noise(task, target_positions: bool, steps: int = 400):
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    cfg = {**TINY["oracle"], "dropout": 0.0, "target_positions": target_positions}
    model = task.build_model("oracle", cfg)
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    for _ in range(steps):
        batch = task.collate(noise_examples(32, g))
        loss = ctc(*model(batch.sources, batch.source_lengths, batch.targets, batch.target_lengths),
                   batch.targets, batch.target_lengths)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model, noise_examples(128, torch.Generator().manual_seed(99))


@pytest.mark.slow
def test_copy_test_detects_a_teacher_that_copies_through_target_positions(task):
    # On noise images the only way to lower the loss is to copy the labels by
    # position; target positions permit it, the default (no positions) does not.
    copier, test = train_on_noise(task, target_positions=True)
    honest, _ = train_on_noise(task, target_positions=False)
    copying = diagnostics.copy_test(task, copier, test, batch_size=64)
    default = diagnostics.copy_test(task, honest, test, batch_size=64)
    assert copying["mismatched_decoded_as_target"] >= 0.1
    assert default["mismatched_decoded_as_target"] <= 0.02
    assert copying["matched_loss"] < default["matched_loss"]  # copying pays off on this data
    assert abs(copying["mismatched_loss"] - copying["matched_loss"]) < 0.05  # and ignores the source


@pytest.mark.parametrize("task_name, preset", [(t, p) for t in ("scene-text", "speech") for p in ("smoke", "quick", "full")]
                         + [("speech", "large")])
def test_preset_conventional_teacher_is_at_least_four_times_the_student(task_name, preset):
    from oracle_kd.config import load_preset

    task = get_task(task_name)
    cfg = load_preset(task_name, preset)["models"]
    size = {k: sum(p.numel() for p in task.build_model(k, cfg[k]).parameters()) for k in ("student", "conventional")}
    assert size["conventional"] >= 4 * size["student"], size


@pytest.mark.parametrize("kind", ["student", "conventional", "oracle"])
def test_speech_models_emit_the_frames_the_task_counts(kind):
    """One distribution per 20 ms frame, and exactly the frame count the CTC length check uses."""
    from oracle_kd.config import load_preset

    speech = get_task("speech")
    samples = [1, 159, 160, 321, 16000]
    rng = torch.Generator().manual_seed(0)
    examples = [{"audio": (0.1 * torch.randn(n, generator=rng)).numpy(), "text": "ab c"} for n in samples]
    batch = speech.collate(examples)
    model = speech.build_model(kind, load_preset("speech", "smoke")["models"][kind]).eval()
    log_probs, frame_lengths = model(batch.sources, batch.source_lengths, batch.targets, batch.target_lengths)
    expected = [speech.frame_count(n, {}) for n in samples]
    assert frame_lengths.tolist() == expected and expected[-1] == 50 + 1  # 1 s: 50 frames, and one for the edge
    assert log_probs.shape == (len(samples), max(expected), speech.vocab.num_classes)
    assert torch.allclose(log_probs.exp().sum(-1), torch.ones(len(samples), max(expected)), atol=1e-5)
