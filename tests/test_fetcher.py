"""DatasetFetcher: resumable download from a local HTTP server, extraction, errors, and the offline sample."""

import http.server
import io
import json
import os
import socket
import stat
import subprocess
import threading
import zipfile

import numpy as np
import pytest
from conftest import moving_frames

import atomic
import DatasetFetcher as fetcher
from video_io import load_rgb, write_video


class Handler(http.server.BaseHTTPRequestHandler):
    """Serves ``server.files`` (path -> bytes) with Range support; can cut the first GET short, lie on HEAD or refuse
    HEAD (``head_status``); a Range past the end gets 416 (with ``Content-Range: bytes */N`` unless ``bare_416``)."""

    def log_message(self, *args):
        pass

    def _body(self):
        data = self.server.files.get(self.path)
        if data is None:
            self.send_error(404)
        return data

    def do_HEAD(self):
        if self.server.head_status:
            self.send_response(self.server.head_status)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
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
            if start >= len(data):
                self.send_response(416)
                if not self.server.bare_416:
                    self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
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
    srv.head_status, srv.bare_416 = None, False
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    srv.url = f"http://127.0.0.1:{srv.server_address[1]}"
    yield srv
    srv.shutdown()
    srv.server_close()


def septuplet_zip() -> bytes:
    """The same bytes at every call: each entry has a fixed time (writestr with a name stamps the current time, at
    zip's 2-s resolution, so two calls could differ)."""
    entries = [("vimeo_test_clean/sep_testlist.txt", b"00001/0001\n")]
    entries += [(f"vimeo_test_clean/sequences/00001/0001/im{k}.png", bytes([k]) * 3000) for k in range(1, 8)]
    entries += [("vimeo_test_clean/sequences/00001/.DS_Store", b"junk")]
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in entries:
            zf.writestr(zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0)), data)
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


def test_head_size_differing_from_get_trusts_the_get(server, tmp_path):
    """D19: HEAD announces 1010 bytes, GET delivers (and announces) 1000: the download completes."""
    server.files["/f.bin"] = payload = os.urandom(1000)
    server.extra_announced = 10
    dest = tmp_path / "f.bin"
    fetcher.download(server.url + "/f.bin", str(dest), progress=False)
    assert dest.read_bytes() == payload and not (tmp_path / "f.bin.part").exists()


def test_complete_part_gets_416_and_is_accepted(server, tmp_path):
    """D19 rerun: the .part is already complete, so the Range request gets 416 with ``bytes */N``: no dead end."""
    server.files["/f.bin"] = payload = os.urandom(5000)
    server.extra_announced = 10  # a lying HEAD must not matter either
    (tmp_path / "f.bin.part").write_bytes(payload)
    fetcher.download(server.url + "/f.bin", str(tmp_path / "f.bin"), progress=False)
    assert (tmp_path / "f.bin").read_bytes() == payload and not (tmp_path / "f.bin.part").exists()
    assert server.ranges == ["bytes=5000-"]


def test_416_without_size_or_longer_part_restarts_from_zero(server, tmp_path, capsys):
    server.files["/f.bin"] = payload = os.urandom(5000)
    server.bare_416 = True  # 416 without Content-Range: the .part cannot be checked, so start again
    (tmp_path / "f.bin.part").write_bytes(payload)
    fetcher.download(server.url + "/f.bin", str(tmp_path / "f.bin"), progress=False)
    assert (tmp_path / "f.bin").read_bytes() == payload
    assert server.ranges == ["bytes=5000-", None]
    assert "from the start" in capsys.readouterr().err
    # a .part longer than the file (another file of the same name): 416 with bytes */5000, start again
    server.bare_416, server.ranges = False, []
    (tmp_path / "g.bin.part").write_bytes(os.urandom(7000))
    server.files["/g.bin"] = payload
    fetcher.download(server.url + "/g.bin", str(tmp_path / "g.bin"), progress=False)
    assert (tmp_path / "g.bin").read_bytes() == payload and not (tmp_path / "g.bin.part").exists()
    assert server.ranges == ["bytes=7000-", None]


@pytest.mark.parametrize("code", [405, 501, 403])
def test_mirror_without_head_falls_back_to_get(server, tmp_path, code):
    """D18: a mirror answering HEAD with 405/501/403 still works, resumes included."""
    server.files["/f.bin"] = payload = os.urandom(2 * fetcher.CHUNK + 99)
    server.head_status = code
    server.cut_after = fetcher.CHUNK + 5
    dest = tmp_path / "f.bin"
    with pytest.raises(fetcher.FetchError, match="rerun"):
        fetcher.download(server.url + "/f.bin", str(dest), progress=False)
    fetcher.download(server.url + "/f.bin", str(dest), progress=False)
    assert dest.read_bytes() == payload
    assert server.ranges == [None, f"bytes={fetcher.CHUNK + 5}-"]


def test_get_content_length_is_checked(server, tmp_path):
    """A body shorter than the GET's own Content-Length is reported as incomplete and kept for resuming."""
    server.files["/f.bin"] = b"x" * 3000
    server.cut_after = 1000
    with pytest.raises(fetcher.FetchError, match="rerun"):
        fetcher.download(server.url + "/f.bin", str(tmp_path / "f.bin"), progress=False)
    assert not (tmp_path / "f.bin").exists() and (tmp_path / "f.bin.part").stat().st_size == 1000


@pytest.mark.parametrize("base", ["127.0.0.1:8000/x", "localhost:8000/x", "ftp://example.org/x", "http:///x",
                                  "http://127.0.0.1:port/x"])
def test_url_base_without_http_scheme_is_a_clear_error(tmp_path, capsys, base):
    """D17: a typo in --url-base is reported as such, up front, not as a network error."""
    with pytest.raises(SystemExit) as ex:
        fetcher.run_cli(fetcher.main, ["--dest", str(tmp_path / "v"), "--sets", "test", "--url-base", base, "-q"])
    assert ex.value.code == 2
    err = capsys.readouterr().err
    assert "http:// or https://" in err and "network" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "v").exists()


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
    assert not (dest / "vimeo_test_clean.zip").exists() and not list(dest.glob(".fetched_*"))
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


def serve_zip(server, build) -> None:
    """Serve the zip written by ``build(zf)`` as the test-set archive."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        build(zf)
    server.files["/testset/vimeo_test_clean.zip"] = buf.getvalue()


def run_fetch(server, dest, *extra):
    with pytest.raises(SystemExit) as ex:
        fetcher.run_cli(fetcher.main, ["--dest", str(dest), "--sets", "test", "--url-base", server.url, "-q", *extra])
    return ex.value.code


def test_corrupt_deflate_stream_is_a_clear_error(server, tmp_path, capsys):
    """D11: a member whose deflate data is damaged gives the "not a valid zip" message and no half file."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("top/a.txt", "hello world " * 20000)
        zf.writestr("top/b.txt", "second file " * 20000)
    data = bytearray(buf.getvalue())
    with zipfile.ZipFile(io.BytesIO(bytes(data))) as zf:
        off = zf.getinfo("top/b.txt").header_offset + 30 + len("top/b.txt") + 10
    for i in range(off, off + 40):
        data[i] ^= 0x5A
    server.files["/testset/vimeo_test_clean.zip"] = bytes(data)
    dest = tmp_path / "v"
    assert run_fetch(server, dest) == 2
    err = capsys.readouterr().err
    assert "not a valid zip" in err and "delete it and rerun" in err and len(err.strip().splitlines()) == 1
    assert (dest / "a.txt").read_text() == "hello world " * 20000  # complete members stay
    assert not (dest / "b.txt").exists()  # nothing half-extracted under its final name
    assert sorted(os.listdir(dest)) == [".fetched_vimeo_test_clean.zip", "a.txt", "vimeo_test_clean.zip"]


def test_symlink_entries_are_skipped_and_nothing_leaves_dest(server, tmp_path, capsys):
    """D08: a symlink-dir entry followed by ``linkdir/evil.txt``: the link is skipped with a warning."""
    outside = tmp_path / "outside"
    outside.mkdir()

    def build(zf, slip=False):
        zi = zipfile.ZipInfo("top/linkdir")
        zi.create_system, zi.external_attr = 3, (stat.S_IFLNK | 0o777) << 16
        zf.writestr(zi, str(outside))
        zf.writestr("top/linkdir/evil.txt", "pwned\n")
        zf.writestr("top/sequences/00001/0001/im1.png", b"png")
        if slip:
            zf.writestr("top/escape/../../outside/evil2.txt", "pwned\n")

    serve_zip(server, build)
    dest = tmp_path / "v"
    assert run_fetch(server, dest) == 0
    err = capsys.readouterr().err
    assert "symbolic link" in err and "top/linkdir" in err and len(err.strip().splitlines()) == 1
    assert not (dest / "linkdir").is_symlink() and (dest / "linkdir/evil.txt").read_text() == "pwned\n"
    assert (dest / "sequences/00001/0001/im1.png").read_bytes() == b"png"
    assert not any(os.path.islink(os.path.join(d, n)) for d, ds, ns in os.walk(dest) for n in ds + ns)
    assert os.listdir(outside) == []
    # the same with a zip-slip entry: refused, still nothing outside --dest
    serve_zip(server, lambda zf: build(zf, slip=True))
    assert run_fetch(server, tmp_path / "v2") == 2
    err = capsys.readouterr().err
    assert "refusing to extract" in err and "outside" in err
    assert os.listdir(outside) == [] and not (tmp_path / "v2/linkdir").is_symlink()


def test_file_and_folder_of_the_same_name_is_a_clear_error(server, tmp_path, capsys):
    def build(zf):
        zf.writestr("top/x", "a file")
        zf.writestr("top/x/y.txt", "under a file")

    serve_zip(server, build)
    assert run_fetch(server, tmp_path / "v") == 2
    err = capsys.readouterr().err
    assert "'top/x/y.txt'" in err and "a file is in the way" in err and len(err.strip().splitlines()) == 1


def test_dest_that_is_a_file_is_a_clear_error(server, tmp_path, capsys):
    """D22: --dest names an existing file (download and --sample modes)."""
    server.files["/testset/vimeo_test_clean.zip"] = septuplet_zip()
    somefile = tmp_path / "somefile"
    somefile.write_text("precious\n")
    assert run_fetch(server, somefile) == 2
    err = capsys.readouterr().err
    assert "is not a folder" in err and str(somefile) in err and len(err.strip().splitlines()) == 1
    assert somefile.read_text() == "precious\n" and server.ranges == []
    with pytest.raises(SystemExit) as ex:
        fetcher.run_cli(fetcher.main, ["--sample", "--dest", str(somefile), "--clips", str(tmp_path / "none.mp4")])
    assert ex.value.code == 2 and "is not a folder" in capsys.readouterr().err
    assert somefile.read_text() == "precious\n"


def test_zip_not_downloaded_by_the_tool_is_kept(server, tmp_path, capsys):
    """Only a zip the tool downloaded is deleted after extraction; one the user put there stays."""
    dest = tmp_path / "v"
    dest.mkdir()
    (dest / "vimeo_test_clean.zip").write_bytes(septuplet_zip())
    assert run_fetch(server, dest) == 0
    assert (dest / "vimeo_test_clean.zip").read_bytes() == septuplet_zip()
    assert "not downloaded by" in capsys.readouterr().out
    assert (dest / "sequences/00001/0001/im1.png").exists() and server.ranges == []


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


@pytest.fixture
def sample_args(tmp_path):
    """Arguments of a fast --sample run (2 + 1 septuplets, 3 eval frames), without --dest."""
    a = make_clip(tmp_path / "clips/a.mp4", 8, 0)
    ev = make_clip(tmp_path / "clips/bikes.mp4", 4, 2)
    return ["--sample", "--clips", str(a), "--eval_clip", str(ev), "--sample_sequences", "2",
            "--sample_eval_frames", "3", "-q"]


def tree(root) -> dict:
    """Relative path -> bytes (files) or None (folders) of everything under ``root``."""
    out = {}
    for d, ds, ns in os.walk(root):
        for n in ds + ns:
            p = os.path.join(d, n)
            out[os.path.relpath(p, root)] = None if os.path.isdir(p) else open(p, "rb").read()
    return out


def user_files(root) -> None:
    (root / ".git").mkdir(parents=True)
    (root / ".git/HEAD").write_text("ref: refs/heads/main\n")
    (root / "thesis.txt").write_text("precious\n")


def test_sample_refuses_a_foreign_non_empty_folder(tmp_path, sample_args, capsys):
    """D23: --sample --dest <folder with user files> must not delete them; without --overwrite it refuses."""
    dest = tmp_path / "userdata"
    user_files(dest)
    before = tree(dest)
    with pytest.raises(SystemExit) as ex:
        fetcher.run_cli(fetcher.main, sample_args + ["--dest", str(dest)])
    assert ex.value.code == 2
    err = capsys.readouterr().err
    assert "is not empty and was not made by DatasetFetcher --sample" in err and "--overwrite" in err
    assert len(err.strip().splitlines()) == 1
    assert tree(dest) == before


def test_sample_dest_dot_never_deletes_user_files(tmp_path, sample_args, monkeypatch, capsys):
    """D24: --dest . refuses; with --overwrite the sample is written beside the user's files, which stay."""
    work = tmp_path / "work"
    user_files(work)
    (work / "eval").mkdir()
    (work / "eval/mine.txt").write_text("mine\n")  # a user file inside a folder the sample also writes
    monkeypatch.chdir(work)
    with pytest.raises(fetcher.FetchError, match="not empty"):
        fetcher.main(sample_args + ["--dest", "."])
    fetcher.main(sample_args + ["--dest", ".", "--overwrite"])
    assert (work / "thesis.txt").read_text() == "precious\n" and (work / ".git/HEAD").exists()
    assert (work / "eval/mine.txt").read_text() == "mine\n"
    assert (work / "sequences/sep_trainlist.txt").read_text().split() == ["00001/0001", "00001/0002"]
    marker = json.loads((work / fetcher.SAMPLE_MARKER).read_text())
    assert "thesis.txt" not in marker["files"] and "eval/mine.txt" not in marker["files"]
    assert "eval" not in marker["dirs"] and "sequences" in marker["dirs"]  # eval/ was the user's
    # a rerun (now with a marker) needs no --overwrite, rebuilds, and still keeps the user's files
    fetcher.main(sample_args[:-5] + ["--sample_sequences", "1", "--sample_eval_frames", "3", "-q", "--dest", "."])
    assert (work / "sequences/sep_trainlist.txt").read_text().split() == ["00001/0001"]
    assert not (work / "sequences/00001/0002").exists()  # the old sample's extra septuplet is gone
    assert (work / "thesis.txt").read_text() == "precious\n" and (work / ".git/HEAD").exists()
    assert (work / "eval/mine.txt").read_text() == "mine\n"
    assert not [n for n in os.listdir(work) if n.startswith(".iseebetter_sample_tmp")]


def test_sample_rerun_removes_only_what_it_wrote(tmp_path, sample_args):
    dest = tmp_path / "s"
    fetcher.main(sample_args + ["--dest", str(dest)])
    first = tree(dest)
    (dest / "sequences/notes.txt").write_text("my notes\n")  # the user adds files to the sample folder
    (dest / "runs").mkdir()
    (dest / "runs/log.txt").write_text("log\n")
    fetcher.main(sample_args + ["--dest", str(dest)])
    assert (dest / "sequences/notes.txt").read_text() == "my notes\n"
    assert (dest / "runs/log.txt").read_text() == "log\n"
    after = tree(dest)
    del after["sequences/notes.txt"], after["runs"], after["runs/log.txt"]
    assert after == first  # same sample again, nothing else changed


def test_sample_marker_cannot_point_outside_or_at_user_files(tmp_path, sample_args):
    """A tampered marker never makes the rebuild delete anything outside the sample or through a link."""
    dest = tmp_path / "s"
    fetcher.main(sample_args + ["--dest", str(dest)])
    victim = tmp_path / "victim.txt"
    victim.write_text("keep\n")
    linked = tmp_path / "linked"
    linked.mkdir()
    (linked / "keep.txt").write_text("keep\n")
    os.symlink(linked, dest / "link")
    marker = json.loads((dest / fetcher.SAMPLE_MARKER).read_text())
    marker["files"] += ["../victim.txt", str(victim), "link/keep.txt"]
    marker["dirs"] += ["..", "link"]
    (dest / fetcher.SAMPLE_MARKER).write_text(json.dumps(marker))
    fetcher.main(sample_args + ["--dest", str(dest)])
    assert victim.read_text() == "keep\n" and (linked / "keep.txt").read_text() == "keep\n"
    assert (dest / "link").is_symlink()


def test_failed_rebuild_keeps_the_previous_sample(tmp_path, sample_args):
    dest = tmp_path / "s"
    fetcher.main(sample_args + ["--dest", str(dest)])
    before = tree(dest)
    short = make_clip(tmp_path / "short.mp4", 4, 0)
    args = list(sample_args)
    args[args.index("--clips") + 1] = str(short)
    with pytest.raises(fetcher.FetchError, match="needs 7"):
        fetcher.main(args + ["--dest", str(dest)])
    assert tree(dest) == before  # no half sample, no temporary folder left


def test_sample_damaged_marker_and_stale_temp_folders(tmp_path, sample_args):
    """A damaged marker is refused (--overwrite rebuilds); temp folders of dead runs of this host are cleaned."""
    dest = tmp_path / "s"
    fetcher.main(sample_args + ["--dest", str(dest)])
    (dest / fetcher.SAMPLE_MARKER).write_text("{not json")
    with pytest.raises(fetcher.FetchError, match="damaged"):
        fetcher.main(sample_args + ["--dest", str(dest)])
    proc = subprocess.Popen(["true"])
    proc.wait()  # its pid is no longer running
    dead = dest / f"{fetcher._SAMPLE_TMP}{atomic._HOST}_{proc.pid}_abc"
    other_host = dest / f"{fetcher._SAMPLE_TMP}{'0' * 8 if atomic._HOST != '0' * 8 else '1' * 8}_{proc.pid}_abc"
    for d in (dead, other_host):
        (d / "sequences").mkdir(parents=True)
    fetcher.main(sample_args + ["--dest", str(dest), "--overwrite"])
    assert not dead.exists() and (other_host / "sequences").is_dir()
    assert json.loads((dest / fetcher.SAMPLE_MARKER).read_text())["files"]


def test_sample_conflicting_path_is_a_clear_error(tmp_path, sample_args):
    """With --overwrite, a user folder where the sample writes a file (or a link where it needs a folder) is
    refused before anything is written."""
    dest = tmp_path / "s"
    (dest / "manifest.json").mkdir(parents=True)
    (dest / "manifest.json/x").write_text("x\n")
    with pytest.raises(fetcher.FetchError, match="in the way"):
        fetcher.main(sample_args + ["--dest", str(dest), "--overwrite"])
    assert sorted(tree(dest)) == ["manifest.json", "manifest.json/x"]
    other = tmp_path / "elsewhere"
    other.mkdir()
    dest2 = tmp_path / "s2"
    dest2.mkdir()
    os.symlink(other, dest2 / "sequences")
    with pytest.raises(fetcher.FetchError, match="symbolic link"):
        fetcher.main(sample_args + ["--dest", str(dest2), "--overwrite"])
    assert os.listdir(other) == [] and os.listdir(dest2) == ["sequences"]


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


def test_archive_without_sequences_is_not_reported_ready(server, tmp_path, capsys):
    """A zip that extracts fine but holds no sequences/ is not a Vimeo archive: an error, not 'ready'."""
    serve_zip(server, lambda zf: zf.writestr("top/readme.txt", "hello\n"))
    assert run_fetch(server, tmp_path / "v") == 2
    err = capsys.readouterr().err
    assert "not a Vimeo-90K septuplet archive" in err and "ready" not in err
