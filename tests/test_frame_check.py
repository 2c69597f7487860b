"""frame_check: blank and corrupt frames and outlier pixels from robust per-frame statistics."""

import numpy as np
import pytest

from frame_check import PASS_ACTION, SKIP_ACTION, check_frames, describe_findings, frame_numbers, frame_span


def noisy_movie(t=8, h=32, w=32, channels=1, seed=0) -> np.ndarray:
    """float64 (T, H, W, C) in [0, 1]: a smooth slope plus noise, different in every frame."""
    rng = np.random.default_rng(seed)
    slope = np.linspace(0.2, 0.8, w)[None, None, :, None]
    return np.clip(slope + rng.normal(0, 0.05, size=(t, h, w, channels)), 0, 1)


def test_one_spike_is_an_outlier_and_no_frame_is_blank():
    movie = noisy_movie()
    movie[3, 5, 5] = 1e4
    check = check_frames(movie)
    assert check.blank == [] and check.corrupt == [] and check.skipped == []
    assert check.outliers == {3: 1}
    assert [(f.frame, f.kind, f.pixels) for f in check.findings] == [(3, "outliers", 1)]
    mask = check.outlier_mask(movie)
    assert mask.shape == movie.shape and mask.sum() == 1 and mask[3, 5, 5, 0]


def test_constant_and_nearly_constant_frames_are_blank_despite_a_spike():
    movie = noisy_movie()
    movie[3, 5, 5] = 1e4
    movie[1] = 0.3
    movie[6] = 0.4 + np.random.default_rng(1).normal(0, 1e-6, size=movie[6].shape)  # spread << 1e-3 x typical
    movie[6, 0, 0] = 0.9  # one bright pixel does not make a blank frame usable
    check = check_frames(movie)
    assert check.blank == [1, 6] and check.corrupt == [] and check.outliers == {3: 1}
    assert check_frames(movie, tol=0.0).blank == [1]
    assert check_frames(np.full((3, 4, 4), 2.0)).blank == [0, 1, 2]
    assert check_frames(np.random.rand(4, 1, 1)).blank == [0, 1, 2, 3]  # 1x1 frames are constant


def test_a_garbage_frame_is_corrupt_and_does_not_blank_the_others():
    rng = np.random.default_rng(2)
    movie = 100.0 + rng.normal(0, 0.5, size=(8, 16, 16, 1))
    movie[0].ravel()[20:120] = rng.uniform(-5000, 5000, size=100)  # 100 of 256 values garbage
    check = check_frames(movie, unit="nm")
    assert check.corrupt == [0] and check.blank == [] and check.skipped == [0]
    assert check.outliers == {}  # the garbage is reported with the corrupt frame, not as outliers
    (finding,) = check.findings
    assert finding.kind == "corrupt" and finding.frame == 0 and 90 <= finding.pixels <= 100
    assert not check.outlier_mask(movie)[0].any()  # skipped frames are not masked: they are left out whole


def test_a_garbage_frame_counts_only_its_garbage_when_the_movie_drifts_in_height():
    """HS-AFM frames drift by many in-frame spreads from scan to scan: the corrupt frame's pixel count follows its
    own median, so only the garbage values count."""
    rng = np.random.default_rng(6)
    movie = noisy_movie() + 10.0 * np.arange(8)[:, None, None, None]  # 10 per frame; in-frame spread about 0.8
    movie[0].ravel()[:100] = rng.uniform(-5000, 5000, size=100)
    check = check_frames(movie)
    assert check.corrupt == [0] and check.blank == [] and check.outliers == {}
    assert 90 <= check.findings[0].pixels <= 100


def test_a_frame_shifted_far_from_its_neighbours_is_corrupt():
    movie = noisy_movie(t=9)
    movie[4] += 1e3  # same spread, median 1000 spreads away
    check = check_frames(movie)
    assert check.corrupt == [4] and check.blank == []
    assert "neighbour spreads" in check.findings[0].detail


def test_non_finite_values_are_outliers_and_a_frame_without_finite_values_is_corrupt():
    movie = noisy_movie(t=6)
    movie[2, 0, :3] = np.nan
    movie[2, 1, 0] = np.inf
    movie[5] = np.nan
    check = check_frames(movie)
    assert check.outliers == {2: 4} and check.corrupt == [5] and check.blank == []
    assert "4 NaN or infinite" in check.findings[0].detail
    assert "no finite value" in check.findings[1].detail


def test_colour_outliers_count_pixels_not_values():
    movie = noisy_movie(channels=3)
    movie[2, 4, 4, :] = -1e5
    movie[2, 7, 1, 1] = 1e5
    check = check_frames(movie)
    assert check.outliers == {2: 2} and check.outlier_mask(movie)[2].sum() == 4


def test_sparse_features_are_neither_blank_nor_outliers():
    """Frames that are flat except for a few tall features (p99 == p1): nothing is blank or an outlier."""
    movie = np.zeros((5, 20, 20, 1))
    for t in range(5):
        movie[t, 3 + t, 4] = 50.0
    check = check_frames(movie)
    assert check.blank == [] and check.corrupt == [] and check.outliers == {}


def test_short_movies():
    one = check_frames(np.random.default_rng(3).random((1, 8, 8)))
    assert one.blank == one.corrupt == [] and one.outliers == {}
    pair = np.random.default_rng(4).random((2, 8, 8))
    pair[1] *= 1e4  # the typical spread is the smaller one's (lower median): the wide frame is corrupt
    assert check_frames(pair).blank == [] and check_frames(pair).corrupt == [1]
    with pytest.raises(ValueError, match="expected a movie"):
        check_frames(np.zeros((4, 4)))


def test_describe_findings_gives_one_line_per_finding():
    movie = noisy_movie(t=12)
    movie[3, 5, 5] = 1e4
    movie[3, 6, 6] = -1e4
    movie[7] = 0.5
    movie[9].ravel()[:400] = np.random.default_rng(5).uniform(-1e3, 1e3, size=400)
    lines = describe_findings(check_frames(movie, unit="nm"), "scan")
    assert len(lines) == 3 and all("\n" not in line for line in lines)
    # Frames count from 0, as in metrics.json and the tester's PNG names.
    assert lines[0].startswith("scan: blank (constant) frame(s) 7 (frames 0-11): skipped")
    assert lines[1].startswith("scan: frame 3 (frames 0-11): 2 outlier pixels (the most extreme is ")
    assert " nm" in lines[1] and "not replaced" in lines[1]
    assert lines[2].startswith("scan: frame 9 (frames 0-11): corrupt (its values spread ") and "never used" in lines[2]
    assert describe_findings(check_frames(noisy_movie())) == []
    extra = describe_findings(check_frames(noisy_movie()), "m", extra_blank=[2])
    assert extra == [f"m: blank (constant) frame(s) 2 (frames 0-7): {SKIP_ACTION}"]


def test_describe_findings_says_what_the_caller_does_with_skipped_frames():
    movie = noisy_movie(t=12)
    movie[3, 5, 5] = 1e4
    movie[7] = 0.5
    movie[9].ravel()[:400] = np.random.default_rng(5).uniform(-1e3, 1e3, size=400)
    lines = describe_findings(check_frames(movie), "scan", skip_action=PASS_ACTION)
    assert lines[0] == f"scan: blank (constant) frame(s) 7 (frames 0-11): {PASS_ACTION}"
    assert lines[2].endswith(f"; {PASS_ACTION}") and "training" not in " ".join(lines)
    assert lines[1].endswith("not replaced")  # outlier pixels: the frame is used either way
    assert frame_span(1) == "frame 0 only" and frame_span(8) == "frames 0-7"


def test_describe_findings_caps_the_lines():
    movie = noisy_movie(t=20)
    for t in range(20):
        movie[t, 0, 0] = 1e4
    lines = describe_findings(check_frames(movie), "m", shown=3)
    assert len(lines) == 4
    assert lines[3] == ("m: ... and 17 more finding(s): 0 corrupt frame(s), 17 outlier pixel(s) in 17 frame(s), in "
                        "frames 3, 4, 5, 6, 7, 8, 9, 10, ... (17 in all)")
    assert frame_numbers([0, 1, 2]) == "0, 1, 2"
