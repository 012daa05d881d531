import pytest

from oracle_kd.checkpoint import save_model
from oracle_kd.tasks import get_task

TINY = {
    "student": {"cnn": {"channels": [4, 8, 8, 8, 16]}, "rnn_hidden": 16, "rnn_layers": 1},
    "conventional": {"cnn": {"channels": [8, 8, 16, 16, 32], "residual": True}, "rnn_hidden": 32},
    "oracle": {"encoder": {"channels": [4, 8, 8, 8, 16]}, "d_model": 32, "heads": 2, "layers": 1},
}
SPEECH_TINY = {"prologue": [8, 11], "blocks": [[8, 11]], "sub_blocks": 1, "epilogue": [8, 11], "head_channels": 8}


@pytest.fixture
def tiny_checkpoint(tmp_path):
    """An untrained tiny student checkpoint, for commands that only need a loadable model."""
    path = tmp_path / "tiny.safetensors"
    model = get_task("scene-text").build_model("student", TINY["student"])
    save_model(path, model, {"task": "scene-text", "kind": "student", "config": TINY["student"]})
    return path
