"""denoise_movies: the trainer's --denoise movies read, checked (blank and corrupt frames, outlier pixels, one
warning each, frames from 0) and normalised; movies without a usable frame refused in the trainer's words."""

import argparse

import numpy as np
import pytest
from test_scans import asd_bytes, levels

from denoise_movies import read_movies
from errors import UserError


def _args(**kw) -> argparse.Namespace:
    return argparse.Namespace(**dict(dict(channel=None, keep_truncated=False, level=True), **kw))


def _noisy(t=8, size=16, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    slope = np.linspace(0.0, 2.0, size)[None, None, :]
    return (slope + rng.normal(0.0, 0.2, (t, size, size))).astype(np.float32)


def _warnings(caplog) -> list:
    return [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]


def test_a_spike_is_reported_and_blanks_no_frame(tmp_path, caplog):
    """Issue 22 (E08): one 1e4 pixel made the other 7 frames 'blank' and training refused the movie."""
    movie = _noisy()
    movie[3, 5, 5] = 1e4
    path = tmp_path / "spike.npy"
    np.save(path, movie)
    with caplog.at_level("WARNING"):
        (prepared,) = read_movies(str(path), "--data_dir", _args())
    assert prepared.blank == [] and prepared.corrupt == []
    (line,) = _warnings(caplog)
    assert line.startswith(f"--data_dir {path}: frame 3 (frames 0-7): 1 outlier pixel (the most extreme is 1e+04")
    assert "0 blank;" in prepared.describe() and "corrupt" not in prepared.describe()


def test_a_corrupt_frame_is_skipped_and_named_corrupt(tmp_path, caplog):
    movie = _noisy()
    movie[2].ravel()[:120] = np.random.default_rng(1).uniform(-1e3, 1e3, 120)
    movie[5] = 7.0
    path = tmp_path / "bad.npy"
    np.save(path, movie)
    with caplog.at_level("WARNING"):
        (prepared,) = read_movies(str(path), "--eval_dir", _args())
    assert prepared.blank == [2, 5] and prepared.corrupt == [2]
    assert "1 blank, 1 corrupt;" in prepared.describe()
    lines = _warnings(caplog)
    assert lines[0] == (f"--eval_dir {path}: blank (constant) frame(s) 5 (frames 0-7): skipped: kept as it is, "
                        "never used as a neighbour or for training")
    assert lines[1].startswith(f"--eval_dir {path}: frame 2 (frames 0-7): corrupt (")


def test_a_movie_without_a_usable_frame_is_refused_in_the_trainers_words(tmp_path):
    """Issue 22 (D17): the trainer keeps refusing such a movie (the tester passes it through)."""
    movie = np.stack([np.full((16, 16), v, np.float32) for v in (1.0, 1.0, 2.0, 3.0)])
    path = tmp_path / "flat.npy"
    np.save(path, movie)
    with pytest.raises(UserError) as err:
        read_movies(str(path), "--data_dir", _args())
    assert str(err.value) == (f"--data_dir {path}: all 4 frames of the movie are blank (constant); nothing to train "
                              "on: leave it out of --data_dir")


def test_keep_truncated_keeps_the_complete_frames_of_an_asd(tmp_path):
    path = tmp_path / "cut.asd"
    path.write_bytes(asd_bytes(1, [levels(t=6, h=12, w=12), levels(t=6, h=12, w=12, seed=1)])[:-1])
    with pytest.raises(UserError, match="or pass --keep_truncated to keep the 6 complete frames"):
        read_movies(str(path), "--data_dir", _args())
    with pytest.warns(UserWarning, match="keeping the 6 complete frames"):
        (prepared,) = read_movies(str(path), "--data_dir", _args(keep_truncated=True))
    assert prepared.frames.shape == (6, 12, 12, 1)
