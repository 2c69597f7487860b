"""Reading and writing frames (OpenCV) and videos (FFmpeg through PyAV), RGB uint8 HxWx3 everywhere.

Videos: any container/codec FFmpeg decodes, streamed frame by frame (bounded memory), exact rational frame rate,
rotation metadata applied, timestamps kept (variable frame rate survives a round trip). Written as browser-playable
H.264 ``yuv420p`` mp4 (``+faststart``) by default, or H.265 / lossless FFV1 (mkv); the source's audio streams are
copied (re-encoded to AAC only where the container cannot hold them) and subtitles copied where possible.

Every failure a user can cause (missing file, corrupt image, unreadable video, codec missing) raises ``VideoError``
naming the file. Writers are atomic: they write a temporary file next to the target and ``os.replace`` it.
"""

import math
import os
import re
import warnings
from fractions import Fraction
from typing import Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np

import atomic
from errors import UserError, describe_os_error

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


class VideoError(UserError):
    """A frame or video file that cannot be read or written."""


def is_video_file(path: str) -> bool:
    return os.path.splitext(path)[1].lower() in VIDEO_EXTENSIONS


def is_image_file(path: str) -> bool:
    return os.path.splitext(path)[1].lower() in IMAGE_EXTENSIONS


def _to_rgb(img: np.ndarray, path: str) -> np.ndarray:
    """OpenCV BGR / gray / BGRA (8 or 16 bit) -> RGB uint8 HxWx3."""
    if img.dtype == np.uint16:
        img = (img.astype(np.float64) / 257.0).round().astype(np.uint8)
    elif img.dtype != np.uint8:
        raise VideoError(f"{path}: unsupported pixel type {img.dtype}; convert the image to 8-bit RGB")
    if img.ndim == 2:
        return np.ascontiguousarray(np.repeat(img[:, :, None], 3, axis=2))
    if img.shape[2] == 4:
        return cv2.cvtColor(img, cv2.COLOR_BGRA2RGB)
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def read_image(path: str) -> np.ndarray:
    """An image file as OpenCV decodes it, unchanged (BGR/BGRA/grey, 8/16-bit); ``VideoError`` if it is missing,
    unreadable or cannot be decoded."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise VideoError(f"frame not found: {path}")
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as exc:
        raise VideoError(describe_os_error(exc, "cannot read frame")) from exc
    img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if img is None:
        raise VideoError(f"cannot decode image {path} (corrupt or not an image); replace or remove it")
    return img


def load_rgb(path: str) -> np.ndarray:
    """Read an image file as RGB uint8 HxWx3; ``VideoError`` if it is missing or cannot be decoded."""
    return _to_rgb(read_image(path), os.fspath(path))


def save_rgb(path: str, array: np.ndarray) -> None:
    """Write an RGB uint8 HxWx3 (or HxW gray) image atomically; the format follows the extension."""
    path = os.fspath(path)
    arr = np.asarray(array)
    if arr.dtype != np.uint8:
        raise VideoError(f"save_rgb({path}): expected uint8, got {arr.dtype}")
    if arr.ndim == 3 and arr.shape[2] == 3:
        arr = cv2.cvtColor(arr, cv2.COLOR_RGB2BGR)
    elif arr.ndim != 2:
        raise VideoError(f"save_rgb({path}): expected HxWx3 or HxW, got shape {arr.shape}")
    ext = os.path.splitext(path)[1].lower()
    if ext not in IMAGE_EXTENSIONS:
        raise VideoError(f"save_rgb({path}): unknown image extension {ext!r}; use one of {', '.join(IMAGE_EXTENSIONS)}")
    ok, buf = cv2.imencode(ext, arr, [cv2.IMWRITE_PNG_COMPRESSION, 3] if ext == ".png" else [])
    if not ok:
        raise VideoError(f"cannot encode image {path}")
    try:
        atomic.write_bytes(path, buf.tobytes())
    except OSError as exc:
        raise VideoError(f"cannot write {path}: {exc.strerror or exc}") from exc


def natural_key(name: str) -> list:
    """Sort key that orders 'f2.png' before 'f10.png'."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def list_frames(folder: str) -> List[str]:
    """Image files in ``folder`` (full paths), natural sort; ``VideoError`` if the folder is missing or has none."""
    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        raise VideoError(f"frame folder not found: {folder}")
    names = [n for n in os.listdir(folder) if is_image_file(n) and not n.startswith(".")]
    if not names:
        raise VideoError(f"no image files ({', '.join(IMAGE_EXTENSIONS)}) in {folder}")
    return [os.path.join(folder, n) for n in sorted(names, key=natural_key)]


def find_video_sources(data_dir: str) -> List[str]:
    """Videos and frame folders in ``data_dir`` (or ``data_dir`` itself when it is a video or a frame folder)."""
    data_dir = os.fspath(data_dir)
    if os.path.isfile(data_dir):
        return [data_dir] if is_video_file(data_dir) else []
    if not os.path.isdir(data_dir):
        return []
    names = sorted(os.listdir(data_dir), key=natural_key)
    if any(is_image_file(n) for n in names):
        return [data_dir]
    sources = []
    for n in names:
        p = os.path.join(data_dir, n)
        if n.startswith("."):
            continue
        if os.path.isfile(p) and is_video_file(p):
            sources.append(p)
        elif os.path.isdir(p) and any(is_image_file(m) for m in os.listdir(p)):
            sources.append(p)
    return sources


# ----------------------------------------------------------------------------------------------------- reading

CODECS = {  # --codec -> (FFmpeg encoder, pixel format, container extension)
    "h264": ("libx264", "yuv420p", ".mp4"),
    "h265": ("libx265", "yuv420p", ".mp4"),
    "ffv1": ("ffv1", "bgr0", ".mkv"),
}
PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow")
Rate = Union[Fraction, float, int]
# Streams FFmpeg's mp4 muxer takes as they are (it claims more codecs, but e.g. PCM fails at the trailer).
H265_MIN_SIZE = 64  # x265 (in PyAV's wheels) crashes with heap corruption on e.g. 48x32 frames
MP4_COPY = {"aac", "mp3", "ac3", "eac3", "alac", "opus", "flac", "mov_text"}


def _av():
    import av

    return av


def _open_input(path: str):
    """(container, video stream) of a readable video; ``VideoError`` with what to do otherwise."""
    av = _av()
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise VideoError(f"video not found: {path}")
    if os.path.getsize(path) == 0:
        raise VideoError(f"video {path} is empty (0 bytes); copy it again or pass another file")
    try:
        container = av.open(path, "r")
    except OSError as exc:
        if getattr(exc, "errno", None) in (13, 1):
            raise VideoError(describe_os_error(exc, "cannot read video")) from exc
        raise VideoError(f"cannot open video {path}: not a video FFmpeg can read, or corrupt ({exc.strerror or exc}); "
                         "check the file or convert it to mp4") from exc
    except (av.FFmpegError, ValueError) as exc:
        raise VideoError(f"cannot open video {path}: not a video FFmpeg can read, or corrupt ({exc}); check the file "
                         "or convert it to mp4") from exc
    if not container.streams.video:
        container.close()
        raise VideoError(f"{path} has no video stream (audio only, or not a video); pass a video file")
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    return container, stream


def _rate(stream) -> Fraction:
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    return Fraction(rate) if rate else Fraction(25)


def _rotated(img: np.ndarray, rotation: float) -> np.ndarray:
    """Apply a display-matrix rotation (degrees counter-clockwise, FFmpeg's convention) to a decoded frame."""
    k = int(round(rotation / 90.0)) % 4
    return np.ascontiguousarray(np.rot90(img, k)) if k else img


def _decoded(container, stream, path: str) -> Iterator[Tuple[np.ndarray, Optional[Fraction]]]:
    av = _av()
    try:
        for frame in container.decode(stream):
            time = Fraction(frame.pts) * stream.time_base if frame.pts is not None else None
            yield _rotated(frame.to_ndarray(format="rgb24"), frame.rotation or 0), time
    except av.FFmpegError as exc:  # damaged data mid-stream: keep what decoded, the caller counts frames
        warnings.warn(f"{path}: decoding stopped early ({exc})", stacklevel=2)


def iter_video_timed(path: str) -> Iterator[Tuple[np.ndarray, Optional[Fraction]]]:
    """Yield ``(RGB uint8 frame, time in seconds as a Fraction or None)`` one by one (memory-bounded), rotation
    applied; ``VideoError`` if no frame decodes."""
    container, stream = _open_input(path)
    count = 0
    try:
        for item in _decoded(container, stream, path):
            count += 1
            yield item
    finally:
        container.close()
    if count == 0:
        raise VideoError(f"no frame could be decoded from video {path} (corrupt or unsupported codec)")


def iter_video(path: str) -> Iterator[np.ndarray]:
    """Yield the frames of a video one by one as RGB uint8 (memory-bounded); ``VideoError`` if none decode."""
    for frame, _ in iter_video_timed(path):
        yield frame


def read_frames(path: str, start: int, count: int) -> List[np.ndarray]:
    """``count`` consecutive frames from frame index ``start``: seeks to the key frame before, then decodes only up to
    those frames (frame index = time x frame rate, exact for constant-rate video)."""
    container, stream = _open_input(path)
    frames: List[np.ndarray] = []
    try:
        rate = _rate(stream)
        origin = stream.start_time or 0
        if start > 0 and stream.time_base:
            target = origin + int(Fraction(start) / rate / stream.time_base)
            container.seek(target, stream=stream, backward=True, any_frame=False)
        decode_from_start = False
        for img, time in _decoded(container, stream, path):
            index = round((time - origin * stream.time_base) * rate) if time is not None else None
            if index is None or (not frames and index > start):
                decode_from_start = True  # no timestamps, or the seek overshot: count frames from the start
                break
            if index >= start:
                frames.append(img)
                if len(frames) == count:
                    break
        if decode_from_start:
            container.seek(0, stream=stream, backward=True)
            frames = []
            for k, (img, _) in enumerate(_decoded(container, stream, path)):
                if k >= start:
                    frames.append(img)
                    if len(frames) == count:
                        break
    finally:
        container.close()
    if len(frames) != count:
        raise VideoError(f"{path}: could not decode frames {start}..{start + count - 1} (got {len(frames)})")
    return frames


def video_info(path: str) -> dict:
    """Header facts: ``width``/``height`` (as displayed, rotation applied), ``fps`` (float) and ``rate`` (exact
    Fraction), ``frame_count`` (from the header, or duration x rate; 0 if unknown), ``rotation``, ``codec``,
    ``audio_streams``."""
    container, stream = _open_input(path)
    try:
        ctx = stream.codec_context
        rate = _rate(stream)
        count = stream.frames or 0
        if not count:
            duration = (stream.duration * stream.time_base if stream.duration and stream.time_base else
                        Fraction(container.duration, 1_000_000) if container.duration else None)
            count = int(round(duration * rate)) if duration else 0
        rotation = 0
        try:
            for frame in container.decode(stream):
                rotation = frame.rotation or 0
                break
        except _av().FFmpegError:
            pass
        width, height = ctx.width, ctx.height
        if int(round(rotation / 90.0)) % 2:
            width, height = height, width
        info = {"width": width, "height": height, "fps": float(rate), "rate": rate, "frame_count": int(count),
                "rotation": rotation, "codec": ctx.name, "audio_streams": len(container.streams.audio)}
    finally:
        container.close()
    if info["width"] <= 0 or info["height"] <= 0:
        raise VideoError(f"video {path} reports no frame size (corrupt or unsupported codec)")
    return info


def read_video(path: str) -> Tuple[List[np.ndarray], float]:
    """All frames of a video (RGB uint8) and its frame rate."""
    return list(iter_video(path)), video_info(path)["fps"]


# ----------------------------------------------------------------------------------------------------- writing


def as_rate(fps: Rate) -> Fraction:
    """A frame rate as an exact Fraction; floats near an NTSC rate (23.976, 29.97, 59.94) become n*1000/1001."""
    if isinstance(fps, Fraction):
        return fps
    if isinstance(fps, int):
        return Fraction(fps)
    ntsc = Fraction(round(fps * 1.001) * 1000, 1001)
    if round(fps) != fps and abs(float(ntsc) - fps) < 1e-3:
        return ntsc
    return Fraction(fps).limit_denominator(1000)


def check_codec(codec: str) -> None:
    """``VideoError`` unless ``codec`` is one of ``CODECS`` and its encoder is in the installed FFmpeg."""
    if codec not in CODECS:
        raise VideoError(f"unknown codec {codec!r}; use one of {', '.join(CODECS)}")
    av = _av()
    try:
        av.codec.Codec(CODECS[codec][0], "w")
    except (av.FFmpegError, ValueError) as exc:
        raise VideoError(f"the installed FFmpeg (PyAV {av.__version__}) has no {CODECS[codec][0]} encoder for "
                         f"--codec {codec}; use --codec h264 or reinstall PyAV from its wheels") from exc


def video_extension(codec: str) -> str:
    """The container extension for ``codec`` (.mp4 or .mkv)."""
    return CODECS[codec][2]


class _SourceStreams:
    """Audio/subtitle packets of a source video, copied into an output container, optionally within a time range."""

    def __init__(self, source: str, output, time_range: Optional[Tuple[Fraction, Fraction]], log):
        av = _av()
        self.input = av.open(source, "r")
        self.output = output
        self.range = time_range
        self.map = {}  # input stream index -> (output stream, transcode?)
        supported = set(getattr(output, "supported_codecs", None) or ())
        if output.format.name.startswith("mp4") or output.format.name.startswith("mov"):
            supported &= MP4_COPY
        for stream in self.input.streams:
            if stream.type == "video":
                continue
            name = stream.codec_context.name
            if stream.type == "audio":
                if name in supported:
                    self.map[stream.index] = (output.add_stream_from_template(stream), False)
                else:
                    out = output.add_stream("aac", rate=stream.codec_context.sample_rate or 48000)
                    out.layout = "mono" if stream.codec_context.channels == 1 else "stereo"
                    self.map[stream.index] = (out, True)
                    log(f"audio stream {stream.index} ({name}) cannot be copied into {output.format.name}: "
                        "re-encoded as AAC")
            elif stream.type == "subtitle" and name in supported:
                self.map[stream.index] = (output.add_stream_from_template(stream), False)
            else:
                log(f"{stream.type} stream {stream.index} ({name}) of {source} cannot be kept in this container: "
                    "dropped")
        streams = [s for s in self.input.streams if s.index in self.map]
        self.packets = self.input.demux(*streams) if streams else iter(())
        self.pending = None

    def _time(self, packet) -> Optional[Fraction]:
        ts = packet.pts if packet.pts is not None else packet.dts
        return Fraction(ts) * packet.time_base if ts is not None else None

    def mux_until(self, until: Optional[Fraction]) -> None:
        """Write every source packet whose time is before ``until`` (None: all that remain)."""
        while True:
            packet = self.pending if self.pending is not None else next(self.packets, None)
            self.pending = None
            if packet is None:
                return
            if packet.size == 0 and packet.pts is None:
                continue
            time = self._time(packet)
            if until is not None and time is not None and time - self._start() >= until:
                self.pending = packet
                return
            self._write(packet, time)

    def _start(self) -> Fraction:
        return self.range[0] if self.range else Fraction(0)

    def _write(self, packet, time: Optional[Fraction]) -> None:
        if self.range is not None and time is not None and not (self.range[0] <= time < self.range[1]):
            return
        out, transcode = self.map[packet.stream.index]
        shift = int(self._start() / packet.time_base) if self.range else 0
        if transcode:
            for frame in packet.decode():
                if frame.pts is not None:
                    frame.pts -= shift
                for encoded in out.encode(frame):
                    self.output.mux(encoded)
            return
        if packet.pts is not None:
            packet.pts -= shift
        if packet.dts is not None:
            packet.dts -= shift
        packet.stream = out
        self.output.mux(packet)

    def finish(self) -> None:
        self.mux_until(None)
        for out, transcode in self.map.values():
            if transcode:
                for encoded in out.encode(None):
                    self.output.mux(encoded)
        self.input.close()


def _even(frame: np.ndarray) -> np.ndarray:
    """Pad an odd width/height by repeating the last column/row (4:2:0 needs even sizes)."""
    h, w = frame.shape[:2]
    if h % 2 == 0 and w % 2 == 0:
        return frame
    return np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")


def write_video(path: str, frames: Iterable[np.ndarray], fps: Rate, codec: str = "h264", crf: int = 18,
                preset: str = "medium", times: Optional[Sequence[Fraction]] = None, audio_from: Optional[str] = None,
                time_range: Optional[Tuple[Fraction, Fraction]] = None, log=None) -> int:
    """Encode RGB uint8 frames to ``path`` atomically; returns the number of frames written.

    ``fps`` is the exact rate (a Fraction keeps 24000/1001). ``times`` (seconds, one per frame) keeps a variable
    frame rate. ``audio_from``: a source video whose audio (and subtitle) streams are copied, limited to
    ``time_range`` (start, end in seconds of the source) when given. Odd sizes are padded by one edge pixel for
    4:2:0 codecs. Nothing is left under ``path`` if anything fails (full disk, Ctrl-C, bad frame)."""
    av = _av()
    path = os.fspath(path)
    check_codec(codec)
    if preset not in PRESETS:
        raise VideoError(f"unknown preset {preset!r}; use one of {', '.join(PRESETS)}")
    if not 0 <= int(crf) <= 51:
        raise VideoError(f"--crf must be between 0 and 51, got {crf}")
    rate = as_rate(fps)
    if rate <= 0:
        raise VideoError(f"write_video({path}): fps must be positive, got {fps}")
    encoder, pix_fmt, _ = CODECS[codec]
    log = log or (lambda message: warnings.warn(message, stacklevel=3))
    count = 0
    with atomic.atomic_path(path) as tmp:
        options = {"movflags": "+faststart"} if path.lower().endswith((".mp4", ".mov", ".m4v")) else {}
        try:
            output = av.open(tmp, "w", format=_format_for(path), options=options)
        except (av.FFmpegError, ValueError) as exc:
            raise VideoError(f"cannot write video {path}: {exc}") from exc
        try:
            stream = output.add_stream(encoder, rate=rate)
            stream.pix_fmt = pix_fmt
            if times is not None and _constant_rate(times, rate):
                times = None  # evenly spaced at the stated rate: write it as constant-rate video
            time_base = _time_base(times, rate)
            stream.codec_context.time_base = time_base
            stream.time_base = time_base
            if codec in ("h264", "h265"):
                stream.options = {"crf": str(int(crf)), "preset": preset}
                if codec == "h265":
                    stream.options["x265-params"] = "log-level=error"
                    if path.lower().endswith(".mp4"):
                        stream.codec_tag = "hvc1"  # plays in Apple's players
            sources = _SourceStreams(audio_from, output, time_range, log) if audio_from else None
            size = None
            origin = None
            for frame in frames:
                frame = np.asarray(frame)
                if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
                    raise VideoError(f"write_video({path}): frames must be uint8 HxWx3, got {frame.dtype} "
                                     f"{frame.shape}")
                if size is None:
                    size = frame.shape[:2]
                    if codec == "h265" and min(size) < H265_MIN_SIZE:
                        raise VideoError(f"write_video({path}): --codec h265 needs frames of at least "
                                         f"{H265_MIN_SIZE}x{H265_MIN_SIZE} px (x265 corrupts memory on smaller "
                                         f"ones), got {size[1]}x{size[0]}; use --codec h264 or ffv1")
                    padded = _even(frame).shape[:2] if pix_fmt == "yuv420p" else size
                    stream.height, stream.width = padded
                elif frame.shape[:2] != size:
                    raise VideoError(f"write_video({path}): frame {count} is {frame.shape[1]}x{frame.shape[0]}, "
                                     f"expected {size[1]}x{size[0]}")
                if pix_fmt == "yuv420p":
                    frame = _even(frame)
                video_frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
                if times is not None:
                    origin = times[0] if origin is None else origin
                    seconds = times[count] - origin
                else:
                    seconds = Fraction(count) / rate
                video_frame.pts = int(round(seconds / time_base))
                video_frame.time_base = time_base
                if sources is not None:
                    sources.mux_until(seconds)
                for packet in stream.encode(video_frame):
                    output.mux(packet)
                count += 1
            if count == 0:
                raise VideoError(f"write_video({path}): no frames to write")
            for packet in stream.encode(None):
                output.mux(packet)
            if sources is not None:
                sources.finish()
        except av.FFmpegError as exc:
            raise _write_error(path, exc) from exc
        finally:
            try:
                output.close()
            except (av.FFmpegError, OSError) as exc:  # the trailer could not be written (full disk, ...)
                raise _write_error(path, exc) from exc
    return count


def _constant_rate(times: Sequence[Fraction], rate: Fraction) -> bool:
    return all(b - a == 1 / rate for a, b in zip(times, times[1:]))


def _time_base(times: Optional[Sequence[Fraction]], rate: Fraction) -> Fraction:
    """1/rate for constant-rate video; else the coarsest tick that holds every timestamp exactly (1/90000 if none
    fine enough below a microsecond)."""
    if times is None:
        return 1 / rate
    denominator = 1
    for t in list(times) + [1 / rate]:
        denominator = math.lcm(denominator, Fraction(t - times[0]).denominator)
        if denominator > 1_000_000:
            return Fraction(1, 90000)
    return Fraction(1, denominator)


def _format_for(path: str) -> Optional[str]:
    ext = os.path.splitext(path)[1].lower()
    return {".mkv": "matroska", ".mp4": "mp4", ".mov": "mov", ".webm": "webm", ".avi": "avi"}.get(ext)


def _write_error(path: str, exc: Exception) -> VideoError:
    if isinstance(exc, OSError) and exc.errno is not None:
        return VideoError(describe_os_error(OSError(exc.errno, exc.strerror, path), "cannot write video") +
                          "; nothing was written under that name")
    return VideoError(f"cannot write video {path} ({exc}); nothing was written under that name")
