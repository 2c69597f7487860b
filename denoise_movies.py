"""The trainer's ``--denoise`` data: the movies at ``--data_dir`` / ``--eval_dir`` read, checked
(``frame_check.check_frames``: blank and corrupt frames, outlier pixels, each finding one warning) and normalised one
by one, their time-binned and resized copies (``--temporal_bin``, ``--spatial_scale``), and the ``DenoiseDataset``
cut from them (``--target``). Errors name the option and the movie; frames count from 0.
"""

from __future__ import annotations

import argparse
import warnings
from dataclasses import dataclass, field
from typing import Dict, List

import numpy as np

import denoise_data
import logger
import scans
from errors import UserError
from frame_check import check_frames, describe_findings


@dataclass
class PreparedMovie:
    """One movie read with ``scans.read_movie`` and normalised with ``denoise_data.preprocess``."""

    path: str
    frames: np.ndarray  # float32 (T, H, W, C) in [0, 1]
    blank: List[int]  # skipped frames: blank (constant) or corrupt
    normalisation: denoise_data.Normalisation
    channel: str
    corrupt: List[int] = field(default_factory=list)  # the corrupt ones among ``blank``

    @property
    def channels(self) -> int:
        return int(self.frames.shape[3])

    def describe(self) -> str:
        t, h, w, c = self.frames.shape
        norm = self.normalisation
        unit = f" {norm.unit}" if norm.unit else ""
        levelled = "levelled, " if norm.levelled else ""
        corrupt = f", {len(self.corrupt)} corrupt" if self.corrupt else ""
        return (f"{self.path}: {t} frames of {w}x{h} px, {c} channel{'s' if c > 1 else ''} ({self.channel}), "
                f"{len(self.blank) - len(self.corrupt)} blank{corrupt}; {levelled}[{norm.lo:.6g}, {norm.hi:.6g}]"
                f"{unit} -> [0, 1]")


def read_movie(movie_path: str, option: str, args: argparse.Namespace) -> PreparedMovie:
    """One movie read with ``--channel`` (``--keep_truncated``), checked (each finding a warning) and preprocessed
    with ``--level``; a movie without a usable frame is refused."""
    movie = scans.read_movie(movie_path, channel=args.channel, keep_truncated=args.keep_truncated)  # names the file
    check = check_frames(movie.frames, unit=movie.unit)
    skipped = set(check.skipped) | set(movie.blank)
    if len(skipped) == len(movie.frames):
        what = "blank (constant) or corrupt" if check.corrupt else "blank (constant)"
        raise UserError(f"{option} {movie_path}: all {len(skipped)} frames of the movie are {what}; nothing to "
                        f"train on: leave it out of {option}")
    for line in describe_findings(check, f"{option} {movie_path}", extra_blank=movie.blank):
        logger.warning(line)
    try:
        frames, norm, blank = denoise_data.preprocess(movie.frames, level=args.level, unit=movie.unit,
                                                      extra_blank=movie.blank, check=check)
    except UserError as exc:
        raise UserError(f"{option} {movie_path}: {exc}") from None
    return PreparedMovie(movie_path, frames, blank, norm, movie.channel, corrupt=list(check.corrupt))


def read_movies(path: str, option: str, args: argparse.Namespace) -> List[PreparedMovie]:
    """Every movie at ``path`` (``scans.find_movies``), each by ``read_movie``.

    All movies must have the same number of channels. Errors name ``option`` and the movie.
    """
    try:
        paths = scans.find_movies(path)
    except UserError as exc:
        raise UserError(f"{option}: {exc}") from None
    movies = [read_movie(movie_path, option, args) for movie_path in paths]
    kinds = {m.channels: m for m in movies}
    if len(kinds) > 1:
        shown = "; ".join(f"{m.path} has {m.channels} channel{'s' if m.channels > 1 else ''}"
                          for m in kinds.values())
        raise UserError(f"{option}: the movies mix grey and colour data ({shown}); train on one kind: keep them in "
                        "separate folders")
    return movies


def check_movie_channels(movies: List[PreparedMovie], option: str, channels: int, what: str) -> None:
    """Refuse movies whose channel count differs from the generator's (``what`` names the generator)."""
    def kind(n: int) -> str:
        return f"{'grey' if n == 1 else 'colour'} ({n} channel{'s' if n > 1 else ''})"

    if movies[0].channels != channels:
        raise UserError(f"{option}: the movies are {kind(movies[0].channels)} but {what} is {kind(channels)}; use "
                        "movies of the same kind")


def augmented_movies(movies: List[PreparedMovie], bins: List[int], scales: List[float]) -> List[PreparedMovie]:
    """The training movies for every combination of ``--temporal_bin`` (``denoise_data.temporal_bin``) and
    ``--spatial_scale`` (``denoise_data.spatial_scale``); (1, 1) is the movies as they are. A version too short or
    too small for any sample is left to the dataset, which skips it with a warning."""
    out = []
    for factor in sorted(set(bins)):
        binned = [(m, *denoise_data.temporal_bin(m.frames, m.blank, factor)) for m in movies]
        for scale in sorted(set(scales), reverse=True):
            for m, frames, blank in binned:
                if not len(frames):
                    continue
                frames = denoise_data.spatial_scale(frames, scale)
                tag = "".join(([f"#bin{factor}"] if factor > 1 else []) + ([f"#scale{scale:g}"] if scale < 1 else []))
                out.append(PreparedMovie(m.path + tag, frames, blank, m.normalisation, m.channel))
    if not out:
        raise UserError(f"--temporal_bin {' '.join(map(str, bins))}: every movie is shorter than one bin")
    return out


def check_movie_lengths(movies: List[PreparedMovie], option: str, args: argparse.Namespace, n_frames: int) -> None:
    """Refuse movies that are all shorter than one sample's window of consecutive frames."""
    needed = denoise_data.window_length(args.target, n_frames)
    longest = max(movies, key=lambda m: m.frames.shape[0])
    count = longest.frames.shape[0]
    if count >= needed:
        return
    which = f"{option} {longest.path}: the movie has" if len(movies) == 1 else \
        f"{option}: every movie is too short (the longest, {longest.path}, has"
    close = "" if len(movies) == 1 else ")"
    raise UserError(f"{which} {count} frames{close}, but --target {args.target} with --nFrames {n_frames} needs "
                    f"{needed} consecutive frames per sample; use longer movies or a smaller --nFrames")


def build_denoise_set(movies: List[PreparedMovie], args: argparse.Namespace, config: Dict, training: bool,
                      option: str) -> denoise_data.DenoiseDataset:
    """A ``DenoiseDataset`` of the movies: random patches and augmentation for training, whole frames otherwise.

    The dataset's warnings (a movie skipped for want of consecutive non-blank frames) go to the log.
    """
    check_movie_lengths(movies, option, args, config["nFrames"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            data = denoise_data.DenoiseDataset(
                [m.frames for m in movies], blanks=[m.blank for m in movies], names=[m.path for m in movies],
                n_frames=config["nFrames"], target=args.target, patch_size=args.patch_size if training else 0,
                training=training, data_augmentation=args.data_augmentation and training, warping=args.warping,
                flows=args.flows, flow_cache=args.flow_cache, flow_threads=args.flow_threads,
                base=args.residual_base if args.residual else "frame",
            )
        except UserError as exc:
            raise UserError(f"{option}: {exc}") from None
    for warning in caught:
        logger.warning(f"{option}: {warning.message}")
    return data
