"""What a text image is to the models: one grayscale plane of fixed size.

Generated images, user images (labels.tsv folders, LMDB) and `recognize` all
pass through `to_model_image`, so training, evaluation and inference see the
same pixels.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

IMAGE_HEIGHT = 32  # pixels; the CRNN family's standard input height
IMAGE_WIDTH = 128  # pixels; the presets' width pools (4x) give 32 CTC frames
CHARSET = "0123456789abcdefghijklmnopqrstuvwxyz"  # the label set (blank excluded)


def normalize_label(text: str) -> str:
    """The field's standard protocol: case-insensitive, alphanumeric characters only."""
    return "".join(c for c in text.lower() if c.isascii() and c.isalnum())


def to_model_image(image: Image.Image) -> np.ndarray:
    """Any PIL image -> uint8 array (IMAGE_HEIGHT, IMAGE_WIDTH), grayscale, stretched.

    Stretching (not padding) to a fixed size is the CRNN convention; the
    horizontal positions of characters scale linearly with it.
    """
    gray = image.convert("L")
    if gray.size != (IMAGE_WIDTH, IMAGE_HEIGHT):
        gray = gray.resize((IMAGE_WIDTH, IMAGE_HEIGHT), Image.Resampling.BILINEAR)
    return np.asarray(gray, dtype=np.uint8)


def decode_image_bytes(data: bytes) -> np.ndarray:
    """Encoded image bytes (PNG, JPEG, ...) -> model image; raises ValueError if unreadable."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            return to_model_image(im)
    except Exception as e:  # PIL raises many types for broken files
        raise ValueError(f"unreadable image ({type(e).__name__}: {e})") from None
