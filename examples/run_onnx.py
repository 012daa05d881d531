"""Run a student exported by `oracle-kd export` with onnxruntime and numpy alone.

    python run_onnx.py student.onnx word.png ...    # scene text (reading images needs Pillow)
    python run_onnx.py student.onnx speech.wav ...  # speech (16-bit PCM WAV at the model's rate)

Prints path<TAB>text per input, as `oracle-kd recognize` / `transcribe` do. All it
needs to know comes from the file's metadata: the label set, the blank, and how
an image or a waveform becomes the graph's inputs.
"""

import json
import sys
import wave

import numpy as np
import onnxruntime


def main(model_path, paths):
    session = onnxruntime.InferenceSession(model_path, providers=["CPUExecutionProvider"])
    meta = session.get_modelmeta().custom_metadata_map
    spec = json.loads(meta["input"])
    read = image_inputs if spec["kind"] == "image" else audio_inputs
    inputs = dict(zip([i.name for i in session.get_inputs()], read(paths, spec)))
    log_probs, frame_lengths = session.run(["log_probs", "frame_lengths"], inputs)
    texts = greedy_texts(log_probs, frame_lengths, json.loads(meta["labels"]), int(meta["blank"]))
    for path, text in zip(paths, texts):
        print(f"{path}\t{text}")


def greedy_texts(log_probs, frame_lengths, labels, blank):
    """Best path: argmax class per valid frame, merge repeats, drop the blank, join the labels."""
    texts = []
    for best, n in zip(log_probs.argmax(-1), frame_lengths):
        best = best[:n]
        starts = np.r_[True, best[1:] != best[:-1]]  # the first frame of each run of one class
        texts.append("".join(labels[k] for k in best[starts & (best != blank)]))
    return texts


def image_inputs(paths, spec):
    """Grayscale, stretched to the model's height x width, scaled to floats (batch, 1, height, width)."""
    from PIL import Image

    images = []
    for path in paths:
        with Image.open(path) as image:
            gray = image.convert("L").resize((spec["width"], spec["height"]), Image.Resampling.BILINEAR)
        images.append(np.asarray(gray, dtype=np.uint8))
    norm = spec["normalize"]
    sources = np.stack(images)[:, None].astype(np.float32) / np.float32(norm["divide"]) - np.float32(norm["subtract"])
    return sources, np.full(len(images), spec["width"], dtype=np.int64)


def audio_inputs(paths, spec):
    """16-bit PCM WAV files -> float32 waveforms in [-1, 1] (batch, samples), zero-padded, and their lengths."""
    waves = []
    for path in paths:
        with wave.open(path, "rb") as f:
            if f.getsampwidth() != 2 or f.getframerate() != spec["sample_rate"]:
                sys.exit(f"{path}: this example reads 16-bit PCM WAV at {spec['sample_rate']} Hz")
            pcm = np.frombuffer(f.readframes(f.getnframes()), dtype="<i2").reshape(-1, f.getnchannels())
        waves.append((pcm.astype(np.float32) / np.float32(32768)).mean(axis=1))  # mono: the channels' mean
    lengths = np.array([len(w) for w in waves], dtype=np.int64)
    sources = np.zeros((len(waves), lengths.max()), dtype=np.float32)
    for row, w in enumerate(waves):
        sources[row, : len(w)] = w
    return sources, lengths


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
