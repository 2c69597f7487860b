"""Reading SPM/AFM movies and images as float32 arrays in physical units (for ``--denoise``).

``read_movie`` reads one movie into a ``Movie``: frames ``(T, H, W, C)`` float32 with C = 1 (grey / height) or
3 (colour), from

- an HS-AFM ``.asd`` file (heights in nm; our own reader, versions 0, 1 and 2 of the format);
- a ``.npy`` stack ``(T, H, W)`` or ``(T, H, W, C)`` of any real dtype;
- a folder of 8- or 16-bit PNG/TIFF frames (values as stored: 16-bit frames keep their 0..65535 values);
- a multi-page TIFF stack (one frame per full-resolution page, in page order, 8/16-bit or float; values in the
  ImageJ value calibration and unit when the file has them, or with the "z unit" that ``scan_writers`` records,
  else as stored with unit "a.u."); a stack is a movie file like an ``.npy``, so a folder of stacks is a folder of
  movies;
- a video file (decoded RGB 0..255).

``find_movies`` lists the movies under a path. Constant (blank) frames are kept and listed in ``Movie.blank``.
``channel_spread``, ``is_grey_content`` and ``to_grey`` tell grey content stored as RGB (a grey AFM movie exported to
a video) and turn it into one grey channel.

The ``.asd`` layout (little-endian throughout), as the public readers describe it:

- file header: ``int32`` version, then the fields of that version (see ``_parse_v0`` and ``_parse_v1``): sizes of
  the header, of each frame header, of the operator name and comment; the data kind of channels 1 and 2 (ASCII
  ``TP`` topography, ``ER`` error, ``PH`` phase; zero for no second channel); frame count; pixels x/y; scan size
  x/y (nm); frame time (ms); A/D range code and bits; sensor and phase sensitivity; z piezo extension (nm/V) and
  z piezo driver gain. Version 0 stores the channel kinds and the sizes in pixels and nm as ``int16``; versions 1
  and 2 as ``int32``.
- data: all frames of channel 1, then all frames of channel 2; each frame is a frame header (``frame header size``
  bytes: frame number, min/max, offsets, tilts, flags; not needed here) followed by ``y_pixels`` rows of
  ``x_pixels`` ``int16`` A/D levels. Version 0 data starts right after the comment, which follows the declared
  header size and a comment offset; versions 1 and 2 start at the declared header size.
- conversion: the A/D code gives the input range (unipolar 0..R or bipolar -R..+R, R = 1, 2.5 or 5 V) and the
  header ``2**bits`` levels. The A/D voltage is ``v = lo + span * level / 2**bits`` (lo = 0 or -R, span = R or 2R)
  and the value ``-k * v``: ``k`` = z piezo extension (nm/V) x z piezo gain for topography (nm), minus the sensor
  sensitivity for the error channel (nm), minus the phase sensitivity for phase (deg). For the usual bipolar
  ranges that is ``(R - 2 R level / 2**bits) * k`` (level 0 is the highest point), as the public readers compute;
  for unipolar ranges ``-R level / 2**bits * k`` (afmreader's sign). A channel with an unknown kind, or whose
  factor is 0, NaN, infinite or so large that the values overflow float32 (a corrupt header), stays in volts
  (``v``, unit "V") with a warning that names the header fields.

A file shorter than its header announces is refused, unless ``keep_truncated`` (``read_movie`` and ``read_asd``):
then the complete frames of the channel are kept, with a warning. A file longer than announced is refused as
corrupt. The readers do not judge frame contents: ``frame_check.check_frames`` finds corrupt frames (e.g. garbage
bytes in one ``.asd`` frame) and outlier pixels.
"""

import os
import re
import struct
import warnings
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import numpy as np

from errors import UserError, describe_os_error
from video_io import (
    VIDEO_EXTENSIONS,
    VideoError,
    is_image_file,
    is_tiff_stack,
    is_video_file,
    iter_video,
    list_frames,
    natural_key,
    read_image,
)

ASD_EXTENSION = ".asd"
NPY_EXTENSION = ".npy"
MOVIE_EXTENSIONS = (ASD_EXTENSION, NPY_EXTENSION) + VIDEO_EXTENSIONS

# .asd data kinds: code (ASCII, as stored) -> (channel name, unit of the converted values)
ASD_KINDS = {"TP": ("topography", "nm"), "ER": ("error", "nm"), "PH": ("phase", "deg")}
# .asd A/D range codes -> (R in volts, bipolar)
ASD_AD_RANGES = {0x00000001: (1.0, False), 0x00000002: (2.5, False), 0x00000004: (5.0, False),
                 0x00010000: (1.0, True), 0x00020000: (2.5, True), 0x00040000: (5.0, True)}
_HEADER_READ = 1 << 20  # bytes read for the file header; a larger header is treated as corrupt
_MAX_PIXELS = 1 << 14
_TEXT_CODECS = {932: "cp932", 1200: "utf-16-le", 20932: "euc_jp", 65001: "utf-8", 20127: "ascii"}
STACK_UNIT = "a.u."  # unit of a TIFF stack without an ImageJ value unit
_IMAGEJ_STRAIGHT_LINE = 0  # ImageJ calibration function "straight line": value = c0 + c1 * stored
GREY_MEAN_TOL = 0.005  # grey content: mean channel spread at most 0.5 % of the full scale ...
GREY_P99_TOL = 0.02  # ... and its 99th percentile at most 2 % (codec error; a tint of 10 levels in 255 is colour)


class ScanError(UserError):
    """A scan file or folder that cannot be read."""


@dataclass
class Movie:
    """A movie of scans: ``frames`` (T, H, W, C) float32 in ``unit``; ``blank`` lists the constant frames."""

    frames: np.ndarray
    unit: str
    name: str
    source: str
    channel: str
    blank: List[int] = field(default_factory=list)
    info: Dict[str, object] = field(default_factory=dict)


def blank_frames(frames: np.ndarray) -> List[int]:
    """Indices of the frames whose values are all equal."""
    flat = frames.reshape(frames.shape[0], -1)
    return [int(i) for i in np.flatnonzero(flat.max(axis=1) == flat.min(axis=1))]


# ----------------------------------------------------------------------------------------------------------------
# .asd


class _Cursor:
    """Sequential little-endian reads from the header bytes; running past the end is a ``ScanError``."""

    def __init__(self, data: bytes, path: str, whole_file: bool) -> None:
        self.data = data
        self.path = path
        self.whole_file = whole_file
        self.pos = 0

    def _need(self, size: int) -> None:
        if size < 0 or self.pos + size > len(self.data):
            if self.whole_file:
                raise ScanError(f"{self.path}: the file ends inside its .asd header ({len(self.data)} bytes); it is "
                                "truncated or not an .asd file")
            raise ScanError(f"{self.path}: the .asd header declares sizes beyond {_HEADER_READ} bytes; the file is "
                            "corrupt or not an .asd file")

    def take(self, fmt: str) -> tuple:
        size = struct.calcsize("<" + fmt)
        self._need(size)
        values = struct.unpack_from("<" + fmt, self.data, self.pos)
        self.pos += size
        return values

    def raw(self, size: int) -> bytes:
        self._need(size)
        out = self.data[self.pos : self.pos + size]
        self.pos += size
        return out


def _text(raw: bytes, encoding: Optional[int]) -> str:
    codec = _TEXT_CODECS.get(encoding) if encoding is not None else None
    if codec:
        text = raw.decode(codec, errors="replace")
    else:  # version 0 gives no encoding: keep the readable bytes
        text = raw.replace(b"\x00", b"").decode("latin-1")
    return text.replace("\x00", "").strip()


def _kind(raw: bytes) -> str:
    return raw.rstrip(b"\x00").decode("latin-1")


def _parse_v0(cur: _Cursor) -> dict:
    h: dict = {}
    kind1, kind2 = cur.take("2s2s")
    h["kinds"] = [_kind(kind1), _kind(kind2)]
    h["header_size"], h["frame_header_size"], name_size, comment_offset, comment_size = cur.take("5i")
    h["x_pixels"], h["y_pixels"], x_nm, y_nm = cur.take("4h")
    h["scan_size_nm"] = (float(x_nm), float(y_nm))
    h["frame_time_ms"], h["z_piezo_extension"], h["z_piezo_gain"] = cur.take("3f")
    h["ad_range_code"], h["ad_bits"] = cur.take("Ii")
    cur.take("?i")  # averaging flag and window
    cur.take("h")  # legacy field
    year, month, day, hour, minute, second, _ = cur.take("h6B")  # the last byte: x rounding degree
    h["recorded"] = f"{year:04d}-{month:02d}-{day:02d} {hour:02d}:{minute:02d}:{second:02d}"
    cur.take("2f3i")  # maximum scan ranges, booked region
    h["initial_frames"], h["frames"], _ = cur.take("3i")  # the last: machine id
    cur.take("h")  # file id
    for size in (name_size, comment_offset, comment_size):
        if size < 0:
            raise ScanError(f"{cur.path}: negative string size in the .asd header; the file is corrupt")
    h["operator"] = _text(cur.raw(name_size), None)
    h["sensor_sensitivity"], h["phase_sensitivity"] = cur.take("2f")
    cur.take("i")  # scan direction
    cur.raw(comment_offset)
    h["comment"] = _text(cur.raw(comment_size), None)
    h["data_offset"] = cur.pos
    return h


def _parse_v1(cur: _Cursor) -> dict:
    """Versions 1 and 2 share these fields; version 2 adds colour-map fields that the declared header size covers."""
    h: dict = {}
    h["header_size"], h["frame_header_size"], encoding, name_size, comment_size = cur.take("5i")
    kind1, kind2 = cur.take("4s4s")
    h["kinds"] = [_kind(kind1), _kind(kind2)]
    h["initial_frames"], h["frames"], _, _ = cur.take("4i")  # then scan direction, file id
    h["x_pixels"], h["y_pixels"], x_nm, y_nm = cur.take("4i")
    h["scan_size_nm"] = (float(x_nm), float(y_nm))
    cur.take("?i")  # averaging flag and window
    year, month, day, hour, minute, second = cur.take("6i")
    h["recorded"] = f"{year:04d}-{month:02d}-{day:02d} {hour:02d}:{minute:02d}:{second:02d}"
    cur.take("2i")  # x and y rounding degree
    h["frame_time_ms"], h["sensor_sensitivity"], h["phase_sensitivity"] = cur.take("3f")
    cur.take("i")  # offset
    cur.raw(12)  # booked region
    cur.take("i")  # machine id
    h["ad_range_code"], h["ad_bits"] = cur.take("Ii")
    _, _, _, _, h["z_piezo_extension"], h["z_piezo_gain"] = cur.take("6f")  # max ranges, x/y piezo extension
    if name_size < 0 or comment_size < 0:
        raise ScanError(f"{cur.path}: negative string size in the .asd header; the file is corrupt")
    h["operator"] = _text(cur.raw(name_size), encoding)
    h["comment"] = _text(cur.raw(comment_size), encoding)
    if h["header_size"] < cur.pos:
        raise ScanError(f"{cur.path}: the .asd header says it is {h['header_size']} bytes long but its fields take "
                        f"{cur.pos}; the file is corrupt")
    h["data_offset"] = h["header_size"]
    return h


def asd_header(path: str) -> dict:
    """The header facts of an ``.asd`` file, checked against the file size.

    Keys: version, channels (names), kinds (codes), frames, x_pixels, y_pixels, scan_size_nm (x, y),
    frame_time_ms, z_piezo_extension (nm/V), z_piezo_gain, sensor_sensitivity, phase_sensitivity, ad_range_code,
    ad_bits, operator, comment, recorded, data_offset, frame_header_size, frame_bytes, expected_bytes, file_bytes.
    """
    path = os.fspath(path)
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            data = f.read(_HEADER_READ)
    except FileNotFoundError:
        raise ScanError(f".asd file not found: {path}") from None
    except OSError as exc:
        raise ScanError(describe_os_error(exc, "cannot read")) from exc
    cur = _Cursor(data, path, whole_file=size <= _HEADER_READ)
    (version,) = cur.take("i")
    if version == 0:
        h = _parse_v0(cur)
    elif version in (1, 2):
        h = _parse_v1(cur)
    else:
        raise ScanError(f"{path}: unknown .asd file version {version} (0, 1 and 2 are known); the file is corrupt or "
                        "not an .asd file")
    h["version"] = version
    h["file_bytes"] = size
    _check_header(h, path)
    return h


def _check_header(h: dict, path: str) -> None:
    """Refuse implausible header values; add channels, frame_bytes and expected_bytes."""
    problems = []
    if not (1 <= h["x_pixels"] <= _MAX_PIXELS and 1 <= h["y_pixels"] <= _MAX_PIXELS):
        problems.append(f"frame size {h['x_pixels']}x{h['y_pixels']}")
    if h["frames"] < 1:
        problems.append(f"{h['frames']} frames")
    if not 0 <= h["frame_header_size"] <= 1 << 16:
        problems.append(f"frame header size {h['frame_header_size']}")
    if not 1 <= h["ad_bits"] <= 16:
        problems.append(f"{h['ad_bits']} A/D bits")
    if not h["kinds"][0]:
        problems.append("no first channel")
    if problems:
        raise ScanError(f"{path}: impossible .asd header values ({', '.join(problems)}); the file is corrupt or not "
                        "an .asd file")
    kinds = [k for k in h["kinds"] if k]
    h["kinds"] = kinds
    h["channels"] = [ASD_KINDS[k][0] if k in ASD_KINDS else f"ch{i + 1}" for i, k in enumerate(kinds)]
    h["frame_bytes"] = h["frame_header_size"] + 2 * h["x_pixels"] * h["y_pixels"]
    h["expected_bytes"] = h["data_offset"] + len(kinds) * h["frames"] * h["frame_bytes"]
    if h["file_bytes"] > h["expected_bytes"]:
        raise ScanError(f"{path} is {h['file_bytes']} bytes but its .asd header describes {h['expected_bytes']} "
                        f"({len(kinds)} channel(s) x {h['frames']} frames of {h['x_pixels']}x{h['y_pixels']}); the "
                        "file is corrupt")


def _channel_list(h: dict) -> str:
    return ", ".join(f"{i} = {name} ({kind})" for i, (name, kind) in enumerate(zip(h["channels"], h["kinds"])))


def _select_channel(h: dict, channel: Optional[str], path: str) -> int:
    if channel is None:
        return 0
    want = str(channel).strip().lower()
    for i, (name, kind) in enumerate(zip(h["channels"], h["kinds"])):
        if want in (str(i), name.lower(), kind.lower()):
            return i
    raise ScanError(f"{path} has no channel {channel!r}; available channels: {_channel_list(h)}")


def _scale(h: dict, index: int, path: str) -> Tuple[float, float, float, str]:
    """(lo, span, k, unit): a level becomes ``-k * (lo + span * level / 2**bits)``; k = -1 (volts) if unknown."""
    code = h["ad_range_code"]
    if code not in ASD_AD_RANGES:
        known = ", ".join(f"0x{c:x}" for c in ASD_AD_RANGES)
        raise ScanError(f"{path}: unknown A/D range code 0x{code:x} in the .asd header (known: {known}); cannot "
                        "convert its levels to physical units")
    volts, bipolar = ASD_AD_RANGES[code]
    lo, span = (-volts, 2 * volts) if bipolar else (0.0, volts)
    kind = h["kinds"][index]
    name = h["channels"][index]
    why = _factor_problem(h, kind, max(abs(lo), abs(lo + span)))
    if why is None:
        return lo, span, _factor(h, kind), ASD_KINDS[kind][1]
    warnings.warn(f"{path}: channel {name} ({kind!r}) stays in volts: {why}", stacklevel=3)
    return lo, span, -1.0, "V"


def _factor(h: dict, kind: str) -> float:
    """The header's conversion factor of a data kind (0 for an unknown kind)."""
    factors = {"TP": float(h["z_piezo_extension"]) * float(h["z_piezo_gain"]),
               "ER": -float(h["sensor_sensitivity"]), "PH": -float(h["phase_sensitivity"])}
    return factors.get(kind, 0.0)


def _factor_fields(h: dict, kind: str) -> str:
    """The header fields that make a kind's conversion factor, with their values."""
    if kind == "TP":
        return f"z piezo extension {float(h['z_piezo_extension']):g} nm/V x z piezo gain {float(h['z_piezo_gain']):g}"
    if kind == "ER":
        return f"sensor sensitivity {float(h['sensor_sensitivity']):g} nm/V"
    return f"phase sensitivity {float(h['phase_sensitivity']):g} deg/V"


def _factor_problem(h: dict, kind: str, volts: float) -> Optional[str]:
    """Why a kind's levels cannot be converted (None when they can): an unknown kind, or a conversion factor that
    is 0, not finite, or so large that the values overflow float32 (a corrupt header)."""
    if kind not in ASD_KINDS:
        return "its data kind is unknown"
    k = _factor(h, kind)
    fields = _factor_fields(h, kind)
    if k == 0.0:
        return f"the header gives no conversion factor (0: {fields})"
    if not np.isfinite(k):
        return f"the header's conversion factor is not a finite number ({fields}); the header is corrupt"
    if abs(k) * volts > float(np.finfo(np.float32).max):
        return (f"the header's conversion factor ({fields}) would give values beyond the float32 range; the header "
                "is corrupt")
    return None


def read_asd(path: str, channel: Optional[str] = None, keep_truncated: bool = False) -> Movie:
    """Read one channel of an HS-AFM ``.asd`` movie (default the first, topography) in physical units.

    ``channel``: an index ("0", "1") or a name ("topography", "error", "phase", or the codes "TP", "ER", "PH").
    A file shorter than its header says is refused, unless ``keep_truncated``: then the complete frames of the
    channel are kept with a warning (at least one is needed).
    """
    path = os.fspath(path)
    h = asd_header(path)
    index = _select_channel(h, channel, path)
    lo, span, k, unit = _scale(h, index, path)
    n, fb = h["frames"], h["frame_bytes"]
    start = h["data_offset"] + index * n * fb
    complete = min(n, max(0, h["file_bytes"] - start) // fb)
    name = h["channels"][index]
    truncated = h["file_bytes"] < h["expected_bytes"]
    if truncated:
        what = (f"{path} is truncated: {h['file_bytes']} of the {h['expected_bytes']} bytes its header announces "
                f"({complete} of {n} frames of channel {name} complete)")
        if not keep_truncated:
            keep = f", or pass --keep_truncated to keep the {complete} complete frames" if complete else ""
            raise ScanError(f"{what}; copy the file again{keep}")
        if complete == 0:
            raise ScanError(f"{what}; nothing to keep, copy the file again")
        warnings.warn(f"{what}; keeping the {complete} complete frames", stacklevel=2)
    fields = [("levels", "<i2", (h["y_pixels"], h["x_pixels"]))]
    if h["frame_header_size"]:
        fields.insert(0, ("header", f"V{h['frame_header_size']}"))
    record = np.dtype(fields)
    try:
        with open(path, "rb") as f:
            f.seek(start)
            data = f.read(complete * fb)
    except OSError as exc:
        raise ScanError(describe_os_error(exc, "cannot read")) from exc
    if len(data) != complete * fb:
        raise ScanError(f"{path} changed while it was read; read it again")
    levels = np.frombuffer(data, dtype=record, count=complete)["levels"]
    heights = (-k) * (lo + span * levels.astype(np.float64) / float(2 ** h["ad_bits"]))
    frames = heights.astype(np.float32)[..., None]
    info = {key: h[key] for key in ("version", "channels", "kinds", "scan_size_nm", "frame_time_ms",
                                    "z_piezo_extension", "z_piezo_gain", "ad_range_code", "ad_bits", "recorded")}
    info.update(format="asd", channel_index=index, frames_in_header=n, truncated=truncated,
                pixel_size_nm=(h["scan_size_nm"][0] / h["x_pixels"], h["scan_size_nm"][1] / h["y_pixels"]))
    return Movie(frames=frames, unit=unit, name=_stem(path), source=path, channel=name, blank=blank_frames(frames),
                 info=info)


# ----------------------------------------------------------------------------------------------------------------
# .npy, frame folders, videos


def _stem(path: str) -> str:
    return os.path.splitext(os.path.basename(os.path.normpath(path)))[0]


def _read_npy(path: str) -> Movie:
    try:
        with open(path, "rb") as f:
            magic = f.read(6)
        if magic != b"\x93NUMPY":
            raise ScanError(f"{path} is not a .npy file (no NumPy header); save the stack with numpy.save")
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except FileNotFoundError:
        raise ScanError(f".npy file not found: {path}") from None
    except OSError as exc:
        raise ScanError(describe_os_error(exc, "cannot read")) from exc
    except (ValueError, EOFError) as exc:
        text = str(exc)
        if "object" in text.lower() or "pickle" in text.lower():
            reason = "it holds Python objects"
        elif isinstance(exc, EOFError) or "greater than file size" in text:
            reason = "the file is truncated"
        else:
            reason = text
        raise ScanError(f"cannot read {path} as a NumPy array ({reason}); save a plain numeric array with "
                        "numpy.save") from None
    if arr.dtype.kind not in "biuf":
        what = {"c": "complex values (save the real part or the magnitude)", "O": "Python objects"}.get(
            arr.dtype.kind, f"values of type {arr.dtype}")
        raise ScanError(f"{path} holds {what}; save a real-valued (T, H, W) or (T, H, W, C) array")
    if arr.ndim == 3:
        arr = arr[..., None]
    if arr.ndim != 4 or arr.shape[3] not in (1, 3):
        raise ScanError(f"{path} has shape {arr.shape}; expected (T, H, W) or (T, H, W, C) with C = 1 or 3")
    if 0 in arr.shape:
        raise ScanError(f"{path} is empty (shape {arr.shape})")
    frames = np.empty(arr.shape, dtype=np.float32)
    for t in range(arr.shape[0]):
        src = np.asarray(arr[t])
        if src.dtype.kind == "f" and not np.isfinite(src).all():
            raise ScanError(f"{path}: frame {t} (the first bad one) holds NaN or infinite values; fix or drop it")
        with np.errstate(over="ignore"):
            frames[t] = src
        if not np.isfinite(frames[t]).all():
            raise ScanError(f"{path}: frame {t} (the first bad one) holds values beyond the float32 range; rescale "
                            "the stack")
    return Movie(frames=frames, unit="", name=_stem(path), source=path, channel=_colour_name(frames),
                 blank=blank_frames(frames), info={"format": "npy", "dtype": str(arr.dtype)})


def _colour_name(frames: np.ndarray) -> str:
    return "grey" if frames.shape[3] == 1 else "rgb"


def _read_image(path: str) -> np.ndarray:
    """One PNG/TIFF/... frame as stored (8/16-bit or float), H x W x 1 or H x W x 3 RGB, alpha dropped."""
    try:
        img = read_image(path)
    except VideoError as exc:
        raise ScanError(str(exc)) from None
    if img.ndim == 2:
        img = img[:, :, None]
    channels = img.shape[2]
    if channels == 2:  # grey + alpha
        img = img[:, :, :1]
    elif channels == 3:
        img = img[:, :, ::-1]  # BGR -> RGB
    elif channels == 4:
        img = img[:, :, 2::-1]  # BGRA -> RGB, alpha dropped
    elif channels != 1:
        raise ScanError(f"{path} has {channels} channels; frames must be grey, RGB or RGBA")
    return img


def _read_images(paths: List[str]) -> Tuple[np.ndarray, str]:
    """Frames of equal size, channels and bit depth (image files or TIFF page paths): float32 (T, H, W, C) and the
    stored dtype."""
    first = _read_image(paths[0])
    frames = np.empty((len(paths),) + first.shape, dtype=np.float32)
    for t, p in enumerate(paths):
        img = first if t == 0 else _read_image(p)
        if img.shape != first.shape:
            raise ScanError(f"{p} is {img.shape[1]}x{img.shape[0]} with {img.shape[2]} channel(s) but "
                            f"{paths[0]} is {first.shape[1]}x{first.shape[0]} with {first.shape[2]}; all frames of "
                            "a movie must match")
        if img.dtype != first.dtype:
            raise ScanError(f"{p} is {img.dtype} but {paths[0]} is {first.dtype}; all frames of a movie must have "
                            "the same bit depth")
        frames[t] = img
        if not np.isfinite(frames[t]).all():
            raise ScanError(f"{p} holds NaN or infinite values; fix or remove it")
    return frames, str(first.dtype)


def _read_frame_folder(folder: str) -> Movie:
    names = sorted((n for n in os.listdir(folder) if is_image_file(n) and not n.startswith(".")), key=natural_key)
    if not names:
        movies = [n for n in os.listdir(folder) if _is_movie_file(os.path.join(folder, n)) and not n.startswith(".")]
        hint = "; it holds movies: read them one by one (find_movies lists them)" if movies else ""
        raise ScanError(f"no image frames (PNG/TIFF) in {folder}{hint}")
    stacks = [n for n in names if is_tiff_stack(os.path.join(folder, n))]
    if stacks == names and len(stacks) == 1:
        return _read_stack(os.path.join(folder, stacks[0]))
    if stacks == names:
        raise ScanError(f"{folder} holds {len(stacks)} multi-page TIFF stacks, each a movie: read them one by one "
                        "(find_movies lists them)")
    if stacks:
        raise ScanError(f"{folder} mixes single frames with a multi-page TIFF stack ({stacks[0]}), which is a movie "
                        "of its own; keep the stack apart from the frames")
    paths = [os.path.join(folder, n) for n in names]
    frames, dtype = _read_images(paths)
    return Movie(frames=frames, unit="", name=_stem(folder), source=folder, channel=_colour_name(frames),
                 blank=blank_frames(frames), info={"format": "frames", "dtype": dtype, "files": len(paths)})


def _tiff_metadata(path: str) -> Tuple[dict, str]:
    """(ImageJ metadata, OME-XML text) of a TIFF file; empty when it has none or tifffile cannot read them."""
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            return dict(tif.imagej_metadata or {}), str(tif.ome_metadata or "")
    except (OSError, ValueError, IndexError, KeyError):
        return {}, ""


def _number(value: object) -> float:
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return float("nan")


def _stack_calibration(path: str) -> Tuple[float, float, str, Dict[str, object]]:
    """(offset, factor, unit, info) of a TIFF stack's values: value = offset + factor x stored. The ImageJ
    straight-line value calibration and value unit when the file has them; else the "z unit: X" line that
    ``scan_writers`` puts into the ImageJ Info or the OME description; else the stored values in ``STACK_UNIT``.
    ``info``: what was applied, and the frame interval (ImageJ finterval, OME TimeIncrement) as frame_time_ms."""
    imagej, ome = _tiff_metadata(path)
    info: Dict[str, object] = {"calibration": "none"}
    seconds = _number(imagej.get("finterval"))
    match = re.search(r'TimeIncrement="([^"]+)"', ome)
    seconds = _number(match.group(1)) if match and not np.isfinite(seconds) else seconds
    if np.isfinite(seconds) and seconds > 0:
        info["frame_time_ms"] = 1000.0 * seconds
    unit = str(imagej.get("vunit") or "").strip()
    unit = "" if unit.lower() in ("gray value", "grey value") else unit
    if not unit:
        match = re.search(r"z unit: ([^\n<&]+)", str(imagej.get("Info", "")) + "\n" + ome)
        unit = match.group(1).strip() if match else ""
    unit = unit or STACK_UNIT
    function = imagej.get("cf")
    if function is None:
        return 0.0, 1.0, unit, info
    offset, factor = _number(imagej.get("c0", 0.0)), _number(imagej.get("c1", 1.0))
    if function == _IMAGEJ_STRAIGHT_LINE and np.isfinite(offset) and np.isfinite(factor) and factor != 0:
        info["calibration"] = f"ImageJ straight line {offset:g} + {factor:g} x stored"
        return offset, factor, unit, info
    info["calibration"] = f"ImageJ calibration function {function} not applied (stored values)"
    return 0.0, 1.0, STACK_UNIT, info


def _read_stack(path: str) -> Movie:
    """A multi-page TIFF stack: its full-resolution pages in page order, in its value calibration if any."""
    pages = list_frames(path)
    frames, dtype = _read_images(pages)
    offset, factor, unit, info = _stack_calibration(path)
    if (offset, factor) != (0.0, 1.0):
        frames = (offset + factor * frames.astype(np.float64)).astype(np.float32)
    info.update(format="tiff", dtype=dtype, pages=len(pages))
    return Movie(frames=frames, unit=unit, name=_stem(path), source=path, channel=_colour_name(frames),
                 blank=blank_frames(frames), info=info)


def _read_video(path: str) -> Movie:
    frames = np.stack([f.astype(np.float32) for f in iter_video(path)])
    return Movie(frames=frames, unit="", name=_stem(path), source=path, channel="rgb", blank=blank_frames(frames),
                 info={"format": "video"})


def _full_scale(movie: Movie) -> float:
    """The range colour differences are judged against: 255 for videos and 8-bit frames, 65535 for 16-bit ones,
    else the movie's value range."""
    if movie.info.get("format") == "video":
        return 255.0
    dtype = str(movie.info.get("dtype", ""))
    if dtype in ("uint8", "uint16"):
        return float(np.iinfo(dtype).max)
    finite = movie.frames[np.isfinite(movie.frames)]
    return float(finite.max() - finite.min()) if finite.size else 0.0


def channel_spread(movie: Movie) -> Tuple[float, float]:
    """Mean and 99th percentile, over all pixels, of each pixel's largest minus smallest colour channel, as fractions
    of the full scale (``_full_scale``); (0, 0) for grey movies and movies without contrast."""
    scale = _full_scale(movie)
    if movie.frames.shape[3] == 1 or scale <= 0:
        return 0.0, 0.0
    spread = np.stack([f.max(axis=-1) - f.min(axis=-1) for f in movie.frames]).astype(np.float64) / scale
    return float(spread.mean()), float(np.percentile(spread, 99))


def is_grey_content(movie: Movie) -> bool:
    """Whether a colour movie is grey as stored: its channels agree within codec error (``GREY_MEAN_TOL``,
    ``GREY_P99_TOL``), as for a grey movie exported to a video, which always decodes as RGB."""
    mean, p99 = channel_spread(movie)
    return movie.frames.shape[3] == 3 and mean <= GREY_MEAN_TOL and p99 <= GREY_P99_TOL


def to_grey(movie: Movie) -> Movie:
    """The movie as one grey channel: the mean of its colour channels (for grey content, ``is_grey_content``)."""
    if movie.frames.shape[3] == 1:
        return movie
    frames = movie.frames.astype(np.float64).mean(axis=3, keepdims=True).astype(np.float32)
    info = dict(movie.info, converted_from=movie.channel)
    return Movie(frames=frames, unit=movie.unit, name=movie.name, source=movie.source, channel="grey",
                 blank=blank_frames(frames), info=info)


# ----------------------------------------------------------------------------------------------------------------
# Entry points


def _is_movie_file(path: str) -> bool:
    """An .asd, .npy, video or multi-page TIFF file (the last is opened to count its pages)."""
    ext = os.path.splitext(path)[1].lower()
    return ext in (ASD_EXTENSION, NPY_EXTENSION) or is_video_file(path) or is_tiff_stack(path)


def read_movie(path: str, channel: Optional[str] = None, keep_truncated: bool = False) -> Movie:
    """Read an ``.asd`` file, a ``.npy`` stack, a folder of PNG/TIFF frames or a video as a ``Movie``.

    ``channel`` selects an ``.asd`` channel (index or name); for other movies it may only name the movie's own
    channel ("grey" or "rgb"). ``keep_truncated``: an ``.asd`` file shorter than its header says keeps its complete
    frames of the channel, with a warning, instead of being refused (``read_asd``); other movies ignore it.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        movie = _read_frame_folder(path)
    elif not os.path.exists(path):
        raise ScanError(f"movie not found: {path}")
    else:
        ext = os.path.splitext(path)[1].lower()
        if ext == ASD_EXTENSION:
            return read_asd(path, channel, keep_truncated=keep_truncated)
        if ext == NPY_EXTENSION:
            movie = _read_npy(path)
        elif is_video_file(path):
            movie = _read_video(path)
        elif is_tiff_stack(path):
            movie = _read_stack(path)
        elif is_image_file(path):
            raise ScanError(_single_image(path))
        else:
            raise ScanError(f"{path}: unknown movie type {ext or '(no extension)'!r}; use .asd, .npy, a video "
                            f"({', '.join(VIDEO_EXTENSIONS)}), a multi-page TIFF stack or a folder of PNG/TIFF "
                            "frames")
    if channel is not None and str(channel).strip().lower().replace("gray", "grey") != movie.channel:
        raise ScanError(f"{path}: channel {channel!r} does not exist: only .asd files have selectable channels, "
                        f"this movie is {movie.channel}")
    return movie


def _single_image(path: str) -> str:
    return (f"{path} is a single image; put the frames of a movie into a folder and pass the folder (a multi-page "
            "TIFF stack is read as a movie)")


def find_movies(path: str) -> List[str]:
    """The movies at ``path``: a movie file or a frame folder (itself), or a folder of movie files (multi-page TIFF
    stacks included) and frame folders (natural order; hidden entries skipped)."""
    path = os.fspath(path)
    kinds = f"{', '.join(MOVIE_EXTENSIONS)} files, multi-page TIFF stacks or folders of PNG/TIFF frames"
    if not os.path.exists(path):
        raise ScanError(f"not found: {path}; give a movie file, a folder of frames or a folder of movies")
    if os.path.isfile(path):
        if _is_movie_file(path):
            return [path]
        if is_image_file(path):
            raise ScanError(_single_image(path))
        raise ScanError(f"{path} is not a movie; expected {kinds}")
    try:
        names = sorted((n for n in os.listdir(path) if not n.startswith(".")), key=natural_key)
    except OSError as exc:
        raise ScanError(describe_os_error(exc, "cannot list")) from exc
    movies = []
    for n in names:
        p = os.path.join(path, n)
        if os.path.isfile(p) and _is_movie_file(p):
            movies.append(p)
        elif os.path.isdir(p) and any(is_image_file(m) and not m.startswith(".") for m in os.listdir(p)):
            movies.append(p)
    frames = [n for n in names if is_image_file(n) and os.path.join(path, n) not in movies
              and os.path.isfile(os.path.join(path, n))]
    if frames and movies:
        raise ScanError(f"{path} mixes image frames with movies ({os.path.basename(movies[0])}); keep the frames of "
                        "a movie in a folder of their own")
    if frames:
        return [path]
    if not movies:
        raise ScanError(f"no movies in {path}: expected {kinds}")
    return movies
