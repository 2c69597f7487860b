"""Reading and writing frames (OpenCV; multi-page TIFF stacks with tifffile) and videos (FFmpeg through PyAV), RGB
uint8 HxWx3 everywhere.

Frames: image files, and multi-page TIFF stacks read page by page (``tiff_stack``): ``list_frames`` expands each
stack of a folder into its pages, in place in the folder's natural order, so a folder holding one stack is that
stack's frames and a stack split over several files (``run_1.tif``, ``run_2.tif``) reads as one movie.

Videos: the containers of ``CONTAINERS`` (the one table of container facts: to support another container, add its
row there), any codec FFmpeg decodes, streamed frame by frame (bounded memory), exact rational frame rate, rotation
metadata applied, timestamps kept (variable frame rate survives a round trip). A damaged packet is skipped and
decoding goes on; the frames lost are reported. Written as browser-playable H.264 ``yuv420p`` mp4 (``+faststart``)
by default, or H.265 / lossless FFV1 (mkv); the source's audio streams are copied (re-encoded to AAC only where the
container cannot hold them) and subtitles copied where possible.

Every failure a user can cause (missing file, corrupt image, unreadable video, codec missing) raises ``VideoError``
naming the file. Writers are atomic: they write a temporary file next to the target and ``os.replace`` it.
"""

import math
import os
import re
import warnings
from fractions import Fraction
from typing import Callable, Dict, FrozenSet, Iterable, Iterator, List, NamedTuple, Optional, Sequence, Tuple, Union

import cv2
import numpy as np

import atomic
import tiff_stack
from errors import UserError, describe_os_error


class Container(NamedTuple):
    """What this program knows about one video container, by file extension. Every container of ``CONTAINERS`` is
    read through FFmpeg (any codec it decodes)."""

    muxer: Optional[str]  # the FFmpeg muxer that writes it; None: read only
    faststart: bool = False  # ISO media: the index goes before the data (+faststart), so browsers play at once
    audio: Optional[FrozenSet[str]] = None  # audio codecs copied as they are (others: AAC); None: what FFmpeg claims
    subtitles: Optional[FrozenSet[str]] = None  # subtitle codecs copied (others dropped); None: what FFmpeg claims
    hevc_tag: Optional[str] = None  # codec tag of H.265 video


# What FFmpeg's mp4/mov muxers take as it is (they claim more codecs, but e.g. PCM fails at the trailer).
MP4_AUDIO = frozenset({"aac", "mp3", "ac3", "eac3", "alac", "opus", "flac"})
MP4_SUBTITLES = frozenset({"mov_text"})

CONTAINERS: Dict[str, Container] = {  # extension (lower case) -> Container
    ".mp4": Container("mp4", faststart=True, audio=MP4_AUDIO, subtitles=MP4_SUBTITLES, hevc_tag="hvc1"),  # Apple
    ".avi": Container("avi"),
    ".mov": Container("mov", faststart=True, audio=MP4_AUDIO, subtitles=MP4_SUBTITLES),
    ".mkv": Container("matroska"),
    ".webm": Container("webm"),
    ".m4v": Container("ipod", faststart=True),
    ".mpg": Container("mpeg"),
    ".mpeg": Container("mpeg"),
    ".wmv": Container("asf"),
    ".flv": Container("flv"),
    ".ts": Container(None),  # MPEG transport stream
    ".mts": Container(None),  # AVCHD camcorders
    ".m2ts": Container(None),  # AVCHD / Blu-ray
    ".3gp": Container(None),  # phones
    ".ogv": Container(None),  # Ogg (Theora, VP8)
}
VIDEO_EXTENSIONS = tuple(CONTAINERS)
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


class VideoError(UserError):
    """A frame or video file that cannot be read or written."""


def is_video_file(path: str) -> bool:
    return os.path.splitext(path)[1].lower() in CONTAINERS


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


def is_tiff_stack(path: str) -> bool:
    """Whether ``path`` is a multi-page TIFF file (a stack of frames, see ``list_frames``)."""
    return tiff_stack.is_stack(path)


def frame_file(path: str) -> str:
    """The file a frame path reads: the stack file of a page of a TIFF stack, else ``path`` itself."""
    page = tiff_stack.split_page_path(path)
    return page[0] if page is not None else os.fspath(path)


def _read_page(path: str) -> Optional[np.ndarray]:
    """The page of a TIFF stack that ``path`` names (``tiff_stack``), or None when it names none."""
    page = tiff_stack.split_page_path(path)
    if page is None:
        return None
    try:
        return tiff_stack.read_page(*page)
    except tiff_stack.StackError as exc:
        raise VideoError(str(exc)) from None


def read_image(path: str) -> np.ndarray:
    """An image file as OpenCV decodes it, unchanged (BGR/BGRA/grey, 8/16-bit), or one page of a TIFF stack (a page
    path of ``list_frames``) in the same layout; ``VideoError`` if it is missing, unreadable, cannot be decoded or
    is a whole multi-page TIFF (one image was asked for)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        page = _read_page(path)
        if page is not None:
            return page
        raise VideoError(f"frame not found: {path}")
    pages = len(tiff_stack.main_pages(path)) if tiff_stack.is_tiff(path) else 1
    if pages > 1:
        raise VideoError(f"{path} is a multi-page TIFF stack ({pages} pages) where one image was expected; pass the "
                         "stack or its folder as the movie, or save one page per file")
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
    """The frames of a folder: its image files (full paths), natural sort, each multi-page TIFF stack expanded in
    place into its page paths (``tiff_stack``); or the page paths of a multi-page TIFF file given itself.
    ``VideoError`` if the folder is missing or has no image."""
    folder = os.fspath(folder)
    if os.path.isfile(folder) and tiff_stack.is_tiff(folder):
        return tiff_stack.page_paths(folder)
    if not os.path.isdir(folder):
        raise VideoError(f"frame folder not found: {folder}")
    names = [n for n in os.listdir(folder) if is_image_file(n) and not n.startswith(".")]
    if not names:
        raise VideoError(f"no image files ({', '.join(IMAGE_EXTENSIONS)}) in {folder}")
    frames: List[str] = []
    for name in sorted(names, key=natural_key):
        frames += tiff_stack.page_paths(os.path.join(folder, name))
    return frames


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
H265_MIN_SIZE = 64  # x265 (in PyAV's wheels) crashes with heap corruption on e.g. 48x32 frames
Log = Callable[[str], None]


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
    # Slice threads only: frame threads hide decoding errors and drop the frames queued around a damaged packet.
    stream.thread_type = "SLICE"
    return container, stream


def _rate(stream) -> Fraction:
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    return Fraction(rate) if rate else Fraction(25)


def _rotated(img: np.ndarray, rotation: float) -> np.ndarray:
    """Apply a display-matrix rotation (degrees counter-clockwise, FFmpeg's convention) to a decoded frame."""
    k = int(round(rotation / 90.0)) % 4
    return np.ascontiguousarray(np.rot90(img, k)) if k else img


def _frame_of(frame, stream) -> Tuple[np.ndarray, Optional[Fraction]]:
    time = Fraction(frame.pts) * stream.time_base if frame.pts is not None else None
    return _rotated(frame.to_ndarray(format="rgb24"), frame.rotation or 0), time


def _warn(log: Optional[Log], message: str) -> None:
    if log is not None:
        log(message)
    else:
        warnings.warn(message, stacklevel=4)


def _damage_report(path: str, expected: int, frames: int, skipped: int, stopped: Optional[Exception]) -> str:
    lost = max(expected - frames, 0)
    parts = []
    if skipped:
        parts.append(f"skipped {skipped} damaged packet(s) and went on")
    if stopped is not None:
        parts.append(f"stopped at data it cannot read past ({stopped}); the frames before it are kept")
    return f"{path}: decoding {' and '.join(parts)}; {lost} frame(s) lost"


def _decoded(container, stream, path: str, log: Optional[Log] = None
             ) -> Iterator[Tuple[np.ndarray, Optional[Fraction]]]:
    """Decode packet by packet: a packet FFmpeg rejects (damaged data) is skipped and decoding goes on; when the
    stream ends the damage is reported (``log``, else a warning) with the number of frames lost."""
    av = _av()
    packets = frames = skipped = 0
    stopped = None
    demuxer = container.demux(stream)
    while True:
        try:
            packet = next(demuxer, None)
        except av.FFmpegError as exc:  # the demuxer cannot go past damaged data: flush what the decoder holds
            stopped, packet = exc, None
        if packet is None:
            break
        packets += 1 if packet.size else 0
        try:
            decoded = packet.decode()
        except av.FFmpegError:
            skipped += 1
            continue
        for frame in decoded:
            frames += 1
            yield _frame_of(frame, stream)
    if stopped is not None:
        try:
            for frame in stream.codec_context.decode(None):
                frames += 1
                yield _frame_of(frame, stream)
        except av.FFmpegError:
            pass
    if skipped or stopped is not None:  # frames expected: the container's index, or one per packet read
        _warn(log, _damage_report(path, max(packets, stream.frames or 0), frames, skipped, stopped))


def iter_video_timed(path: str, log: Optional[Log] = None) -> Iterator[Tuple[np.ndarray, Optional[Fraction]]]:
    """Yield ``(RGB uint8 frame, time in seconds as a Fraction or None)`` one by one (memory-bounded), rotation
    applied; damaged packets are skipped and reported through ``log`` (default: a warning); ``VideoError`` if no
    frame decodes."""
    container, stream = _open_input(path)
    count = 0
    try:
        for item in _decoded(container, stream, path, log):
            count += 1
            yield item
    finally:
        container.close()
    if count == 0:
        raise VideoError(f"no frame could be decoded from video {path} (corrupt or unsupported codec)")


def iter_video(path: str, log: Optional[Log] = None) -> Iterator[np.ndarray]:
    """Yield the frames of a video one by one as RGB uint8 (memory-bounded); ``VideoError`` if none decode."""
    for frame, _ in iter_video_timed(path, log):
        yield frame


def read_frames(path: str, start: int, count: int, log: Optional[Log] = None) -> List[np.ndarray]:
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
        for img, time in _decoded(container, stream, path, log):
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
            for k, (img, _) in enumerate(_decoded(container, stream, path, log)):
                if k >= start:
                    frames.append(img)
                    if len(frames) == count:
                        break
    finally:
        container.close()
    if len(frames) != count:
        raise VideoError(f"{path}: could not decode frames {start}..{start + count - 1} (got {len(frames)})")
    return frames


_PACKET_COUNTS: Dict[Tuple[str, int, int], int] = {}  # (real path, size, mtime) -> video packets, see _count_packets


def _count_packets(path: str) -> int:
    """The number of video packets (one per frame) of a video, read without decoding (one pass over the file,
    remembered while the file is unchanged)."""
    st = os.stat(path)
    key = (os.path.realpath(path), st.st_size, st.st_mtime_ns)
    if key not in _PACKET_COUNTS:
        av = _av()
        count = 0
        container = av.open(path, "r")
        try:
            for packet in container.demux(container.streams.video[0]):
                count += 1 if packet.size else 0
        except av.FFmpegError:
            pass  # damaged data: the packets before it
        finally:
            container.close()
        if len(_PACKET_COUNTS) > 256:
            _PACKET_COUNTS.clear()
        _PACKET_COUNTS[key] = count
    return _PACKET_COUNTS[key]


def video_info(path: str) -> dict:
    """Header facts: ``width``/``height`` (as displayed, rotation applied), ``fps`` (float) and ``rate`` (exact
    Fraction), ``frame_count`` (the container's frame index (mp4, mov, avi), else counted from the video packets
    without decoding: exact for low or variable frame rates and a missing or wrong duration), ``rotation``,
    ``codec``, ``audio_streams``."""
    container, stream = _open_input(path)
    try:
        ctx = stream.codec_context
        rate = _rate(stream)
        count = stream.frames or 0
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
    if not info["frame_count"]:
        info["frame_count"] = _count_packets(os.fspath(path))
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


def check_codec_size(codec: str, width: int, height: int) -> None:
    """``VideoError`` when ``codec`` cannot encode frames of ``width`` x ``height`` px (H.265: under
    ``H265_MIN_SIZE`` on a side). Call it with the output size before the work that produces the frames."""
    if codec == "h265" and min(width, height) < H265_MIN_SIZE:
        raise VideoError(f"--codec h265 needs frames of at least {H265_MIN_SIZE}x{H265_MIN_SIZE} px (x265 corrupts "
                         f"memory on smaller ones), got {width}x{height}; use --codec h264 or ffv1")


def video_extension(codec: str) -> str:
    """The container extension for ``codec`` (.mp4 or .mkv)."""
    return CODECS[codec][2]


def writable_container(path: str) -> Container:
    """The ``CONTAINERS`` row of ``path``'s extension; ``VideoError`` unless this program writes that container."""
    ext = os.path.splitext(os.fspath(path))[1].lower()
    container = CONTAINERS.get(ext)
    if container is None or container.muxer is None:
        writable = ", ".join(e for e, c in CONTAINERS.items() if c.muxer)
        raise VideoError(f"cannot write video {path}: {ext or 'no extension'} is not a container this program "
                         f"writes; use one of {writable}")
    return container


class _SourceStreams:
    """Audio/subtitle packets of a source video, copied into an output container, optionally within a time range."""

    def __init__(self, source: str, output, container: Container, time_range: Optional[Tuple[Fraction, Fraction]],
                 log):
        av = _av()
        self.input = av.open(source, "r")
        self.output = output
        self.range = time_range
        self.map = {}  # input stream index -> (output stream, transcode?)
        claimed = frozenset(getattr(output, "supported_codecs", None) or ())
        audio = claimed & container.audio if container.audio is not None else claimed
        subtitles = claimed & container.subtitles if container.subtitles is not None else claimed
        for stream in self.input.streams:
            if stream.type == "video":
                continue
            name = stream.codec_context.name
            if stream.type == "audio":
                if name in audio:
                    self.map[stream.index] = (output.add_stream_from_template(stream), False)
                else:
                    out = output.add_stream("aac", rate=stream.codec_context.sample_rate or 48000)
                    out.layout = "mono" if stream.codec_context.channels == 1 else "stereo"
                    self.map[stream.index] = (out, True)
                    log(f"audio stream {stream.index} ({name}) cannot be copied into {output.format.name}: "
                        "re-encoded as AAC")
            elif stream.type == "subtitle" and name in subtitles:
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
    container = writable_container(path)
    pix_fmt = CODECS[codec][1]
    log = log or (lambda message: warnings.warn(message, stacklevel=3))
    count = 0
    with atomic.atomic_path(path) as tmp:
        options = {"movflags": "+faststart"} if container.faststart else {}
        try:
            output = av.open(tmp, "w", format=container.muxer, options=options)
        except (av.FFmpegError, ValueError) as exc:
            raise VideoError(f"cannot write video {path}: {exc}") from exc
        try:
            if times is not None and _constant_rate(times, rate):
                times = None  # evenly spaced at the stated rate: write it as constant-rate video
            time_base = _time_base(times, rate)
            stream = _add_video_stream(output, codec, container, rate, time_base, crf, preset)
            sources = _SourceStreams(audio_from, output, container, time_range, log) if audio_from else None
            size = None
            origin = None
            for frame in frames:
                frame = _checked_frame(path, codec, frame, count, size)
                if size is None:
                    size = frame.shape[:2]
                    padded = _even(frame).shape[:2] if pix_fmt == "yuv420p" else size
                    stream.height, stream.width = padded
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


def _add_video_stream(output, codec: str, container: Container, rate: Fraction, time_base: Fraction, crf: int,
                      preset: str):
    """The video stream of ``codec`` (``CODECS``) in ``output``, at ``rate``, timestamps in ``time_base``."""
    encoder, pix_fmt, _ = CODECS[codec]
    stream = output.add_stream(encoder, rate=rate)
    stream.pix_fmt = pix_fmt
    stream.codec_context.time_base = time_base
    stream.time_base = time_base
    if codec in ("h264", "h265"):
        stream.options = {"crf": str(int(crf)), "preset": preset}
        if codec == "h265":
            stream.options["x265-params"] = "log-level=error"
            if container.hevc_tag:
                stream.codec_tag = container.hevc_tag
    return stream


def _checked_frame(path: str, codec: str, frame, count: int, size: Optional[Tuple[int, int]]) -> np.ndarray:
    """Frame ``count`` to write as a uint8 HxWx3 array; ``VideoError`` unless it has that layout, the size of the
    first frame (``size``, None for the first) and a size ``codec`` encodes."""
    frame = np.asarray(frame)
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        raise VideoError(f"write_video({path}): frames must be uint8 HxWx3, got {frame.dtype} {frame.shape}")
    if size is None:
        try:
            check_codec_size(codec, frame.shape[1], frame.shape[0])
        except VideoError as exc:
            raise VideoError(f"write_video({path}): {exc}") from None
    elif frame.shape[:2] != size:
        raise VideoError(f"write_video({path}): frame {count} is {frame.shape[1]}x{frame.shape[0]}, expected "
                         f"{size[1]}x{size[0]}")
    return frame


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


def _write_error(path: str, exc: Exception) -> VideoError:
    if isinstance(exc, OSError) and exc.errno is not None:
        return VideoError(describe_os_error(OSError(exc.errno, exc.strerror, path), "cannot write video") +
                          "; nothing was written under that name")
    return VideoError(f"cannot write video {path} ({exc}); nothing was written under that name")
