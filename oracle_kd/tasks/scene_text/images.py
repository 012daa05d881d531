"""What a text image is to the models: one grayscale plane of fixed size.

Generated images, user images (labels.tsv folders, LMDB) and `recognize` all
pass through `to_model_image`, so training, evaluation and inference see the
same pixels.
"""

from __future__ import annotations

import io
import re

import numpy as np
from PIL import Image, ImageOps

IMAGE_HEIGHT = 32  # pixels; the CRNN family's standard input height
IMAGE_WIDTH = 128  # pixels; the presets' width pools (4x) give 32 CTC frames
CHARSET = "0123456789abcdefghijklmnopqrstuvwxyz"  # the label set (blank excluded)
MAX_PIXELS = 50_000_000  # width x height; a 50 MP photo decodes to 200 MB at most (RGBA), a word image is far smaller


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
    """Encoded image bytes (PNG, JPEG, ...) -> model image, upright as its EXIF orientation
    says (phone photos are stored sideways); ValueError with the reason if unreadable.

    The size is checked from the header before any pixel is decoded: a few kilobytes
    of PNG can declare gigapixels."""
    try:
        im = Image.open(io.BytesIO(data))
    except Exception as e:  # PIL raises many types for broken files
        raise ValueError(_unreadable(e)) from None
    with im:
        width, height = im.size
        if width * height > MAX_PIXELS:
            raise ValueError(f"image of {width} x {height} pixels, more than the limit of {MAX_PIXELS:,}")
        try:
            im.load()
            return to_model_image(ImageOps.exif_transpose(im))
        except Exception as e:
            raise ValueError(_unreadable(e)) from None


def _unreadable(error: Exception) -> str:
    # PIL names the in-memory buffer ("<_io.BytesIO object at 0x...>"): noise to a reader.
    reason = re.sub(r" ?<_io\.BytesIO object at 0x[0-9a-fA-F]+>", "", str(error))
    return f"unreadable image ({type(error).__name__}: {reason})"
