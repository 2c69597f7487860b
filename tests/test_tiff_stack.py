"""tiff_stack and the frame readers of video_io: multi-page TIFF stacks read as stacks, page by page. Every stack is
written here by tifffile."""

import os

import cv2
import numpy as np
import pytest
import tifffile

import tiff_stack
from video_io import VideoError, frame_file, is_tiff_stack, list_frames, load_rgb, read_image


def grey_stack(path, pages=8, height=12, width=10, seed=0):
    """An 8-page 16-bit grey stack (the SPM export of the reliability matrix, D23)."""
    frames = np.random.default_rng(seed).integers(0, 65536, size=(pages, height, width), dtype=np.uint16)
    tifffile.imwrite(str(path), frames, photometric="minisblack")
    return frames


def test_a_folder_holding_one_stack_is_the_stacks_frames_in_order(tmp_path):
    frames = grey_stack(tmp_path / "scan.tif")
    paths = list_frames(str(tmp_path))
    assert [os.path.relpath(p, tmp_path) for p in paths] == [os.path.join("scan.tif", f"scan_{k:05d}")
                                                             for k in range(1, 9)]
    for path, expected in zip(paths, frames):
        page = read_image(path)
        assert page.dtype == np.uint16 and page.shape == (12, 10)
        np.testing.assert_array_equal(page, expected)
        assert frame_file(path) == str(tmp_path / "scan.tif")
    rgb = load_rgb(paths[5])  # 16-bit grey -> RGB uint8, as for a 16-bit PNG
    np.testing.assert_array_equal(rgb[..., 2], (frames[5] / 257.0).round().astype(np.uint8))


def test_a_stack_file_lists_its_own_pages(tmp_path):
    grey_stack(tmp_path / "s.tiff", pages=3)
    assert is_tiff_stack(str(tmp_path / "s.tiff"))
    assert [os.path.basename(p) for p in list_frames(str(tmp_path / "s.tiff"))] == ["s_00001", "s_00002", "s_00003"]


def test_colour_stacks_read_as_opencv_reads_colour(tmp_path):
    rgb = np.random.default_rng(1).integers(0, 256, size=(3, 8, 6, 3), dtype=np.uint8)
    tifffile.imwrite(str(tmp_path / "interleaved.tif"), rgb, photometric="rgb")
    tifffile.imwrite(str(tmp_path / "planar.tif"), np.moveaxis(rgb, -1, 1), photometric="rgb", planarconfig="separate")
    for name in ("interleaved.tif", "planar.tif"):
        pages = list_frames(str(tmp_path / name))
        assert len(pages) == 3
        for page, expected in zip(pages, rgb):
            np.testing.assert_array_equal(load_rgb(page), expected)
            np.testing.assert_array_equal(read_image(page), expected[..., ::-1])  # BGR, as cv2.imdecode gives
    cv2.imwrite(str(tmp_path / "one.tif"), rgb[0][..., ::-1])  # a single-page TIFF: OpenCV reads it, same layout
    assert list_frames(str(tmp_path / "one.tif")) == [str(tmp_path / "one.tif")]
    np.testing.assert_array_equal(load_rgb(str(tmp_path / "one.tif")), rgb[0])


def test_a_mixed_folder_expands_each_stack_in_natural_order(tmp_path):
    image = np.full((12, 10), 7, np.uint8)
    for name in ("f1.png", "f10.png", "f3.tif"):  # f3.tif: a single-page TIFF
        cv2.imwrite(str(tmp_path / name), image)
    grey_stack(tmp_path / "f2.tif", pages=3)
    names = [os.path.relpath(p, tmp_path) for p in list_frames(str(tmp_path))]
    assert names == ["f1.png", os.path.join("f2.tif", "f2_00001"), os.path.join("f2.tif", "f2_00002"),
                     os.path.join("f2.tif", "f2_00003"), "f3.tif", "f10.png"]


def test_reduced_resolution_pages_are_not_frames(tmp_path):
    path = tmp_path / "pyramid.tif"
    frames = grey_stack(path, pages=3)
    tifffile.imwrite(str(path), frames[0, ::2, ::2], photometric="minisblack", subfiletype=1, append=True)
    pages = list_frames(str(path))
    assert [os.path.basename(p) for p in pages] == ["pyramid_00001", "pyramid_00002", "pyramid_00003"]


def test_a_whole_stack_where_one_image_is_read_is_a_clear_error(tmp_path):
    grey_stack(tmp_path / "st.tif", pages=8)
    with pytest.raises(VideoError, match=r"st.tif is a multi-page TIFF stack \(8 pages\)"):
        read_image(str(tmp_path / "st.tif"))


def test_missing_pages_and_damaged_stacks_name_the_file(tmp_path):
    grey_stack(tmp_path / "st.tif", pages=2)
    with pytest.raises(VideoError, match="has 2 pages, not 5"):
        read_image(os.path.join(str(tmp_path / "st.tif"), "st_00005"))
    with pytest.raises(VideoError, match="frame not found"):
        read_image(os.path.join(str(tmp_path / "st.tif"), "other_00001"))  # not a page path of st.tif
    (tmp_path / "bad.tif").write_bytes(b"II*\x00" + b"\xff" * 60)  # a TIFF header, then garbage
    assert tiff_stack.page_paths(str(tmp_path / "bad.tif")) == [str(tmp_path / "bad.tif")]
    with pytest.raises(VideoError, match="bad.tif"):
        load_rgb(str(tmp_path / "bad.tif"))


def test_palette_pages_are_refused_not_read_as_grey(tmp_path):
    index = np.arange(2 * 8 * 6, dtype=np.uint8).reshape(2, 8, 6)
    colormap = np.zeros((3, 256), np.uint16)
    tifffile.imwrite(str(tmp_path / "pal.tif"), index, photometric="palette", colormap=colormap)
    with pytest.raises(VideoError, match="photometric"):
        read_image(list_frames(str(tmp_path / "pal.tif"))[0])
