"""Datasets: the original's sample pipeline, flow cache transforms, video folders, and clear errors on bad data."""

import os
import warnings

import numpy as np
import pytest
import torch
from conftest import moving_frames
from PIL import Image

import dataset
import flow_cache
import video_io
from data import get_test_set, get_training_set
from dataset import (
    DataError,
    DatasetFromFolder,
    DatasetFromFolderTest,
    VideoFolderDataset,
    degrade,
    modcrop,
    neighbour_offsets,
    numbered_neighbour,
)
from imresize import imresize
from video_io import save_rgb


def shifted_frames(n=7, height=128, width=128, step=4, seed=0):
    """Smooth texture moving left by ``step`` HR px per frame (``step / 4`` LR px at x4)."""
    big = moving_frames(1, height + 16, width + step * n + 16, seed)[0]
    return [np.ascontiguousarray(big[8 : 8 + height, step * t : step * t + width]) for t in range(n)]


def make_vimeo(root, n_seq=2, size=(128, 128)):
    seq = root / "sequences"
    lines = []
    for s in range(n_seq):
        rel = f"00001/{s + 1:04d}"
        for k, img in enumerate(shifted_frames(height=size[0], width=size[1], seed=s), start=1):
            save_rgb(str(seq / rel / f"im{k}.png"), img)
        lines.append(rel)
    (seq / "sep_trainlist.txt").write_text("\n".join(lines) + "\n")
    return seq


@pytest.fixture
def fake_flows(monkeypatch):
    """Replace pyflow by a recorder returning u = mean(neighbour) - mean(centre) so calls are cheap and checkable."""
    calls = []

    def flows(center, neighbours, threads=0):
        calls.append((center.copy(), [n.copy() for n in neighbours]))
        h, w = center.shape[:2]
        return [np.full((2, h, w), float(n.mean()) - float(center.mean()), np.float32) for n in neighbours]

    monkeypatch.setattr(dataset, "compute_flows", flows)
    return calls


def test_modcrop_and_degrade_methods():
    img = moving_frames(1, 66, 99)[0]
    hr = modcrop(img, 4)
    assert hr.shape == (64, 96, 3)
    np.testing.assert_array_equal(degrade(hr, 4, "pil"),
                                  np.asarray(Image.fromarray(hr).resize((24, 16), Image.BICUBIC)))
    np.testing.assert_array_equal(degrade(hr, 4, "matlab"), imresize(hr, 0.25))
    assert degrade(hr, 4, "pil").dtype == np.uint8


def test_neighbour_order_as_original():
    assert neighbour_offsets(7, True) == [-3, -2, -1, 1, 2, 3]
    assert neighbour_offsets(7, False) == [-1, -2, -3, -4, -5, -6]
    assert neighbour_offsets(6, True) == [-3, -2, -1, 1, 2]
    assert numbered_neighbour("foliage/001.png", 2) == "foliage/003.png"
    assert numbered_neighbour("AMVTG_004/truth/0009.png", 3) == "AMVTG_004/truth/0012.png"
    assert numbered_neighbour("a/001.png", -2) is None


def test_vimeo_sample_shapes_and_neighbour_frames(tmp_path, fake_flows):
    seq = make_vimeo(tmp_path)
    ds = DatasetFromFolder(str(seq), 7, 4, False, "sep_trainlist.txt", False, 16, True)
    assert len(ds) == 2
    inp, tgt, nbs, flows, bic = ds[0]
    assert inp.shape == (3, 16, 16) and tgt.shape == (3, 64, 64) and bic.shape == (3, 64, 64)
    assert len(nbs) == 6 and len(flows) == 6
    assert all(f.shape == (2, 16, 16) and f.dtype == torch.float32 for f in flows)
    assert inp.dtype == torch.float32 and 0 <= inp.min() and inp.max() <= 1
    # neighbours are im1, im2, im3, im5, im6, im7 at the same crop: compare with the full LR frames
    frames = shifted_frames(seed=0)
    lr_full = [degrade(f, 4) for f in frames]
    assert not np.array_equal(lr_full[0], lr_full[3])
    centre = (inp.numpy().transpose(1, 2, 0) * 255).round().astype(np.uint8)
    hits = [(y, x) for y in range(17) for x in range(17) if np.array_equal(lr_full[3][y : y + 16, x : x + 16], centre)]
    assert hits
    y, x = hits[0]
    for nb, k in zip(nbs, [0, 1, 2, 4, 5, 6]):
        got = (nb.numpy().transpose(1, 2, 0) * 255).round().astype(np.uint8)
        np.testing.assert_array_equal(got, lr_full[k][y : y + 16, x : x + 16])
    np.testing.assert_array_equal((tgt.numpy().transpose(1, 2, 0) * 255).round().astype(np.uint8),
                                  frames[3][4 * y : 4 * y + 64, 4 * x : 4 * x + 64])
    # flows are computed on the (augmented) LR patches themselves
    c, n = fake_flows[-1]
    np.testing.assert_array_equal(c, centre)


def test_augmentation_applies_to_every_frame_before_flow(tmp_path, fake_flows, monkeypatch):
    seq = make_vimeo(tmp_path, n_seq=1)
    monkeypatch.setattr(dataset, "random_augment", lambda rng: {"flip": True, "mirror": True, "rot180": False})
    ds = DatasetFromFolder(str(seq), 7, 4, True, "sep_trainlist.txt", False, 0, True)
    inp, tgt, nbs, _, bic = ds[0]
    frames = shifted_frames(seed=0)
    lr = degrade(frames[3], 4)
    np.testing.assert_array_equal((inp.numpy().transpose(1, 2, 0) * 255).round(), lr[::-1, ::-1])
    np.testing.assert_array_equal((tgt.numpy().transpose(1, 2, 0) * 255).round(), frames[3][::-1, ::-1])
    np.testing.assert_array_equal((nbs[0].numpy().transpose(1, 2, 0) * 255).round(), degrade(frames[0], 4)[::-1, ::-1])
    np.testing.assert_array_equal(fake_flows[-1][0], lr[::-1, ::-1])
    expected_bic = np.asarray(Image.fromarray(np.ascontiguousarray(lr[::-1, ::-1])).resize((128, 128), Image.BICUBIC))
    np.testing.assert_array_equal((bic.numpy().transpose(1, 2, 0) * 255).round(), expected_bic)


def test_real_flow_follows_motion_and_mirror(tmp_path, monkeypatch):
    pyflow = pytest.importorskip("pyflow")
    if not hasattr(pyflow, "rbpn_flows"):
        pytest.skip("pyflow not built")
    seq = make_vimeo(tmp_path, n_seq=1, size=(256, 256))
    ds = DatasetFromFolder(str(seq), 7, 4, False, "sep_trainlist.txt", False, 0, True, flow_threads=1)
    _, _, _, flows, _ = ds[0]
    # the texture moves left 1 LR px per frame: centre(x) ~ neighbour(x + u) with u = -offset
    for f, k in zip(flows, [-3, -2, -1, 1, 2, 3]):
        assert float(f[0, 8:-8, 8:-8].mean()) == pytest.approx(-k, abs=0.2)
        assert abs(float(f[1, 8:-8, 8:-8].mean())) < 0.2
    # mirrored sample: u changes sign, computed after augmentation
    ds.data_augmentation = True
    monkeypatch.setattr(dataset, "random_augment", lambda rng: {"flip": False, "mirror": True, "rot180": False})
    _, _, _, flows_m, _ = ds[0]
    for f, k in zip(flows_m, [-3, -2, -1, 1, 2, 3]):
        assert float(f[0, 8:-8, 8:-8].mean()) == pytest.approx(k, abs=0.2)


def test_flow_cache_transform_matches_augmentation():
    h, w = 6, 8
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    flow = np.stack([xx + 100 * yy, -(xx + 100 * yy) - 0.5])[None]  # distinguishable values
    crop = flow[0][:, 1:5, 2:6]
    out = flow_cache.crop_and_augment(flow.astype(np.float16), 1, 2, 4, 4, {})[0]
    np.testing.assert_allclose(out, crop, rtol=1e-3)
    m = flow_cache.crop_and_augment(flow, 1, 2, 4, 4, {"mirror": True})[0]
    np.testing.assert_allclose(m, np.stack([-crop[0][:, ::-1], crop[1][:, ::-1]]))
    f = flow_cache.crop_and_augment(flow, 1, 2, 4, 4, {"flip": True})[0]
    np.testing.assert_allclose(f, np.stack([crop[0][::-1], -crop[1][::-1]]))
    r = flow_cache.crop_and_augment(flow, 1, 2, 4, 4, {"rot180": True})[0]
    np.testing.assert_allclose(r, -crop[:, ::-1, ::-1])


def test_flow_cache_is_filled_once_and_reused(tmp_path, fake_flows):
    seq = make_vimeo(tmp_path, n_seq=1)
    cache = tmp_path / "cache"
    ds = DatasetFromFolder(str(seq), 7, 4, True, "sep_trainlist.txt", False, 16, True, flow_cache=str(cache))
    ds[0]
    assert len(fake_flows) == 1 and fake_flows[0][0].shape == (32, 32, 3)  # whole LR frame
    files = [os.path.join(d, n) for d, _, ns in os.walk(cache) for n in ns]
    assert len(files) == 1 and np.load(files[0]).dtype == np.float16
    for _ in range(3):
        _, _, _, flows, _ = ds[0]
        assert flows[0].shape == (2, 16, 16)
    assert len(fake_flows) == 1


def test_other_dataset_missing_neighbour_warns_once_and_uses_centre(tmp_path, fake_flows):
    clip = tmp_path / "clip"
    for i, img in enumerate(shifted_frames(3), start=1):
        save_rgb(str(clip / f"{i:03d}.png"), img)
    (tmp_path / "clip.txt").write_text("clip/001.png\nclip/002.png\n")
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        ds = DatasetFromFolderTest(str(tmp_path), 5, 4, "clip.txt", True, True)
        inp, _, nbs, _, _ = ds[0]
        ds[0]
    assert len([r for r in rec if "missing" in str(r.message)]) == 1
    # offsets -2, -1 missing (frame 0 and -1), +1 = 002, +2 = 003
    assert torch.equal(nbs[0], inp) and torch.equal(nbs[1], inp)
    assert not torch.equal(nbs[2], inp)


def test_upscale_only_keeps_input_resolution(tmp_path, fake_flows):
    clip = tmp_path / "clip"
    for i, img in enumerate(shifted_frames(3, 30, 42), start=1):
        save_rgb(str(clip / f"{i:03d}.png"), img)
    (tmp_path / "list.txt").write_text("clip/002.png\n")
    inp, tgt, nbs, flows, bic = get_test_set(str(tmp_path), 3, 4, "list.txt", True, True, upscale_only=True)[0]
    assert inp.shape == (3, 30, 42) and torch.equal(inp, tgt) and bic.shape == (3, 120, 168)
    assert flows[0].shape == (2, 30, 42)


def test_video_folder_dataset_from_video_and_frames(tmp_path, video_file, frame_folder, fake_flows):
    ds = get_training_set(str(tmp_path), 3, 4, True, "sep_trainlist.txt", False, 8, True)
    assert isinstance(ds, VideoFolderDataset)
    assert len(ds) == 12  # two sources of 8 frames, centres 1..6
    inp, tgt, nbs, flows, _ = ds[7]
    assert inp.shape == (3, 8, 8) and tgt.shape == (3, 32, 32) and len(nbs) == 2 and len(flows) == 2
    single = get_training_set(str(video_file), 7, 4, False, "x.txt", False, 0, True)
    assert len(single) == 2
    assert single[1][1].shape == (3, 64, 96)


def test_bad_data_errors_name_the_file(tmp_path, fake_flows):
    seq = make_vimeo(tmp_path, n_seq=2)
    with pytest.raises(DataError, match="nolist.txt"):
        DatasetFromFolder(str(seq), 7, 4, True, "nolist.txt", False, 16, True)
    (seq / "empty.txt").write_text("\n\n")
    with pytest.raises(DataError, match="empty.txt"):
        DatasetFromFolder(str(seq), 7, 4, True, "empty.txt", False, 16, True)
    with pytest.raises(DataError, match="smaller than patch_size"):
        DatasetFromFolder(str(seq), 7, 4, True, "sep_trainlist.txt", False, 64, True)
    ds = DatasetFromFolder(str(seq), 7, 4, True, "sep_trainlist.txt", False, 16, True)
    (seq / "00001/0002/im2.png").write_bytes(b"garbage")
    with pytest.raises(DataError, match="0002/im2.png"):
        ds[1]
    os.remove(seq / "00001/0002/im2.png")
    with pytest.raises(DataError, match="0002/im2.png"):
        ds[1]
    save_rgb(str(seq / "00001/0002/im2.png"), shifted_frames(1, 120, 128)[0])
    with pytest.raises(DataError, match="one size"):
        ds[1]
    bad = tmp_path / "videos"
    bad.mkdir()
    (bad / "broken.mp4").write_bytes(b"\x00" * 500)
    with pytest.raises(DataError, match="broken.mp4"):
        get_training_set(str(bad), 3, 4, True, "sep_trainlist.txt", False, 8, True)


def test_error_in_dataloader_worker_keeps_one_line_message(tmp_path, fake_flows):
    seq = make_vimeo(tmp_path, n_seq=2)
    ds = DatasetFromFolder(str(seq), 7, 4, False, "sep_trainlist.txt", False, 16, True)
    (seq / "00001/0002/im5.png").write_bytes(b"garbage")
    loader = torch.utils.data.DataLoader(ds, batch_size=1, num_workers=1, shuffle=False)
    with pytest.raises(DataError) as info:
        list(loader)
    msg = str(info.value)
    assert "0002/im5.png" in msg and "\n" not in msg and "Traceback" not in msg


def test_flow_cache_key_of_a_stack_page_follows_the_stack_file(tmp_path):
    """A page of a TIFF stack has no file of its own: its key changes when the stack file is rewritten."""
    import tifffile

    stack = tmp_path / "s.tif"
    tifffile.imwrite(str(stack), np.zeros((3, 8, 8), np.uint8), photometric="minisblack")
    pages = video_io.list_frames(str(tmp_path))
    assert len(pages) == 3
    before = flow_cache.cache_key(pages, "x")
    tifffile.imwrite(str(stack), np.ones((3, 8, 9), np.uint8), photometric="minisblack")
    assert flow_cache.cache_key(pages, "x") != before
