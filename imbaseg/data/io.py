"""Robust image reading and PNG writing for the prepare step.

Every reader returns uint8 numpy arrays: images (H, W) or (H, W, 3), masks (H, W). A file that cannot
be decoded (truncated, not an image, unsupported) raises ``UserError`` naming the file.

TIFF: Pillow first (it decodes the LZW-compressed DRIVE files without extra codecs), then tifffile,
which reads CVC-ClinicDB's originals: 3 colour samples per pixel tagged as greyscale, which Pillow
refuses.

Size limit: this module is the one place that opens images, and it checks every image's size from
its header before decoding it: above ``pixel_limit()`` (default 178,956,970 pixels, Pillow's own
"decompression bomb" limit; ``--max-pixels N`` or ``IMBASEG_MAX_IMAGE_PIXELS=N`` raise it) the
image is an ``ImageTooLarge``, a bad file like any other. Pillow's own check is switched off here
(``Image.MAX_IMAGE_PIXELS = None``) so that the limit is ours alone.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from imbaseg.errors import UserError

# Pillow refuses images above 2 x its MAX_IMAGE_PIXELS with DecompressionBombError (a crash, not a bad
# file) and warns above 1 x; imbaseg applies one limit itself, from the header, in read_array.
DEFAULT_MAX_PIXELS = 2 * 89_478_485  # Pillow's refusal threshold (~179 megapixels, e.g. 16000 x 11000)
MAX_PIXELS_ENV = "IMBASEG_MAX_IMAGE_PIXELS"
Image.MAX_IMAGE_PIXELS = None

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".gif", ".bmp", ".ppm", ".pgm", ".webp")
TIFF_SUFFIXES = (".tif", ".tiff")
# A mask pixel is "ambiguous" inside this band: far from both 0 and 255, so neither anti-aliasing
# (values hugging an edge) nor compression noise (values a few levels off 0 or 255) explains it.
AMBIGUOUS_BAND = (32, 223)
# Non-binary: more than this fraction of pixels are ambiguous AND lie more than EDGE_PX pixels away
# from the thresholded mask's boundary. Anti-aliased edges are at most a couple of pixels wide.
NONBINARY_MAX_FRACTION = 0.01
EDGE_PX = 2


def is_image_file(path: str | os.PathLike) -> bool:
    name = Path(path).name
    return not name.startswith(".") and Path(path).suffix.lower() in IMAGE_SUFFIXES


class UnreadableImage(UserError):
    """An image file that cannot be decoded; ``path`` and ``reason`` for problem lists."""

    def __init__(self, path, reason: str):
        self.path, self.reason = Path(path), reason
        super().__init__(
            f"cannot read image '{path}': {reason}. The file is truncated, corrupt or not an image; "
            "replace it (re-download or re-extract) or rerun prepare with --skip-bad."
        )


class ImageTooLarge(UnreadableImage):
    """An image with more pixels than ``pixel_limit()``: a bad file whose fix is a higher limit."""

    def __init__(self, path, height: int, width: int, limit: int):
        self.path, self.height, self.width, self.limit = Path(path), height, width, limit
        self.reason = (
            f"{width}x{height} = {height * width:,} pixels is above the limit of {limit:,} pixels that "
            "guards against decompression bombs"
        )
        UserError.__init__(
            self,
            f"cannot read image '{path}': {self.reason}. If the image is genuine, raise the limit with "
            f"--max-pixels N (or {MAX_PIXELS_ENV}=N); otherwise leave it out (prepare --skip-bad).",
        )


def pixel_limit(limit: int | None = None) -> int:
    """The largest image read, in pixels (H x W): ``limit`` (``--max-pixels``) if given, else
    $IMBASEG_MAX_IMAGE_PIXELS, else DEFAULT_MAX_PIXELS. UserError for a limit that is not a positive
    whole number (the range is config.FLAG_NUMBERS')."""
    if limit is not None:
        from imbaseg.config import check_number

        if isinstance(limit, bool) or not isinstance(limit, (int, np.integer)):
            raise UserError(f"--max-pixels must be a whole number of pixels, got {limit!r}")
        return int(check_number("--max-pixels", int(limit)))
    text = os.environ.get(MAX_PIXELS_ENV, "").strip()
    if not text:
        return DEFAULT_MAX_PIXELS
    try:
        value = int(text.replace("_", "").replace(",", ""))
    except ValueError:
        value = 0
    if value < 1:
        raise UserError(f"{MAX_PIXELS_ENV}={text!r} is not a positive whole number of pixels, e.g. "
                        f"{MAX_PIXELS_ENV}=400000000")
    return value


def check_pixels(path, height: int, width: int, limit: int | None = None) -> None:
    """``ImageTooLarge`` when ``height * width`` exceeds ``pixel_limit(limit)``."""
    top = pixel_limit(limit)
    if int(height) * int(width) > top:
        raise ImageTooLarge(path, int(height), int(width), top)


def _unreadable(path, reason) -> UnreadableImage:
    return UnreadableImage(path, reason)


def _to_uint8(a: np.ndarray, path) -> np.ndarray:
    """Scale 16-bit, bool and float data to uint8; keep uint8 as is."""
    if a.dtype == np.uint8:
        return a
    if a.dtype == bool:
        return a.astype(np.uint8) * 255
    if np.issubdtype(a.dtype, np.floating):
        if not np.isfinite(a).all():
            raise _unreadable(path, "it holds NaN or infinite values")
        top = 1.0 if a.max(initial=0) <= 1.0 else 255.0
        return np.clip(np.rint(a / top * 255), 0, 255).astype(np.uint8)
    if np.issubdtype(a.dtype, np.integer):
        top = int(a.max(initial=0))
        if top <= 255:
            return a.astype(np.uint8)
        return (a.astype(np.float64) / np.iinfo(a.dtype).max * 255).round().astype(np.uint8)
    raise _unreadable(path, f"unsupported pixel type {a.dtype}")


def _pil_array(im: Image.Image) -> np.ndarray:
    """Decode a Pillow image to (H, W) or (H, W, 3), dropping alpha and resolving palettes."""
    if im.mode == "1":
        return np.asarray(im.convert("L"))
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        return np.asarray(im)
    if im.mode in ("L", "RGB"):
        return np.asarray(im)
    if im.mode == "LA":
        return np.asarray(im.convert("L"))
    return np.asarray(im.convert("RGB"))


def _read_pil(path: Path, draft: tuple[int, int] | None = None, limit: int | None = None) -> np.ndarray:
    with Image.open(path) as im:
        check_pixels(path, im.size[1], im.size[0], limit)
        im.seek(0)  # the first frame of a multi-frame GIF/TIFF
        if draft is not None and im.format == "JPEG":
            im.draft("RGB" if im.mode == "RGB" else im.mode, (int(draft[1]), int(draft[0])))
        im.load()
        return _pil_array(im)


def _read_tiff(path: Path, limit: int | None = None) -> np.ndarray:
    try:
        return _read_pil(path, limit=limit)
    except ImageTooLarge:
        raise
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as pil_error:
        import tifffile

        try:
            with tifffile.TiffFile(path) as tif:
                page = tif.pages[0]
                check_pixels(path, page.imagelength, page.imagewidth, limit)
                return page.asarray()
        except ImageTooLarge:
            raise
        except Exception as tiff_error:  # tifffile raises many kinds for bad data
            raise _unreadable(path, f"Pillow: {pil_error}; tifffile: {tiff_error}") from tiff_error


def read_array(
    path: str | os.PathLike, draft: tuple[int, int] | None = None, max_pixels: int | None = None
) -> np.ndarray:
    """Decode ``path`` as stored: (H, W) or (H, W, C), uint8 after scaling. UserError if unreadable.

    Every pixel is decoded (a truncated JPEG fails here, where Pillow's ``verify`` passes it).
    ``draft`` (H, W): a JPEG may be decoded at a reduced scale (1/2, 1/4, 1/8) no smaller than it,
    which makes reading a 6688x4439 ISIC image for a 1024 px output several times faster.
    ``max_pixels``: the size limit (``pixel_limit``); ``ImageTooLarge`` above it, before decoding.
    """
    path = Path(path)
    limit = pixel_limit(max_pixels)  # a bad limit is the user's setting, not this file's fault
    if not path.is_file():
        raise UnreadableImage(path, "the file does not exist")
    try:
        if path.suffix.lower() in TIFF_SUFFIXES:
            a = _read_tiff(path, limit)
        else:
            a = _read_pil(path, draft, limit)
    except UnreadableImage:
        raise
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError,
            Image.DecompressionBombError) as e:
        raise _unreadable(path, str(e) or type(e).__name__) from e
    a = np.asarray(a)
    if a.ndim == 3 and a.shape[0] in (3, 4) and a.shape[-1] not in (3, 4):  # planar TIFF (C, H, W)
        a = np.moveaxis(a, 0, -1)
    if a.ndim not in (2, 3) or min(a.shape[:2]) < 1:
        raise _unreadable(path, f"unexpected array shape {a.shape}")
    return np.ascontiguousarray(_to_uint8(a, path))


def read_image(
    path: str | os.PathLike, draft: tuple[int, int] | None = None, max_pixels: int | None = None
) -> np.ndarray:
    """An image as uint8 (H, W) grey or (H, W, 3) RGB; alpha dropped, 2 channels -> the first."""
    a = read_array(path, draft, max_pixels)
    if a.ndim == 3:
        if a.shape[2] >= 3:
            a = a[..., :3]
            if (a[..., 0] == a[..., 1]).all() and (a[..., 0] == a[..., 2]).all():
                a = a[..., 0]
        else:
            a = a[..., 0]
    return np.ascontiguousarray(a)


def read_mask(path: str | os.PathLike, max_pixels: int | None = None) -> np.ndarray:
    """A mask as uint8 (H, W) before thresholding.

    Multi-channel masks: equal channels -> one of them; different colour channels -> their maximum
    (a red-on-black label counts as foreground). Alpha is ignored.
    """
    a = read_array(path, max_pixels=max_pixels)
    if a.ndim == 3:
        colour = a[..., : min(3, a.shape[2])]
        a = colour.max(axis=2)
    return np.ascontiguousarray(a)


def binarize(mask: np.ndarray) -> np.ndarray:
    """bool (H, W): foreground where mask > 127; a label mask holding only 0 and 1 counts 1 as foreground.

    0/1 label masks are common in user data and would otherwise come out empty.
    """
    if mask.max(initial=0) == 1:
        return mask == 1
    return mask > 127


def nonbinary_fraction(mask: np.ndarray) -> float:
    """Fraction of pixels in the ambiguous band (32..223) farther than EDGE_PX from the binary edge.

    0.0 for clean 0/255 masks and for anti-aliased or JPEG-noisy ones; a grey-level photo, a
    probability map or a smooth gradient gives a large value. Cheap when the mask is clean.
    """
    lo, hi = AMBIGUOUS_BAND
    ambiguous = (mask >= lo) & (mask <= hi)
    if ambiguous.mean() <= NONBINARY_MAX_FRACTION:
        return float(ambiguous.mean()) if ambiguous.any() else 0.0
    from scipy import ndimage

    fg = mask > 127
    edge = fg ^ ndimage.binary_erosion(fg, border_value=1)
    near_edge = ndimage.binary_dilation(edge, iterations=EDGE_PX) if edge.any() else edge
    return float((ambiguous & ~near_edge).mean())


def mask_problem(mask: np.ndarray) -> str | None:
    """Why ``mask`` is not a binary mask (one phrase), or None when it is one.

    Rejected: label maps with small values other than 0/1 (e.g. 0/1/2, which > 127 would empty),
    and masks with more than 1% ambiguous pixels away from edges (see ``nonbinary_fraction``).
    """
    top = int(mask.max(initial=0))
    if 2 <= top < AMBIGUOUS_BAND[0]:
        values = np.unique(mask)
        shown = ", ".join(str(v) for v in values[:6]) + (", ..." if len(values) > 6 else "")
        return f"non-binary mask: label values {{{shown}}}, expected 0/255 or 0/1"
    frac = nonbinary_fraction(mask)
    if frac > NONBINARY_MAX_FRACTION:
        return f"non-binary mask: {frac:.1%} of pixels are grey levels between 32 and 223 away from edges"
    return None


def write_png(path: str | os.PathLike, array: np.ndarray, compress_level: int = 1) -> None:
    """Write uint8 (H, W) or (H, W, 3) as PNG.

    compress_level 1: a DRIVE image encodes in ~40 ms against ~55 ms at 3 and ~190 ms at 6, for a
    file only 4-15% larger; prepare is write-bound and training reads a decoded cache anyway.

    Not atomic by itself: the prepare writer fills a temp folder that is renamed when complete.
    """
    a = np.asarray(array)
    if a.dtype == bool:
        a = a.astype(np.uint8) * 255
    if a.dtype != np.uint8:
        raise ValueError(f"write_png expects uint8 or bool, got {a.dtype}")
    Image.fromarray(a).save(path, format="PNG", compress_level=compress_level)


def encode_png(array: np.ndarray, compress_level: int = 3) -> bytes:
    """uint8 (H, W) or (H, W, 3) as PNG bytes, for ``paths.atomic_write_bytes`` and staged writes."""
    import io

    buf = io.BytesIO()
    Image.fromarray(np.asarray(array)).save(buf, format="PNG", compress_level=compress_level)
    return buf.getvalue()


def header_size(path: str | os.PathLike) -> tuple[int, int] | None:
    """(H, W) from the file header via Pillow, or None when Pillow cannot parse it (e.g. CVC TIFFs)."""
    try:
        with Image.open(path) as im:
            return im.size[1], im.size[0]
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return None
