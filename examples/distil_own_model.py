"""Distil a student module of your own from a teacher, on your own word images.

    python distil_own_model.py TEACHER.safetensors TRAIN_DIR VAL_DIR OUT_DIR

TRAIN_DIR and VAL_DIR are labels.tsv folders; the teacher is any oracle-kd scene-text
checkpoint (`oracle-kd train scene-text --model oracle ...`) or an nn.Module of the
same frame rate (one frame per 4 pixels of width here).
"""

import sys
from pathlib import Path

from safetensors.torch import load_file
from torch import nn

from oracle_kd.config import KDTerm, TrainConfig
from oracle_kd.distil import distil
from oracle_kd.skips import SkipLog
from oracle_kd.tasks import get_task


class ColumnStudent(nn.Module):
    """A CTC model of your own: one convolution per 4-pixel column, a BiGRU, a linear head."""

    def __init__(self, classes: int, width: int = 64):
        super().__init__()
        self.columns = nn.Conv2d(1, width, kernel_size=(32, 4), stride=(32, 4))  # a 32-pixel-high column -> a frame
        self.rnn = nn.GRU(width, width, batch_first=True, bidirectional=True)
        self.head = nn.Linear(2 * width, classes)

    def forward(self, sources, source_lengths, *targets):  # targets are for models that read them
        frames = self.columns(sources).squeeze(2).transpose(1, 2)  # (batch, width / 4, channels)
        frames, _ = self.rnn(frames)
        return self.head(frames).log_softmax(-1), source_lengths // 4


def main(teacher, train_dir, val_dir, out_dir, epochs=10):
    task = get_task("scene-text")  # its images: grayscale, 32 x 128, in [-1, 1]; its labels: 0-9 a-z
    skips = SkipLog()
    train = task.dataset(Path(train_dir), None, skips, train=True)
    val = task.dataset(Path(val_dir), None, skips)
    student = ColumnStudent(task.tokenizer.num_classes)
    result = distil(task, student, train, val, out_dir, teachers={"teacher": teacher},
                    kd=[KDTerm(method="blank_aware", teacher="teacher", tau=1.0, weight=1.0)],
                    cfg=TrainConfig(max_epochs=epochs, batch_size=32, lr=1e-3), progress=False)
    print(result.best_val)
    student.load_state_dict(load_file(result.checkpoint))  # the best epoch's weights
    return student, result


if __name__ == "__main__":
    main(*sys.argv[1:5])
