"""A large user-format corpus for measuring memory: an LMDB of word images, or a
NeMo manifest of audio. What the examples show does not matter, only how many
there are and how much they weigh on disk.

    python scripts/make_big_corpus.py lmdb /work/scratch/lmdb-200k --n 200000
    python scripts/make_big_corpus.py manifest /work/scratch/audio-20h --hours 20

LMDB: a pool of word images drawn by the project's renderer (fonts pip packages
ship), each entry a random horizontal crop of one of them, PNG-encoded, in the
benchmark layout (`image-%09d`, `label-%09d`, `num-samples`). Manifest: FLAC
files of `--seconds` each (two tones and noise), transcripts of a few words.
Both are deterministic for a seed and written in a streaming way (memory stays
small whatever the size).
"""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path

import numpy as np

POOL = 500  # distinct rendered words the LMDB entries are cropped from
WORDS = "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike".split()


def write_lmdb(out: Path, n: int, seed: int) -> None:
    import lmdb
    from PIL import Image

    from oracle_kd.tasks.scene_text.render import available_fonts, render_word

    rng = np.random.default_rng(seed)
    fonts = available_fonts()
    pool = []
    for k in range(POOL):
        word = WORDS[k % len(WORDS)][: 3 + k % 6] + str(k % 10)
        image, _ = render_word(word, fonts[k % len(fonts)], rng)
        pool.append((image, word))
    out.mkdir(parents=True, exist_ok=True)
    env = lmdb.open(str(out), map_size=n * 16384 + (256 << 20), lock=False)
    txn = env.begin(write=True)
    for i in range(1, n + 1):
        image, word = pool[int(rng.integers(POOL))]
        left, right = int(rng.integers(0, 12)), int(rng.integers(0, 12))
        buffer = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(image[:, left : image.shape[1] - right])).save(buffer, format="PNG")
        txn.put(b"image-%09d" % i, buffer.getvalue())
        txn.put(b"label-%09d" % i, word.encode())
        if i % 10000 == 0:  # commit in pieces: one transaction would hold every dirty page
            txn.commit()
            txn = env.begin(write=True)
            print(f"{i:,} images", flush=True)
    txn.put(b"num-samples", str(n).encode())
    txn.commit()
    env.close()


def write_manifest(out: Path, hours: float, seconds: float, seed: int) -> None:
    import soundfile

    rng = np.random.default_rng(seed)
    count = int(round(hours * 3600 / seconds))
    (out / "audio").mkdir(parents=True, exist_ok=True)
    t = np.arange(int(16000 * seconds)) / 16000
    with open(out / "manifest.jsonl", "w") as manifest:
        for i in range(count):
            f1, f2 = rng.uniform(150, 900, size=2)
            audio = 0.2 * np.sin(2 * np.pi * f1 * t) + 0.1 * np.sin(2 * np.pi * f2 * t) + 0.02 * rng.standard_normal(len(t))
            rel = f"audio/{i:07d}.flac"
            soundfile.write(out / rel, audio.astype(np.float32), 16000, format="FLAC", subtype="PCM_16")
            text = " ".join(rng.choice(WORDS, size=int(rng.integers(2, 6))))
            manifest.write(json.dumps({"audio_filepath": rel, "duration": seconds, "text": text}) + "\n")
            if (i + 1) % 500 == 0:
                print(f"{(i + 1) * seconds / 3600:.1f} h", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("kind", choices=["lmdb", "manifest"])
    parser.add_argument("out", type=Path)
    parser.add_argument("--n", type=int, default=200_000, help="images (lmdb)")
    parser.add_argument("--hours", type=float, default=20.0, help="hours of audio (manifest)")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each audio file (manifest)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.kind == "lmdb":
        write_lmdb(args.out, args.n, args.seed)
    else:
        write_manifest(args.out, args.hours, args.seconds, args.seed)


if __name__ == "__main__":
    main()
