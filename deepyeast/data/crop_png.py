"""A cell crop on disk: the one PNG codec of DeepYeast.

A crop is a 64 x 64 8-bit RGB PNG with the cytosolic marker in red, the GFP-tagged protein in
green and an empty blue channel, as in the published archive.  In memory it is uint8
``N_CHANNELS x IMAGE_SIZE x IMAGE_SIZE`` (C x H x W) with channel 0 = marker
(:data:`deepyeast.constants.MARKER_CHANNEL`) and channel 1 = protein.  :func:`decode_crop`
(and :func:`read_crop`, :func:`iter_crops`) is the only way from PNG to array;
:func:`encode_crop` the only way back.  Both use OpenCV.
"""

import os

import numpy as np

from deepyeast.constants import IMAGE_SIZE, N_CHANNELS
from deepyeast.utils.io import InputError

__all__ = ["decode_crop", "read_crop", "read_crop_bytes", "encode_crop", "write_crop", "iter_crops", "quiet_cv2"]

_PNG_PARAMS = None


def quiet_cv2():
    """OpenCV with its own logging silenced (a corrupt file becomes our InputError, not a log line)."""
    import cv2
    try:
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    except AttributeError:  # pragma: no cover - old OpenCV
        pass
    return cv2


def decode_crop(data, name="<bytes>", size=IMAGE_SIZE):
    """Decode an archive crop (PNG bytes) into uint8 ``N_CHANNELS x size x size``.

    Channel 0 is the image's red (marker), channel 1 its green (protein).
    Raises ``InputError`` naming ``name`` for a corrupt or truncated file, a
    single-channel or 16-bit image, or a size other than ``size x size``.
    """
    cv2 = quiet_cv2()
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED) if len(data) else None
    if img is None:
        raise InputError(f"{name}: corrupt or truncated image (cannot decode)")
    if img.dtype != np.uint8:
        raise InputError(f"{name}: {img.dtype.itemsize * 8}-bit image; crops must be 8-bit")
    if img.ndim != 3 or img.shape[2] < 3:
        raise InputError(f"{name}: single-channel (grey) image; crops must be RGB with R=marker, G=protein")
    if img.shape[:2] != (size, size):
        raise InputError(f"{name}: crop is {img.shape[1]}x{img.shape[0]} pixels, expected {size}x{size}")
    # OpenCV gives BGR(A): red is index 2, green index 1.
    out = np.empty((N_CHANNELS, size, size), np.uint8)
    out[0] = img[:, :, 2]
    out[1] = img[:, :, 1]
    return out


def read_crop_bytes(path):
    """The bytes of one crop file, undecoded (for :func:`decode_crop` elsewhere, e.g. in a Dask
    worker that cannot see the file); a missing or unreadable file is an InputError naming it."""
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise InputError(f"{path}: listed file is missing") from None
    except OSError as e:
        raise InputError(f"{path}: cannot read ({e.strerror})") from None


def read_crop(path, size=IMAGE_SIZE):
    """Read one crop file -> uint8 ``2 x 64 x 64`` (see :func:`decode_crop`)."""
    return decode_crop(read_crop_bytes(path), path, size)


def encode_crop(crop):
    """uint8 ``2 x H x W`` crop -> PNG bytes (8-bit RGB: R = marker, G = protein, B = 0).

    OpenCV's PNG encoder with zlib level 1 and the run-length strategy: fast on noisy crops,
    read by any decoder.
    """
    global _PNG_PARAMS
    crop = np.asarray(crop)
    if crop.dtype != np.uint8 or crop.ndim != 3 or crop.shape[0] != N_CHANNELS:
        raise ValueError(f"crop must be uint8 {N_CHANNELS}xHxW, got {crop.dtype} {crop.shape}")
    cv2 = quiet_cv2()
    if _PNG_PARAMS is None:
        _PNG_PARAMS = [cv2.IMWRITE_PNG_COMPRESSION, 1, cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_RLE]
    _, h, w = crop.shape
    bgr = np.zeros((h, w, 3), np.uint8)  # OpenCV orders channels B, G, R
    bgr[:, :, 2] = crop[0]
    bgr[:, :, 1] = crop[1]
    ok, buf = cv2.imencode(".png", bgr, _PNG_PARAMS)
    if not ok:  # pragma: no cover - OpenCV always encodes a uint8 image
        raise RuntimeError("OpenCV could not encode a crop as PNG")
    return buf.tobytes()


def write_crop(root, relpath, crop):
    """Write one crop as an RGB PNG at ``root/relpath`` (its folder is created)."""
    path = os.path.join(root, relpath)
    d = os.path.dirname(path)
    if not os.path.isdir(d):
        os.makedirs(d, exist_ok=True)
    with open(path, "wb") as f:
        f.write(encode_crop(crop))


def iter_crops(root, entries, skip_bad=False, rejects=None):
    """Yield ``(relpath, image uint8 2x64x64, label)`` for list entries under ``root``.

    With ``skip_bad`` unreadable crops are left out and ``(relpath, reason)``
    appended to ``rejects`` (a list); otherwise the first bad crop raises.
    """
    for rel, label in entries:
        try:
            img = read_crop(os.path.join(root, rel))
        except InputError as e:
            if not skip_bad:
                raise
            if rejects is not None:
                rejects.append((rel, str(e)))
            continue
        yield rel, img, label
