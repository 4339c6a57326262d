"""Micrograph files: a screen's two-channel images and label masks read into arrays.

TIFF (incl. OME-TIFF and ImageJ hyperstacks) is read with tifffile, PNG and other formats with
OpenCV; 16-bit images are scaled to uint8 with the declared ``bits``
(:func:`to_uint8`); a micrograph is a uint8 ``2 x H x W`` array (channel 0 the red marker,
channel 1 the green protein, :func:`to_two_channel`), from one multi-channel file or a marker and
a protein file (:func:`read_micrograph_pair`); a mask is an int label image of the same size
(0 = background, k > 0 = cell k).  Unreadable, oversized or mis-sized files raise
:class:`~deepyeast.utils.io.InputError` naming the file.  The tables that list the micrographs are
:mod:`deepyeast.data.screen_tables`; cutting crops from them is :mod:`deepyeast.data.crop_cells`.
"""

import contextlib
import dataclasses
import logging
import os

import numpy as np

from deepyeast.utils.io import InputError, read_input_bytes

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class MicrographFormat:
    """How a screen's micrograph files are read: ``channels`` = (marker index, protein index)
    along the channel axis of a multi-channel file; ``bits``: the bit depth of 16-bit data
    (e.g. 12; None: 8-bit data, 16-bit data refused), see :func:`to_uint8`.  The options
    ``--channels`` and ``--bits`` of the micrograph steps."""

    channels: tuple = (0, 1)
    bits: int = None

    def __post_init__(self):
        object.__setattr__(self, "channels", tuple(int(c) for c in self.channels))
        if len(self.channels) != 2:
            raise InputError(f"channels: give the marker's and the protein's index, got {list(self.channels)}")

    def describe(self):
        """The settings as they go into summaries: ``{"channels": [m, p], "bits": ...}``."""
        return {"channels": list(self.channels), "bits": self.bits}


# --------------------------------------------------------------------------- reading

TIFF_CHANNEL_AXES = "CS"
"""tifffile axis codes read as channels (C: channel, S: samples of an RGB(A) page)."""
TIFF_PLANE_AXES = "QI"
"""Unnamed axes of plain TIFF stacks (pages); read as channels when no C/S axis is present."""


def read_channels(path):
    """Decode a micrograph file as stored -> ``C x H x W`` array (its own dtype, ``C >= 1``).

    TIFF (incl. OME-TIFF and ImageJ hyperstacks) is read with tifffile by its
    axes: C (and RGB samples S) are channels, the pages of a plain stack (Q/I)
    are channels when no C axis is named, and singleton Z/T axes are dropped; a
    stack with several Z planes or time points is refused (give one plane,
    e.g. a maximum projection).  Other formats (PNG, JPEG, BMP) go through
    OpenCV, in RGB(A) order.  Raises ``InputError`` naming the file.
    """
    if not os.path.exists(path):
        raise InputError(f"{path}: file is missing")
    ext = os.path.splitext(path)[1].lower()
    if ext in (".tif", ".tiff"):
        return _read_tiff_channels(path)
    img = read_image_array(path)
    return img[None] if img.ndim == 2 else np.ascontiguousarray(np.moveaxis(img, -1, 0))


@contextlib.contextmanager
def quiet_logger(name):
    """Only errors from the logger ``name`` inside the block: tifffile logs warnings about a broken file
    before it raises, ome-zarr-py a line for a container of another NGFF version; our one-line error
    says what matters instead."""
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


MAX_PIXELS = 1 << 26
"""Most pixels a micrograph may declare, all its planes together (67,108,864: e.g. 4 planes of 4096 x 4096).
Checked before decoding: a small compressed file can declare gigabytes of pixels (a decompression bomb)."""


def check_declared_size(path, shape, what="image"):
    """InputError naming ``path`` when the ``shape`` its header declares holds more than :data:`MAX_PIXELS`
    values (checked before decoding)."""
    n = int(np.prod([int(d) for d in shape], dtype=np.float64)) if len(shape) else 0
    if n > MAX_PIXELS:
        raise InputError(f"{path}: the {what} declares {' x '.join(map(str, shape))} = {n:,} values, more than the "
                         f"{MAX_PIXELS:,} a micrograph may hold here; not decoded (split it into fields)")


def _read_tiff_channels(path):
    import tifffile
    try:
        with quiet_logger("tifffile"), tifffile.TiffFile(path) as tif:
            series = tif.series
            if not series:
                raise InputError(f"{path}: corrupt or truncated TIFF (no readable image in it)")
            first = series[0]
            if len(series) > 1 and series[1].shape == first.shape:
                raise InputError(f"{path}: TIFF holds {len(series)} image series (fields or positions); "
                                 f"give one field per file")
            check_declared_size(path, first.shape, "TIFF")
            arr, axes = first.asarray(), first.axes
    except InputError:
        raise
    except Exception as e:  # tifffile raises many types for a bad file
        raise InputError(f"{path}: corrupt or truncated TIFF ({type(e).__name__}: {e})") from None
    arr = np.asarray(arr)
    if len(axes) != arr.ndim or "Y" not in axes or "X" not in axes:
        raise InputError(f"{path}: cannot tell the image axes of this TIFF (axes {axes!r}, shape {arr.shape})")
    named = [a for a in axes if a in TIFF_CHANNEL_AXES]
    channel_axes = named if named else [a for a in axes if a in TIFF_PLANE_AXES]
    for a, n in zip(axes, arr.shape):
        if a not in "YX" and a not in channel_axes and n > 1:
            what = {"Z": "Z planes", "T": "time points"}.get(a, f"planes along axis {a}")
            raise InputError(f"{path}: TIFF has {n} {what} (axes {axes}, shape {arr.shape}); give one plane "
                             f"per channel (e.g. a maximum projection)")
    if len(channel_axes) > 1:
        raise InputError(f"{path}: TIFF has more than one channel axis (axes {axes}, shape {arr.shape})")
    keep = "".join(a for a in axes if a in "YX" or a in channel_axes)
    arr = arr.reshape([n for a, n in zip(axes, arr.shape) if a in keep])
    order = [keep.index(a) for a in channel_axes] + [keep.index("Y"), keep.index("X")]
    arr = np.transpose(arr, order)
    return np.ascontiguousarray(arr if channel_axes else arr[None])


def size_text(a):
    """An image array's size as ``"WxH"`` (its last two axes), for error lines."""
    return f"{a.shape[-1]}x{a.shape[-2]}"


_WARNED_BITS = set()
"""--bits values warned about in this process (:func:`to_uint8` says it once, not for every micrograph)."""


def to_uint8(img, name, bits=None):
    """Bring 8- or 16-bit pixel data to uint8.

    ``bits``: the significant bit depth of 16-bit data (e.g. 12 for a 12-bit
    camera): values are shifted down by ``bits - 8``.  16-bit data without
    ``bits``, or with values at or above ``2**bits`` (which would saturate),
    is refused with the observed maximum and the ``bits`` it needs.  ``bits``
    is ignored for 8-bit data.
    """
    img = np.asarray(img)
    if img.dtype == np.uint8:
        return np.ascontiguousarray(img)
    if img.dtype != np.uint16:
        raise InputError(f"{name}: unsupported pixel type {img.dtype}; need 8-bit (or 16-bit with --bits N)")
    peak = int(img.max(initial=0))
    need = max(8, peak.bit_length())
    if bits is None:
        raise InputError(f"{name}: 16-bit image (max value {peak}, so --bits {need} or more); pass --bits N, the "
                         f"camera's bit depth (e.g. --bits 12 for a 12-bit camera), to rescale to 8 bits")
    bits = int(bits)
    if not 8 <= bits <= 16:
        raise InputError(f"{name}: --bits {bits} outside 8..16")
    if peak >= 2 ** bits:
        raise InputError(f"{name}: values up to {peak} do not fit --bits {bits} (max {2 ** bits - 1}) and would "
                         f"saturate; pass --bits {need}")
    if peak < 2 ** (bits - 4) and bits not in _WARNED_BITS:  # under 1/16 of the declared range
        _WARNED_BITS.add(bits)
        log.warning("%s: values reach only %d, far below --bits %d (max %d): the crops will be %dx darker than the "
                    "camera's range allows; is it a %d-bit camera (--bits %d)?", name, peak, bits, 2 ** bits - 1,
                    2 ** (bits - need), need, need)
    return (img >> (bits - 8)).astype(np.uint8)


MIN_SIDE = 8
"""Fewest pixels along each side of a micrograph (a yeast cell is about 20 px across at the screen's scale)."""


def to_two_channel(img, name, fmt=MicrographFormat()):
    """Pick the marker and protein channels of a decoded micrograph.

    ``img``: ``C x H x W`` array (as :func:`read_channels` returns it); ``fmt``:
    :class:`MicrographFormat` (the channels to pick, the bit depth).  Returns uint8 ``2 x H x W``.
    """
    channels, bits = fmt.channels, fmt.bits
    img = np.asarray(img)
    if img.ndim >= 2 and min(img.shape[-2:]) < MIN_SIDE:
        raise InputError(f"{name}: an image of {img.shape[-1]} x {img.shape[-2]} pixels (array shape "
                         f"{tuple(img.shape)}, channels first) is too small for a micrograph of cells")
    if img.ndim == 2 or (img.ndim == 3 and img.shape[0] == 1):
        raise InputError(f"{name}: single-channel image; need two channels (marker and protein) in one file, "
                         f"or two files in marker_image,protein_image columns")
    if img.ndim != 3:
        raise InputError(f"{name}: expected a 2-D multi-channel image, got array of shape {img.shape}")
    for c in channels:
        if not 0 <= c < img.shape[0]:
            raise InputError(f"{name}: channel {c} requested but the image has {img.shape[0]} channels")
    return to_uint8(img[list(channels)], name, bits)


def read_image_array(path):
    """Decode a TIFF or PNG file as stored (TIFF via tifffile, others via OpenCV, RGB order)."""
    if not os.path.exists(path):
        raise InputError(f"{path}: file is missing")
    ext = os.path.splitext(path)[1].lower()
    if ext in (".tif", ".tiff"):
        import tifffile
        try:
            with quiet_logger("tifffile"), tifffile.TiffFile(path) as tif:
                if not tif.series:
                    raise InputError(f"{path}: corrupt or truncated TIFF (no readable image in it)")
                check_declared_size(path, tif.series[0].shape, "TIFF")
                return tif.series[0].asarray()
        except InputError:
            raise
        except Exception as e:  # tifffile raises many types for a bad file
            raise InputError(f"{path}: corrupt or truncated TIFF ({type(e).__name__}: {e})") from None
    from deepyeast.data.crop_png import quiet_cv2
    cv2 = quiet_cv2()
    _check_header_size(path)
    data = read_input_bytes(path, "image")
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED) if data else None
    if img is None:
        raise InputError(f"{path}: corrupt or truncated image (cannot decode)")
    if img.ndim == 3 and img.shape[2] >= 3:
        img = img[:, :, [2, 1, 0] + list(range(3, img.shape[2]))]  # BGR(A) -> RGB(A)
    return img


def _check_header_size(path):
    """:func:`check_declared_size` of a PNG/JPEG/BMP from its header (PIL reads the size without decoding)."""
    import warnings

    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our limit decides
            with Image.open(path) as im:
                w, h = im.size
                bands = len(im.getbands())
    except Image.DecompressionBombError as err:  # PIL's own (higher) limit
        raise InputError(f"{path}: the image declares too many pixels ({err}); not decoded") from None
    except Exception:  # not an image PIL knows: OpenCV's decoder says what is wrong
        return
    check_declared_size(path, (h, w, bands), "image")


def read_single_channel(path, what="image"):
    """Read a one-channel image -> ``H x W`` (its own dtype); grey RGB (equal channels) counts as one."""
    img = read_channels(path)
    grey_rgb = img.shape[0] in (3, 4) and np.array_equal(img[0], img[1]) and np.array_equal(img[0], img[2])
    if img.shape[0] > 1 and not grey_rgb:
        raise InputError(f"{path}: {what} must be a single-channel image, got {img.shape[0]} channels")
    return img[0]


def read_micrograph(path, fmt=MicrographFormat()):
    """Read a multi-channel micrograph -> uint8 ``2 x H x W`` (marker, protein); see :func:`to_two_channel`."""
    return to_two_channel(read_channels(path), path, fmt)


def read_micrograph_pair(marker_path, protein_path, bits=None):
    """Read marker and protein from two single-channel files -> uint8 ``2 x H x W``.

    Both must have the same size; ``bits`` as in :func:`to_uint8` (applied to each file).
    """
    marker = to_uint8(read_single_channel(marker_path, "marker image"), marker_path, bits)
    protein = to_uint8(read_single_channel(protein_path, "protein image"), protein_path, bits)
    if marker.shape != protein.shape:
        raise InputError(f"{protein_path}: protein image is {size_text(protein)} but marker image {marker_path} "
                         f"is {size_text(marker)}")
    return np.stack([marker, protein])


def read_mask(path, shape, image_name="micrograph"):
    """Read a label mask (0 = background, k > 0 = cell k) -> int64 ``H x W``.

    Raises ``InputError`` when its size differs from ``shape`` (H, W).
    """
    m = read_single_channel(path, "mask (a label image)")
    if m.dtype.kind == "f" and np.all(np.isfinite(m)) and np.array_equal(m, np.rint(m)):
        m = m.astype(np.int64)  # whole-number labels stored as floats
    if m.dtype.kind not in "ui":
        raise InputError(f"{path}: mask must hold whole-number labels, got pixel type {m.dtype}")
    if m.shape != tuple(shape):
        raise InputError(f"{path}: mask is {m.shape[1]}x{m.shape[0]} but {image_name} is {shape[1]}x{shape[0]}")
    return m.astype(np.int64)


def read_row_micrograph(rec, fmt=MicrographFormat()):
    """The micrograph of an images-table row (:func:`deepyeast.data.screen_tables.read_images_table`)
    read with ``fmt`` (:class:`MicrographFormat`) -> uint8 ``2 x H x W``."""
    if rec.get("zarr"):
        from deepyeast.data.omezarr import read_image
        return to_two_channel(read_image(rec["path"], MAX_PIXELS), rec["path"], fmt)
    if rec["protein_path"] is not None:
        return read_micrograph_pair(rec["path"], rec["protein_path"], fmt.bits)
    return read_micrograph(rec["path"], fmt)
