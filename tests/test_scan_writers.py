"""scan_writers: TIFF stacks (ImageJ, OME) and .gwy files keep heights, units, pixel size and the record."""

import json

import numpy as np
import pytest

import scan_writers
from errors import UserError

RECORD = {"method": "mean5", "model": "weights/x.pth", "sha256": "ab12", "scores": {"mean5": 25.1}}


def movie(seed=0):
    rng = np.random.default_rng(seed)
    frames = rng.normal(0, 1, (4, 12, 16)).astype(np.float32)
    frames[1, 5, 5] = 1234.5  # a tall feature: never clipped
    return frames


def test_imagej_stack_round_trip(tmp_path):
    import tifffile

    path = str(tmp_path / "m.tif")
    scan_writers.write_tiff_stack(path, movie()[..., None], unit="nm", pixel_size=2.5, fps=4.0, record=RECORD)
    with tifffile.TiffFile(path) as tif:
        data = tif.asarray()
        meta = tif.imagej_metadata
        xres = tif.pages[0].tags["XResolution"].value
    np.testing.assert_array_equal(data, movie())
    assert meta["unit"] == "nm" and meta["finterval"] == pytest.approx(0.25)
    assert xres[1] / xres[0] == pytest.approx(2.5)  # pixels per unit -> 2.5 nm per pixel
    assert "z unit: nm" in meta["Info"] and json.loads(meta["Info"].split("\n", 1)[1]) == RECORD


def test_ome_stack_round_trip(tmp_path):
    import tifffile

    path = str(tmp_path / "m.ome.tif")
    scan_writers.write_tiff_stack(path, movie(), unit="nm", pixel_size=0.5, pixel_unit="µm", fps=2.0, record=RECORD)
    with tifffile.TiffFile(path) as tif:
        data = tif.asarray()
        ome = tif.ome_metadata
    np.testing.assert_array_equal(data, movie())
    assert 'PhysicalSizeX="0.5"' in ome and 'PhysicalSizeXUnit="µm"' in ome and "mean5" in ome


def test_gwy_round_trip_in_si_units(tmp_path):
    import gwyfile

    path = str(tmp_path / "m.gwy")
    scan_writers.write_gwy(path, movie(), unit="nm", pixel_size=2.0, pixel_unit="nm", record=RECORD)
    container = gwyfile.load(path)
    for t, frame in enumerate(movie()):
        field = container[f"/{t}/data"]
        np.testing.assert_allclose(field.data * 1e9, frame, rtol=1e-6)  # metres back to nm, heights kept
        assert container[f"/{t}/data/title"] == f"frame {t}"
        assert field.si_unit_z.unitstr == "m" and field.si_unit_xy.unitstr == "m"
        assert field.xreal == pytest.approx(16 * 2e-9) and field.yreal == pytest.approx(12 * 2e-9)
        assert container[f"/{t}/meta"]["method"] == "mean5"


def test_units_and_bad_shapes():
    assert scan_writers.to_si("nm") == ("m", 1e-9) and scan_writers.to_si("counts") == ("counts", 1.0)
    with pytest.raises(UserError, match="one channel"):
        scan_writers.write_tiff_stack("x.tif", np.zeros((2, 4, 4, 3)))
