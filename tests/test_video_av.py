"""Real video in, real video out (PyAV/FFmpeg): exact rates, variable frame rate, rotation, audio, codecs, resume,
frame ranges and clear errors. Every clip is encoded in the test."""

import contextlib
import os
import signal
import struct
from fractions import Fraction

import av
import numpy as np
import pytest
from conftest import make_av_clip, moving_frames
from conftest import run_tester as _cli

import upscale
import video_io

AUDIO_FRAME = Fraction(1024, 48000)  # one AAC frame


def _streams(path):
    with av.open(str(path)) as c:
        out = []
        for s in c.streams:
            duration = Fraction(s.duration) * s.time_base if s.duration else None
            out.append({"type": s.type, "codec": s.codec_context.name, "duration": duration,
                        "rate": s.average_rate if s.type == "video" else None,
                        "pix_fmt": s.codec_context.pix_fmt if s.type == "video" else None,
                        "frames": s.frames})
        return out, c.format.name


def test_ntsc_rate_audio_and_browser_codec_survive_an_upscale(tmp_path, capsys):
    src = make_av_clip(tmp_path / "phone.mp4", n=24, size=(48, 32))
    info = video_io.video_info(str(src))
    assert info["rate"] == Fraction(24000, 1001) and info["frame_count"] == 24 and info["audio_streams"] == 1
    out = tmp_path / "out"
    code, err = _cli(["-u", "-i", str(src), "-o", str(out), "-m", "bicubic"], capsys)
    assert code == 0, err
    streams, fmt = _streams(out / "phone.mp4")
    video, audio = streams
    assert "mp4" in fmt
    assert video["codec"] == "h264" and video["pix_fmt"] == "yuv420p"
    assert video["rate"] == Fraction(24000, 1001) and video["frames"] == 24
    assert audio["type"] == "audio" and audio["codec"] == "aac"
    src_audio = _streams(src)[0][1]["duration"]
    assert abs(audio["duration"] - src_audio) <= AUDIO_FRAME
    assert abs(audio["duration"] - video["duration"]) <= AUDIO_FRAME
    with open(out / "phone.mp4", "rb") as f:  # +faststart: the index (moov) comes before the media data (mdat)
        head = f.read(4096)
    assert head.find(b"moov") != -1 and (head.find(b"mdat") == -1 or head.find(b"moov") < head.find(b"mdat"))


def test_variable_frame_rate_timestamps_are_kept(tmp_path, capsys):
    times = [Fraction(k, 10) for k in (0, 1, 3, 4, 8, 9)]
    src = make_av_clip(tmp_path / "vfr.mp4", n=6, times=times, audio=False, size=(32, 32))
    assert [t for _, t in video_io.iter_video_timed(str(src))] == times
    out = tmp_path / "out"
    code, err = _cli(["-u", "-i", str(src), "-o", str(out), "-m", "bicubic", "-s", "2"], capsys)
    assert code == 0, err
    assert [t for _, t in video_io.iter_video_timed(str(out / "vfr.mp4"))] == times


def test_rotation_metadata_is_applied(tmp_path):
    src = make_av_clip(tmp_path / "portrait.mp4", n=2, rotation=-90, audio=False, size=(64, 48))  # phone: rotate=90
    info = video_io.video_info(str(src))
    assert (info["width"], info["height"]) == (48, 64)
    frame = next(video_io.iter_video(str(src)))
    plain = make_av_clip(tmp_path / "plain.mp4", n=2, audio=False, size=(64, 48))
    upright = next(video_io.iter_video(str(plain)))
    expected = np.rot90(upright, -1)  # displayed turned clockwise
    assert frame.shape == expected.shape == (64, 48, 3)
    assert np.abs(frame.astype(int) - expected.astype(int)).mean() < 3


def test_seeking_reads_the_same_frames_as_decoding_in_order(tmp_path):
    src = make_av_clip(tmp_path / "c.mp4", n=30, audio=False, size=(32, 32))
    everything = list(video_io.iter_video(str(src)))
    for start in (0, 7, 25):
        got = video_io.read_frames(str(src), start, 4 if start < 25 else 5)
        for k, frame in enumerate(got):
            np.testing.assert_array_equal(frame, everything[start + k])


@pytest.mark.parametrize("codec, fmt, name", [("h265", "mp4", "hevc"), ("ffv1", "matroska", "ffv1")])
def test_other_codecs(tmp_path, codec, fmt, name):
    frames = moving_frames(5, 65, 71)  # odd sizes
    path = tmp_path / ("v" + video_io.video_extension(codec))
    assert video_io.write_video(str(path), frames, Fraction(30000, 1001), codec=codec, crf=20) == 5
    streams, container = _streams(path)
    assert fmt in container and streams[0]["codec"] == name
    back = list(video_io.iter_video(str(path)))
    assert len(back) == 5
    if codec == "ffv1":  # lossless, odd size kept
        for a, b in zip(back, frames):
            np.testing.assert_array_equal(a, b)
    else:  # 4:2:0 pads odd sizes by one edge pixel
        assert back[0].shape == (66, 72, 3)
        with pytest.raises(video_io.VideoError, match="at least 64x64"):  # x265 corrupts memory on tiny frames
            video_io.write_video(str(tmp_path / "tiny.mp4"), moving_frames(2, 32, 48), 10, codec="h265")


def test_pcm_audio_is_reencoded_for_mp4(tmp_path):
    src = make_av_clip(tmp_path / "pcm.mkv", n=10, acodec="pcm_s16le", fmt="matroska")
    messages = []
    out = tmp_path / "o.mp4"
    video_io.write_video(str(out), video_io.iter_video(str(src)), video_io.video_info(str(src))["rate"],
                         audio_from=str(src), log=messages.append)
    streams, _ = _streams(out)
    assert [s["codec"] for s in streams] == ["h264", "aac"]
    assert any("re-encoded as AAC" in m for m in messages)


def test_frame_range_cuts_video_and_audio(tmp_path, capsys):
    src = make_av_clip(tmp_path / "long.mp4", n=48, size=(32, 32))
    out = tmp_path / "out"
    code, err = _cli(["-u", "-i", str(src), "-o", str(out), "-m", "bicubic", "--frames", "11:34"], capsys)
    assert code == 0, err
    assert sorted(os.listdir(out / "long")) == [f"{k:05d}.png" for k in range(11, 35)]
    video, audio = _streams(out / "long.mp4")[0]
    assert video["frames"] == 24
    assert abs(audio["duration"] - Fraction(24) / Fraction(24000, 1001)) <= 2 * AUDIO_FRAME
    code, err = _cli(["-u", "-i", str(src), "-o", str(tmp_path / "o2"), "-m", "bicubic", "--frames", "9:3"], capsys)
    assert code == 2 and "--frames" in err


def test_resume_after_an_interruption_gives_the_same_output_as_one_run(tmp_path, tiny_ckpt, capsys, monkeypatch):
    src = make_av_clip(tmp_path / "clip.mp4", n=8, size=(24, 16))
    whole = tmp_path / "whole"
    code, err = _cli(["-u", "-i", str(src), "-o", str(whole), "-m", tiny_ckpt], capsys)
    assert code == 0, err

    part = tmp_path / "part"
    real_save = upscale.save_rgb
    calls = []

    def save_then_stop(path, img):
        if len(calls) == 5:
            raise KeyboardInterrupt  # Ctrl-C after 5 frames
        calls.append(path)
        real_save(path, img)

    monkeypatch.setattr(upscale, "save_rgb", save_then_stop)
    code, err = _cli(["-u", "-i", str(src), "-o", str(part), "-m", tiny_ckpt], capsys)
    assert code == 130
    assert len(os.listdir(part / "clip")) == 5 and not (part / "clip.mp4").exists()
    monkeypatch.setattr(upscale, "save_rgb", real_save)
    (part / "clip" / "00003.png").write_bytes(b"damaged")  # a frame that is not valid is computed again
    code, err = _cli(["-u", "-i", str(src), "-o", str(part), "-m", tiny_ckpt, "--resume"], capsys)
    assert code == 0, err
    assert "keeps 4 frame(s)" in err
    for name in sorted(os.listdir(whole / "clip")):
        assert (part / "clip" / name).read_bytes() == (whole / "clip" / name).read_bytes()
    a = list(video_io.iter_video(str(whole / "clip.mp4")))
    b = list(video_io.iter_video(str(part / "clip.mp4")))
    # The same frames encoded again; x264's threaded encoder may place bits slightly differently under load.
    assert len(a) == len(b) == 8
    assert all(np.abs(x.astype(int) - y.astype(int)).mean() < 3 for x, y in zip(a, b))


@pytest.mark.parametrize("case", ["empty", "text", "audio_only"])
def test_unreadable_videos_are_one_line_errors(tmp_path, capsys, case):
    path = tmp_path / "bad.mp4"
    if case == "empty":
        path.write_bytes(b"")
        expect = "empty (0 bytes)"
    elif case == "text":
        path.write_text("this is not a video\n" * 50)
        expect = "cannot open video"
    else:
        with av.open(str(path), "w") as out:
            sound = out.add_stream("aac", rate=48000)
            sound.layout = "mono"
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            frame.sample_rate = 48000
            frame.pts = 0
            for packet in sound.encode(frame):
                out.mux(packet)
            for packet in sound.encode(None):
                out.mux(packet)
        expect = "no video stream"
    code, err = _cli(["-u", "-i", str(path), "-o", str(tmp_path / "o"), "-m", "bicubic"], capsys)
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(lines) == 1 and expect in lines[0] and str(path) in lines[0], err
    assert not os.path.exists(tmp_path / "o" / "bad.mp4")


def test_missing_encoder_and_bad_settings_are_clear(tmp_path, monkeypatch):
    monkeypatch.setitem(video_io.CODECS, "h264", ("libnonexistent264", "yuv420p", ".mp4"))
    with pytest.raises(video_io.VideoError, match="no libnonexistent264 encoder"):
        video_io.write_video(str(tmp_path / "x.mp4"), moving_frames(2, 16, 16), 10)
    monkeypatch.undo()
    with pytest.raises(video_io.VideoError, match="--crf"):
        video_io.write_video(str(tmp_path / "x.mp4"), moving_frames(2, 16, 16), 10, crf=70)
    with pytest.raises(video_io.VideoError, match="unknown codec"):
        video_io.check_codec("divx")
    assert os.listdir(tmp_path) == []


def test_float_rates_become_exact_fractions():
    assert video_io.as_rate(23.976) == Fraction(24000, 1001)
    assert video_io.as_rate(29.97) == Fraction(30000, 1001)
    assert video_io.as_rate(25.0) == 25 and video_io.as_rate(12.5) == Fraction(25, 2)


# ------------------------------------------- header frame counts are hints (reliability matrix 2: R07, R10, V17)

VFR_MS = [0, 40, 100, 110, 300, 310, 320, 330, 340, 350, 360, 370]  # 12 frames; duration x rate says 10


def _matroska(path, times_ms, fmt="matroska", codec="libx264", size=(24, 16)):
    """A small mkv/webm whose frames have the given timestamps (ms)."""
    with av.open(str(path), "w", format=fmt) as out:
        stream = out.add_stream(codec, rate=25)
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        stream.codec_context.time_base = stream.time_base = Fraction(1, 1000)
        for t, frame in zip(times_ms, moving_frames(len(times_ms), size[1], size[0])):
            vf = av.VideoFrame.from_ndarray(frame, format="rgb24")
            vf.pts, vf.time_base = t, Fraction(1, 1000)
            for packet in stream.encode(vf):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path


def _duration_element(data: bytearray) -> int:
    """Offset of the Matroska Duration element (id 0x4489, an 8-byte float)."""
    i = data.find(b"\x44\x89")
    assert i > 0 and data[i + 2] == 0x88
    return i


def _without_duration(path):
    """As a browser's MediaRecorder writes webm: the Duration element replaced by an EBML Void of the same size."""
    data = bytearray(path.read_bytes())
    i = _duration_element(data)
    data[i : i + 11] = bytes([0xEC, 0x89]) + bytes(9)
    path.write_bytes(bytes(data))
    return path


def _lying_header(monkeypatch, count):
    """Make the clips' video header report ``count`` frames (what a damaged or missing header says)."""
    import clips

    real = clips.video_info

    def video_info(path):
        return dict(real(path), frame_count=count)

    monkeypatch.setattr(clips, "video_info", video_info)


@contextlib.contextmanager
def _deadline(seconds):
    """Fail (not hang) when the block runs longer than ``seconds``."""
    def expired(signum, frame):
        raise AssertionError(f"still running after {seconds} s: a loop over a header frame count?")

    before = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, before)


@pytest.mark.parametrize("kind, header", [("vfr.mkv", None), ("vfr.mkv", 10), ("nodur.webm", None),
                                          ("nodur.webm", 0)])
def test_rerun_and_resume_work_whatever_the_header_says(tmp_path, capsys, monkeypatch, kind, header):
    """R07: a VFR mkv whose header count (10) is below the real one (12); R10: a webm without Duration (no count).
    The same command can be run again, and ``--resume`` finishes the clip, from the frames really decoded."""
    if kind == "vfr.mkv":
        src, n = _matroska(tmp_path / kind, VFR_MS), len(VFR_MS)
    else:
        src, n = _without_duration(_matroska(tmp_path / kind, [0, 40, 80, 120, 160, 200], "webm", "libvpx")), 6
    if header is not None:
        _lying_header(monkeypatch, header)
    out = tmp_path / "out"
    name = src.stem
    for extra in ([], [], ["--resume"]):
        code, err = _cli(["-u", "-i", str(src), "-o", str(out), "-m", "bicubic"] + extra, capsys)
        assert code == 0, err
    assert f"keeps {n} frame(s)" in err
    assert sorted(os.listdir(out / name)) == [f"{t:05d}.png" for t in range(1, n + 1)]
    os.remove(out / name / "00005.png")  # an interrupted run: --resume computes what is missing
    code, err = _cli(["-u", "-i", str(src), "-o", str(out), "-m", "bicubic", "--resume"], capsys)
    assert code == 0 and f"keeps {n - 1} frame(s)" in err, err
    assert len(list(video_io.iter_video(str(out / f"{name}.mp4")))) == n


def test_a_huge_declared_duration_does_not_hang(tmp_path, capsys, monkeypatch):
    """V17: a 2 KB mkv whose Duration claims about 1e11 frames (4 real), with the progress bar on."""
    src = _matroska(tmp_path / "giant.mkv", [0, 40, 80, 120])
    data = bytearray(src.read_bytes())
    struct.pack_into(">d", data, _duration_element(data) + 3, 4e12)  # ms
    src.write_bytes(bytes(data))
    _lying_header(monkeypatch, 10**11)  # whatever video_io makes of that Duration, the header may say so
    out = tmp_path / "out"
    with _deadline(60):
        for extra in ([], [], ["--resume"]):
            code, err = _cli(["-u", "-i", str(src), "-o", str(out), "-m", "bicubic"] + extra, capsys)
            assert code == 0, err
    assert "header says 100000000000 frames but only 4 decoded" in err
    assert sorted(os.listdir(out / "giant")) == [f"{t:05d}.png" for t in range(1, 5)]


def test_h265_output_too_small_fails_before_any_work(tmp_path, capsys, monkeypatch):
    """V19: x265 cannot take frames under 64 px: said before the frames are computed, not after."""
    src = make_av_clip(tmp_path / "t12.mp4", n=4, size=(12, 12), audio=False)
    computed = []
    monkeypatch.setattr(upscale, "_sr_frames", lambda *a, **k: computed.append(1) or iter(()))
    out = tmp_path / "out"
    code, err = _cli(["-u", "-i", str(src), "-o", str(out), "-m", "bicubic", "--codec", "h265"], capsys)
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2 and lines == ["error: clip t12: --codec h265 needs frames of at least 64x64 px (x265 corrupts "
                                   "memory on smaller ones), got 48x48; use --codec h264 or ffv1"], err
    assert not computed and not (out / "t12").exists()
