"""Distil a Hugging Face wav2vec 2.0 student from an Oracle Teacher, on generated speech.

    pip install "oracle-kd[hf]"
    python distil_hf_model.py OUT_DIR [PRETRAINED_FOLDER]

Speaks a small corpus with eSpeak NG (cached in OUT_DIR/data), trains an Oracle Teacher that hears
the audio through a copy of the student's encoder and reads the transcript, then distils the
student from it. The student is a tiny Wav2Vec2ForCTC built from a config, or the model saved in
PRETRAINED_FOLDER (`save_pretrained`; read offline, its head cut down to the task's labels).
"""

import copy
import sys
from pathlib import Path

from safetensors.torch import load_file
from transformers import Wav2Vec2Config

from oracle_kd.config import KDTerm, TrainConfig
from oracle_kd.distil import distil
from oracle_kd.models.oracle import OracleConfig
from oracle_kd.skips import SkipLog
from oracle_kd.tasks import get_task
from oracle_kd.tasks.speech.hf import HFCTC, HFOracle

# wav2vec 2.0 at toy size: strides 5 x 8 x 8 = 320 samples (20 ms) a frame, the task's frame rate
TINY = Wav2Vec2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                      conv_dim=(32, 32, 32), conv_kernel=(10, 4, 4), conv_stride=(5, 8, 8),
                      num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2, feat_extract_norm="layer")


def main(out_dir, pretrained=None, n_train=400, n_val=40, epochs=10):
    out = Path(out_dir)
    task = get_task("speech", sources="waveform")  # batches of 16 kHz samples, not log-mel features
    data = task.prepare_data({"n_train": n_train, "n_val": n_val, "n_test": n_val, "text_source": "wordfreq",
                              "max_words": 4}, out / "data", progress=False)
    train, val = task.dataset(data, "train", SkipLog(), train=True), task.dataset(data, "val", SkipLog())
    classes = task.tokenizer.num_classes  # the blank (0), then a-z, apostrophe, space
    if pretrained:
        student = HFCTC.from_pretrained(pretrained, task.tokenizer.labels)
        student.model.freeze_feature_encoder()  # fine-tuning keeps the pretrained convolutions
    else:
        student = HFCTC.from_config(TINY, classes)
    cfg = TrainConfig(max_epochs=epochs, batch_size=16, lr=1e-3)

    oracle = HFOracle(copy.deepcopy(student.model.base_model), classes, OracleConfig(d_model=32, heads=2, layers=1))
    teacher = distil(task, oracle, train, val, out / "oracle", cfg=cfg, progress=False)  # CTC on (audio, text)
    oracle.load_state_dict(load_file(teacher.checkpoint))  # its best epoch

    result = distil(task, student, train, val, out / "student", teachers={"oracle": oracle},
                    kd=[KDTerm(method="blank_aware", teacher="oracle", tau=1.0, weight=1.0)], cfg=cfg,
                    progress=False)
    print(result.best_val)  # OUT_DIR/student/best.safetensors is a checkpoint: `oracle-kd evaluate` reads it
    student.load_state_dict(load_file(result.checkpoint))
    return student, result


if __name__ == "__main__":
    main(*sys.argv[1:3])
