"""DatasetFetcher: resumable download from a local HTTP server, extraction, errors, and the offline sample."""

import http.server
import io
import json
import os
import socket
import threading
import zipfile

import numpy as np
import pytest
from conftest import moving_frames

import DatasetFetcher as fetcher
from video_io import load_rgb, write_video


class Handler(http.server.BaseHTTPRequestHandler):
    """Serves ``server.files`` (path -> bytes) with Range support; can cut the first GET short or lie on HEAD."""

    def log_message(self, *args):
        pass

    def _body(self):
        data = self.server.files.get(self.path)
        if data is None:
            self.send_error(404)
        return data

    def do_HEAD(self):
        data = self._body()
        if data is None:
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(data) + self.server.extra_announced))
        self.end_headers()

    def do_GET(self):
        data = self._body()
        if data is None:
            return
        self.server.ranges.append(self.headers.get("Range"))
        start = 0
        rng = self.headers.get("Range")
        if rng:
            start = int(rng.split("=")[1].split("-")[0])
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        body = data[start:]
        if self.server.cut_after is not None:
            body, self.server.cut_after = body[: self.server.cut_after], None
            self.wfile.write(body)
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)  # the connection drops mid-download
            return
        self.wfile.write(body)


@pytest.fixture
def server():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.files, srv.ranges, srv.cut_after, srv.extra_announced = {}, [], None, 0
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    srv.url = f"http://127.0.0.1:{srv.server_address[1]}"
    yield srv
    srv.shutdown()
    srv.server_close()


def septuplet_zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("vimeo_test_clean/sep_testlist.txt", "00001/0001\n")
        for k in range(1, 8):
            zf.writestr(f"vimeo_test_clean/sequences/00001/0001/im{k}.png", bytes([k]) * 3000)
        zf.writestr("vimeo_test_clean/sequences/00001/.DS_Store", b"junk")
    return buf.getvalue()


def test_interrupted_download_resumes_with_range(server, tmp_path):
    payload = os.urandom(3 * fetcher.CHUNK + 1234)
    server.files["/f.bin"] = payload
    server.cut_after = fetcher.CHUNK + 77
    dest = tmp_path / "f.bin"
    with pytest.raises(fetcher.FetchError, match="rerun"):
        fetcher.download(server.url + "/f.bin", str(dest), progress=False)
    assert not dest.exists() and (tmp_path / "f.bin.part").stat().st_size == fetcher.CHUNK + 77
    fetcher.download(server.url + "/f.bin", str(dest), progress=False)
    assert dest.read_bytes() == payload and not (tmp_path / "f.bin.part").exists()
    assert server.ranges == [None, f"bytes={fetcher.CHUNK + 77}-"]


def test_size_mismatch_is_reported_and_part_kept(server, tmp_path):
    server.files["/f.bin"] = b"x" * 1000
    server.extra_announced = 10  # HEAD announces 1010 bytes, the body has 1000
    with pytest.raises(fetcher.FetchError, match="incomplete"):
        fetcher.download(server.url + "/f.bin", str(tmp_path / "f.bin"), progress=False)
    assert not (tmp_path / "f.bin").exists()


def test_unreachable_server_and_404(tmp_path, server):
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now
    with pytest.raises(fetcher.FetchError, match="network error"):
        fetcher.download(f"http://127.0.0.1:{port}/x.zip", str(tmp_path / "x.zip"), timeout=5, progress=False)
    with pytest.raises(fetcher.FetchError, match="HTTP 404"):
        fetcher.download(server.url + "/nope.zip", str(tmp_path / "nope.zip"), progress=False)


def test_fetch_and_extract_test_set(server, tmp_path, capsys):
    server.files["/testset/vimeo_test_clean.zip"] = septuplet_zip()
    dest = tmp_path / "vimeo"
    with pytest.raises(SystemExit) as ex:
        fetcher.run_cli(fetcher.main, ["--dest", str(dest), "--sets", "test", "--url-base", server.url, "-q"])
    assert ex.value.code == 0
    assert (dest / "sequences/00001/0001/im7.png").read_bytes() == bytes([7]) * 3000
    assert (dest / "sequences/sep_testlist.txt").read_text() == "00001/0001\n"
    assert not (dest / "sequences/00001/.DS_Store").exists()
    assert not (dest / "vimeo_test_clean.zip").exists()
    # a second run does nothing
    fetcher.main(["--dest", str(dest), "--sets", "test", "--url-base", server.url, "-q"])
    assert "already extracted" in capsys.readouterr().out


def test_bad_zip_is_a_clear_error(server, tmp_path, capsys):
    server.files["/testset/vimeo_test_clean.zip"] = b"this is not a zip file" * 10
    with pytest.raises(SystemExit) as ex:
        fetcher.run_cli(fetcher.main, ["--dest", str(tmp_path / "v"), "--sets", "test", "--url-base", server.url,
                                       "-q"])
    assert ex.value.code == 2
    err = capsys.readouterr().err
    assert "not a valid zip" in err and "vimeo_test_clean.zip" in err and len(err.strip().splitlines()) == 1


def make_clip(path, n, seed, size=(64, 96)):
    frames = moving_frames(n, size[0], size[1], seed)
    write_video(str(path), frames, 10)
    return path


def test_sample_layout_and_determinism(tmp_path):
    a = make_clip(tmp_path / "a.mp4", 12, 0)
    b = make_clip(tmp_path / "b.mp4", 9, 1, size=(600, 1000))
    ev = make_clip(tmp_path / "bikes.mp4", 6, 2, size=(66, 98))
    args = ["--sample", "--clips", str(a), str(b), "--eval_clip", str(ev), "--sample_sequences", "2",
            "--sample_eval_frames", "4", "-q"]
    fetcher.main(args + ["--dest", str(tmp_path / "s1")])
    fetcher.main(args + ["--dest", str(tmp_path / "s2")])
    root = tmp_path / "s1"
    lines = (root / "sequences/sep_trainlist.txt").read_text().split()
    assert lines == ["00001/0001", "00001/0002", "00002/0001", "00002/0002"]
    for rel in lines:
        for k in range(1, 8):
            assert load_rgb(str(root / "sequences" / rel / f"im{k}.png")).shape == (256, 448, 3)
    assert (root / "eval/bikes.txt").read_text().split() == [f"bikes/{i:03d}.png" for i in range(1, 5)]
    assert load_rgb(str(root / "eval/bikes/001.png")).shape == (64, 96, 3)  # modcropped to a multiple of 4
    manifest = json.loads((root / "manifest.json").read_text())
    assert manifest["clips"][1]["prescale"] < 1 < manifest["clips"][0]["prescale"]
    for dirpath, _, names in os.walk(root):
        for n in names:
            p = os.path.join(dirpath, n)
            with open(p, "rb") as f1, open(p.replace("s1", "s2", 1), "rb") as f2:
                assert f1.read() == f2.read(), p
    # the septuplets of clip b are spaced through the clip (first and last septuplet)
    assert [s["first_frame"] for s in manifest["clips"][1]["sequences"]] == [0, 2]
    # a later frame of a septuplet differs from the first one (the clip moves)
    assert not np.array_equal(load_rgb(str(root / "sequences/00001/0001/im1.png")),
                              load_rgb(str(root / "sequences/00001/0001/im7.png")))


def test_sample_refuses_eval_clip_for_training_and_missing_clips(tmp_path):
    ev = make_clip(tmp_path / "bikes.mp4", 8, 2)
    with pytest.raises(fetcher.FetchError, match="held-out"):
        fetcher.main(["--sample", "--clips", str(ev), "--eval_clip", str(ev), "--dest", str(tmp_path / "s")])
    with pytest.raises(fetcher.FetchError, match="clip not found"):
        fetcher.main(["--sample", "--clips", str(tmp_path / "none.mp4"), "--dest", str(tmp_path / "s")])
    short = make_clip(tmp_path / "short.mp4", 4, 0)
    with pytest.raises(fetcher.FetchError, match="needs 7"):
        fetcher.main(["--sample", "--clips", str(short), "--eval_clip", str(ev), "--dest", str(tmp_path / "s"),
                      "-q"])
    assert not (tmp_path / "s").exists()


def test_clip_fetch_failure_is_a_clear_error(tmp_path):
    with pytest.raises(fetcher.FetchError, match="could not"):
        fetcher._run(["false"], str(tmp_path), "download the test package")
    with pytest.raises(fetcher.FetchError, match="could not"):
        fetcher._run(["/nonexistent/tool"], str(tmp_path), "download the test package")


def test_precompute_flows_fills_cache(tmp_path):
    pyflow = pytest.importorskip("pyflow")
    if not hasattr(pyflow, "rbpn_flows"):
        pytest.skip("pyflow not built")
    a = make_clip(tmp_path / "a.mp4", 8, 0, size=(64, 96))
    ev = make_clip(tmp_path / "bikes.mp4", 3, 2)
    fetcher.main(["--sample", "--clips", str(a), "--eval_clip", str(ev), "--sample_sequences", "1",
                  "--sample_eval_frames", "1", "--dest", str(tmp_path / "s"), "-q"])
    cache = tmp_path / "cache"
    fetcher.main(["--precompute_flows", "--data_dir", str(tmp_path / "s/sequences"), "--flow_cache", str(cache),
                  "--flow_threads", "1", "-q"])
    files = [os.path.join(d, n) for d, _, ns in os.walk(cache) for n in ns]
    assert len(files) == 1
    assert np.load(files[0]).shape == (6, 2, 64, 112)
