"""Synthetic word images for scene text recognition, rendered once into a cache.

Each example is drawn at high resolution from a font that a pip package ships,
warped (rotation, shear, mild perspective), cropped with random margins,
resized to a random capture height, painted onto a random background, degraded
(blur, noise, JPEG) and finally stretched by `to_model_image`. Every example
has its own seed, so the cache is byte-identical whatever the worker count.

Cache layout (the loader relies on it), for split in train/val/test:
  {split}_images.npy  uint8 (N, IMAGE_HEIGHT, IMAGE_WIDTH)
  {split}_texts.json  N strings as drawn; the label is normalize_label(text)
  {split}_spans.npy   float32 (N, max_label_length, 2): [x0, x1) of each label
                      character's ink in final image pixels, padded with -1
  {split}_fonts.json  N font file basenames
  meta.json           config, counts, fonts, data card; written last, so its
                      presence means the cache is complete
"""

from __future__ import annotations

import io
import json
import re
import string
from dataclasses import asdict, dataclass
from functools import cache
from importlib.metadata import version
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from oracle_kd.io import atomic_write_json
from oracle_kd.parallel import cache_is_complete, chunk_tasks, ordered_map
from oracle_kd.tasks.scene_text.images import IMAGE_HEIGHT, IMAGE_WIDTH, to_model_image
from oracle_kd.tasks.scene_text.words import (
    PUNCTUATION,
    TEXT_MIX,
    sample_text,
    split_vocabulary,
    word_source,
)

FORMAT_VERSION = 1
SPLITS = ("train", "val", "test")
CHUNK = 100  # images per worker task: amortizes pickling, keeps workers balanced
# Pillow embeds Aileron Regular (CC0) for ImageFont.load_default(size); it has no
# file of its own, so it gets this pseudo-path, understood by `load_font`.
PILLOW_FONT = "<pillow>/Aileron-Regular.ttf"
# Test-only families: a serif and a humanist sans unlike any training font.
HELD_OUT_FAMILIES = ("DejaVu Serif", "Aileron")
# Fonts whose cmap covers ASCII but whose glyphs there are math symbols,
# size variants or placeholders (checked by eye; cmmi10 also breaks punctuation).
EXCLUDED_FONTS = re.compile(r"^(STIXSiz|STIXNonUni|LastResort|cmex10|cmsy10|cmmi10)|Display")
REQUIRED_CHARS = string.ascii_letters + string.digits + PUNCTUATION
FONT_LICENCES = {  # basename prefix -> licence, for the data card
    "DejaVu": "Bitstream Vera licence, DejaVu changes public domain (matplotlib LICENSE_DEJAVU)",
    "STIX": "SIL Open Font License 1.1 (matplotlib LICENSE_STIX)",
    "cm": "BaKoMa Fonts Licence (matplotlib LICENSE)",
    "Aileron": "CC0 1.0 (embedded in Pillow's ImageFont.load_default)",
}


@dataclass
class RenderConfig:
    n_train: int = 20000
    n_val: int = 1000
    n_test: int = 2000
    seed: int = 0
    max_label_length: int = 14  # longest label generated (after normalize_label)
    vocab_size: int = 50000  # wordfreq top-N list, before filtering and splitting
    font_size: tuple[int, int] = (28, 44)  # px at draw resolution, inclusive
    capture_height: tuple[int, int] = (16, 64)  # px of the crop before degradation; log-uniform
    max_rotation: float = 4.0  # degrees
    max_shear: float = 0.3  # horizontal shift per unit height; 0.2 is a typical italic
    perspective: float = 0.08  # corner jitter, as a fraction of the text height
    tracking_prob: float = 0.3  # chance of extra letter spacing
    max_tracking: float = 0.25  # em
    min_contrast: float = 0.3  # luminance difference text/background, 0..1
    blur_prob: float = 0.3
    max_blur: float = 1.0  # Gaussian radius in px at capture height
    max_noise: float = 8.0  # std of additive noise, grey levels
    jpeg_prob: float = 0.6
    jpeg_quality: tuple[int, int] = (20, 95)

    def __post_init__(self):
        if not 0 <= self.min_contrast < 0.5:
            raise ValueError("min_contrast must be in [0, 0.5): the text needs room on one side")

    def count(self, split: str) -> int:
        return {"train": self.n_train, "val": self.n_val, "test": self.n_test}[split]


def render_dataset(config: RenderConfig, out_dir: Path, workers: int = 2, progress: bool = True) -> Path:
    """Render train/val/test into out_dir (skip if out_dir/meta.json exists and matches config); return out_dir."""
    out_dir = Path(out_dir)
    if cache_is_complete(out_dir, FORMAT_VERSION, _config_dict(config)):
        return out_dir
    out_dir.mkdir(parents=True, exist_ok=True)

    fonts = split_fonts(available_fonts())
    vocab = split_vocabulary(config.vocab_size, config.max_label_length)
    outputs = {split: _empty_split(config, split) for split in SPLITS}
    tasks = chunk_tasks({split: config.count(split) for split in SPLITS}, CHUNK)
    state = (config, fonts, vocab)
    with _progress_bar(sum(map(config.count, SPLITS)), progress) as bar:
        for (split, start, stop), chunk in zip(tasks, ordered_map(_render_chunk, tasks, _init_worker, state, workers)):
            for key, values in chunk.items():
                outputs[split][key][start:stop] = values
            bar.update(stop - start)

    for split, out in outputs.items():
        np.save(out_dir / f"{split}_images.npy", out["images"])
        np.save(out_dir / f"{split}_spans.npy", out["spans"])
        (out_dir / f"{split}_texts.json").write_text(json.dumps(out["texts"]))
        (out_dir / f"{split}_fonts.json").write_text(json.dumps(out["fonts"]))
    atomic_write_json(out_dir / "meta.json", _meta(config, fonts, vocab))  # last: the completeness marker
    return out_dir


def render_word(
    text: str, font_path: str, rng: np.random.Generator, config: RenderConfig | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """One image: uint8 (IMAGE_HEIGHT, IMAGE_WIDTH) and float32 (len(label), 2) x-extents [x0, x1)
    of each label character (those kept by normalize_label, in order) in final-image pixels."""
    config = config or RenderConfig()
    size = int(rng.integers(config.font_size[0], config.font_size[1] + 1))
    mask, boxes = _draw_text(text, load_font(font_path, size), rng, config)
    homography, crop_size = _warp(boxes, rng, config)
    inverse = np.linalg.inv(homography)
    inverse /= inverse[2, 2]  # PIL wants the output->input map with its last entry 1
    mask = mask.transform(crop_size, Image.Transform.PERSPECTIVE, tuple(inverse.flat[:8]), Image.Resampling.BILINEAR)

    lo, hi = config.capture_height
    height = int(round(np.exp(rng.uniform(np.log(lo), np.log(hi)))))
    width = max(1, round(crop_size[0] * height / crop_size[1]))
    image = _paint(mask.resize((width, height), Image.Resampling.BILINEAR), rng, config)

    label_boxes = boxes[[i for i, c in enumerate(text) if c.isascii() and c.isalnum()]]
    corners = label_boxes[:, [[0, 1], [2, 1], [2, 3], [0, 3]]]  # (L, 4 corners, xy)
    xs = _apply(homography, corners.reshape(-1, 2))[:, 0].reshape(-1, 4)
    spans = np.stack([xs.min(1), xs.max(1)], axis=1) * (IMAGE_WIDTH / crop_size[0])
    return to_model_image(image), np.clip(spans, 0, IMAGE_WIDTH).astype(np.float32)


def available_fonts() -> list[str]:
    """Font files that pip packages ship and that draw a-z A-Z 0-9 (and our punctuation), sorted."""
    return list(_checked_fonts())


@cache
def _checked_fonts() -> tuple[str, ...]:
    import matplotlib

    candidates = sorted(str(p) for p in (Path(matplotlib.get_data_path()) / "fonts" / "ttf").glob("*.ttf"))
    candidates.append(PILLOW_FONT)
    return tuple(p for p in candidates if not EXCLUDED_FONTS.search(Path(p).name) and _draws_required_chars(p))


def split_fonts(fonts) -> dict[str, list[str]]:
    """{"train": [...], "val": [...], "test": [...]}; HELD_OUT_FAMILIES only in test, val uses train fonts."""
    test = [f for f in fonts if font_family(f) in HELD_OUT_FAMILIES]
    train = [f for f in fonts if font_family(f) not in HELD_OUT_FAMILIES]
    if not test or not train:
        raise ValueError(f"need fonts of {HELD_OUT_FAMILIES} and others, got {[Path(f).name for f in fonts]}")
    return {"train": train, "val": list(train), "test": test}


@cache
def font_family(path: str) -> str:
    """The family name from the font's name table ('DejaVu Serif' for DejaVuSerif-Bold.ttf)."""
    from fontTools.ttLib import TTFont

    names = TTFont(_font_source(path), lazy=True)["name"]
    return names.getDebugName(16) or names.getDebugName(1)  # typographic family, else legacy


@cache
def load_font(path: str, size: int) -> ImageFont.FreeTypeFont:
    # BASIC layout: raqm may or may not be installed, and the two engines place glyphs differently.
    return ImageFont.truetype(_font_source(path), size, layout_engine=ImageFont.Layout.BASIC)


# --- drawing and geometry ------------------------------------------------------------


def _draw_text(text: str, font, rng, config) -> tuple[Image.Image, np.ndarray]:
    """White-on-black mask of the text and the ink box (x0, y0, x1, y1) of every character."""
    tracking = rng.uniform(-0.03, config.max_tracking) * font.size if rng.random() < config.tracking_prob else 0.0
    # Pen position of character i, including kerning with its left neighbour; whole
    # pixels, so the boxes below are exactly where the glyphs are pasted.
    pens = np.round([font.getlength(text[: i + 1]) - font.getlength(c) + i * tracking for i, c in enumerate(text)])
    glyphs = [_glyph(font, c) for c in text]
    boxes = np.array([(x + dx, dy, x + dx + g.width, dy + g.height) for x, (g, dx, dy) in zip(pens, glyphs)])
    pad = 2
    boxes += np.tile(pad - boxes[:, :2].min(0), 2)  # the canvas starts just before the ink
    mask = Image.new("L", tuple(boxes[:, 2:].max(0).astype(int) + pad))
    for (glyph, _, _), (x0, y0, _, _) in zip(glyphs, boxes):
        mask.paste(255, (int(x0), int(y0)), glyph)  # paste through the glyph: overlaps stay inked
    return mask, boxes.astype(np.float64)


@cache
def _glyph(font, char: str) -> tuple[Image.Image, int, int]:
    """The glyph's ink, cropped tight, and its offset from the pen on the baseline.

    getbbox alone would not do: horizontally it also spans the advance width.
    """
    left, top, right, bottom = font.getbbox(char, anchor="ls")
    canvas = Image.new("L", (right - left, bottom - top))
    ImageDraw.Draw(canvas).text((-left, -top), char, fill=255, font=font, anchor="ls")
    ink = canvas.getbbox() or (0, 0, 0, 0)  # no ink: an empty glyph at the pen
    return canvas.crop(ink), left + ink[0], top + ink[1]


def _warp(boxes: np.ndarray, rng, config) -> tuple[np.ndarray, tuple[int, int]]:
    """Homography from mask to crop pixels: rotation, shear, perspective, then random margins."""
    x0, y0 = boxes[:, :2].min(0)
    x1, y1 = boxes[:, 2:].max(0)
    height = y1 - y0
    src = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]])
    center = src.mean(0)
    angle = np.deg2rad(rng.uniform(-config.max_rotation, config.max_rotation))
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    shear = np.array([[1.0, -rng.uniform(-config.max_shear, config.max_shear)], [0.0, 1.0]])  # >0 leans right
    dst = (src - center) @ (rotation @ shear).T
    dst += rng.uniform(-config.perspective, config.perspective, size=(4, 2)) * height
    homography = _homography(src, dst)

    margins = rng.uniform([0.0, 0.05, 0.0, 0.05], [0.4, 0.3, 0.4, 0.3]) * height  # left, top, right, bottom
    left, top = dst.min(0) - margins[:2]
    right, bottom = dst.max(0) + margins[2:]
    shift = np.array([[1.0, 0.0, -left], [0.0, 1.0, -top], [0.0, 0.0, 1.0]])
    return shift @ homography, (int(np.ceil(right - left)), int(np.ceil(bottom - top)))


def _homography(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The 3x3 projective map taking 4 src points to 4 dst points."""
    rows, rhs = [], []
    for (x, y), (u, v) in zip(src, dst):
        rows.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
        rows.append([0, 0, 0, x, y, 1, -v * x, -v * y])
        rhs += [u, v]
    return np.append(np.linalg.solve(np.array(rows), np.array(rhs)), 1.0).reshape(3, 3)


def _apply(homography: np.ndarray, points: np.ndarray) -> np.ndarray:
    projected = np.c_[points, np.ones(len(points))] @ homography.T
    return projected[:, :2] / projected[:, 2:]


# --- appearance -----------------------------------------------------------------------

_LUMA = np.array([0.299, 0.587, 0.114])  # ITU-R 601, as PIL's convert("L")


def _paint(mask: Image.Image, rng, config) -> Image.Image:
    """Text colour over a background whose luminance stays min_contrast away from it, then degrade."""
    alpha = np.asarray(mask, dtype=np.float32)[..., None] / 255.0
    ink = rng.uniform(0, 255, size=3)
    ink_luma, gap = ink @ _LUMA, config.min_contrast * 255
    # The background's luminance lives in one band on one side of the ink's, so no
    # part of it (gradient end, texture peak) can come near the text's. With
    # min_contrast < 0.5 at least one band is non-empty.
    bands = [(lo, hi) for lo, hi in [(0.0, ink_luma - gap), (ink_luma + gap, 255.0)] if hi > lo]
    widths = np.array([hi - lo for lo, hi in bands])
    band = bands[rng.choice(len(bands), p=widths / widths.sum())]
    background = _background(alpha.shape[:2], band, rng)
    return _degrade(background * (1 - alpha) + ink * alpha, rng, config)


def _background(shape: tuple[int, int], band: tuple[float, float], rng) -> np.ndarray:
    """float (h, w, 3) background, flat, gradient or textured, luminance within band."""
    lo, hi = band
    kind = rng.integers(3)
    if kind == 0:
        return np.broadcast_to(_with_luma(rng.uniform(0, 255, 3), rng.uniform(lo, hi)), (*shape, 3))
    if kind == 1:  # linear gradient between two colours of the band
        ends = [_with_luma(rng.uniform(0, 255, 3), rng.uniform(lo, hi)) for _ in range(2)]
        angle = rng.uniform(0, 2 * np.pi)
        yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
        t = xx * np.cos(angle) + yy * np.sin(angle)
        t = ((t - t.min()) / max(np.ptp(t), 1e-6))[..., None]
        return ends[0] * (1 - t) + ends[1] * t
    # Texture: smooth blobs plus grain, added equally to all channels so luminance
    # moves by exactly the offset (clipping only pulls it back towards the base).
    amplitude = rng.uniform(0.3, 1.0) * min((hi - lo) / 2, 80.0)
    base = _with_luma(rng.uniform(0, 255, 3), rng.uniform(lo + amplitude, hi - amplitude))
    coarse = rng.uniform(0, 255, (3, 6)).astype(np.uint8)
    field = np.asarray(Image.fromarray(coarse).resize(shape[::-1], Image.Resampling.BICUBIC), np.float32) / 127.5 - 1
    field = np.clip(0.8 * field + 0.2 * rng.uniform(-1, 1, shape), -1, 1)
    return np.clip(base + amplitude * field[..., None], 0, 255)


def _with_luma(rgb: np.ndarray, luma: float) -> np.ndarray:
    """The colour moved towards black or white until its luminance is luma."""
    current = rgb @ _LUMA
    if luma <= current:
        return rgb * (luma / max(current, 1e-6))
    return rgb + (255 - rgb) * ((luma - current) / max(255 - current, 1e-6))


def _degrade(pixels: np.ndarray, rng, config) -> Image.Image:
    """Camera-like losses at capture resolution: blur, sensor noise, JPEG."""
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")
    if rng.random() < config.blur_prob:
        image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, config.max_blur)))
    grain = rng.normal(0, rng.uniform(0, config.max_noise), size=(image.height, image.width, 1))  # luminance noise
    noisy = np.asarray(image, dtype=np.float32) + grain
    image = Image.fromarray(np.clip(noisy + 0.5, 0, 255).astype(np.uint8), "RGB")
    if rng.random() < config.jpeg_prob:
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=int(rng.integers(config.jpeg_quality[0], config.jpeg_quality[1] + 1)))
        image = Image.open(buffer)
    return image


# --- fonts ----------------------------------------------------------------------------


def _font_source(path: str):
    return io.BytesIO(ImageFont.load_default(size=10).font_bytes) if path == PILLOW_FONT else path


def _draws_required_chars(path: str) -> bool:
    """The cmap maps every required character, and each draws distinct, non-empty ink."""
    from fontTools.ttLib import TTFont

    cmap = TTFont(_font_source(path), lazy=True).getBestCmap() or {}
    if any(ord(c) not in cmap for c in REQUIRED_CHARS):
        return False
    font = load_font(path, 24)
    glyphs = set()
    for c in string.ascii_letters + string.digits:
        canvas = Image.new("L", (48, 48))
        ImageDraw.Draw(canvas).text((8, 36), c, fill=255, font=font, anchor="ls")
        glyphs.add(canvas.tobytes())
    return len(glyphs) == 62 and Image.new("L", (48, 48)).tobytes() not in glyphs


# --- dataset assembly -------------------------------------------------------------------

_STATE = None  # (config, fonts, vocab) in each worker, set once by _init_worker


def _init_worker(state) -> None:
    global _STATE
    _STATE = state


def _render_chunk(task) -> dict:
    """Examples start..stop of one split; each seeded by (seed, split index, i) alone."""
    split, start, stop = task
    config, fonts, vocab = _STATE
    out = {"images": [], "spans": [], "texts": [], "fonts": []}
    for i in range(start, stop):
        rng = np.random.default_rng([config.seed, SPLITS.index(split), i])
        text = sample_text(rng, vocab[split], config.max_label_length)
        font = fonts[split][rng.integers(len(fonts[split]))]
        image, spans = render_word(text, font, rng, config)
        padded = np.full((config.max_label_length, 2), -1, dtype=np.float32)
        padded[: len(spans)] = spans
        out["images"].append(image)
        out["spans"].append(padded)
        out["texts"].append(text)
        out["fonts"].append(Path(font).name)
    return out


def _empty_split(config: RenderConfig, split: str) -> dict:
    n = config.count(split)
    return {
        "images": np.zeros((n, IMAGE_HEIGHT, IMAGE_WIDTH), dtype=np.uint8),
        "spans": np.full((n, config.max_label_length, 2), -1, dtype=np.float32),
        "texts": [""] * n,
        "fonts": [""] * n,
    }


def _progress_bar(total: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, disable=not enabled, unit="img", desc="rendering")


def _config_dict(config: RenderConfig) -> dict:
    return json.loads(json.dumps(asdict(config)))  # tuples -> lists, as read back from meta.json


def _meta(config: RenderConfig, fonts: dict[str, list[str]], vocab: dict) -> dict:
    used = sorted({f for split in SPLITS for f in fonts[split]})
    return {
        "format_version": FORMAT_VERSION,
        "config": _config_dict(config),
        "counts": {split: config.count(split) for split in SPLITS},
        "image_size": [IMAGE_HEIGHT, IMAGE_WIDTH],
        "fonts": {split: [Path(f).name for f in fonts[split]] for split in SPLITS},
        "held_out_font_families": list(HELD_OUT_FAMILIES),
        "vocabulary_sizes": {split: len(words) for split, words in vocab.items()},
        "text_mix": TEXT_MIX,
        "sources": {
            "words": word_source(config.vocab_size),
            "fonts": [
                {"file": Path(f).name, "family": font_family(f),
                 "licence": next(v for k, v in FONT_LICENCES.items() if Path(f).name.startswith(k))}
                for f in used
            ],
        },
        # Pixels are reproducible bit for bit only with the same library versions.
        "libraries": {name: version(name) for name in ("numpy", "pillow", "matplotlib", "wordfreq")},
    }
