"""Writing denoised SPM/AFM movies as SPM people keep them: multi-page TIFF stacks (ImageJ or OME-TIFF, with pixel
size and units) and Gwyddion ``.gwy`` files (one channel per frame, x/y/z in SI units), each with a record of what
made it.

Heights stay in the input's physical units; nothing is clipped or rescaled except the exact SI conversion that
Gwyddion needs (it stores values in base units: nm heights are written as metres and shown as nm again by Gwyddion).
The record (method, model file and hash, options, scores) goes into the ImageJ ``Info`` property, the OME
``Description`` and the ``.gwy`` channels' metadata. Every file is written atomically (``atomic.atomic_path``).
"""

import json
from typing import Dict, Optional, Tuple

import numpy as np

import atomic
from errors import UserError

# unit string -> (SI base unit, factor to it); units not listed are written as they are (factor 1)
SI_UNITS: Dict[str, Tuple[str, float]] = {
    "m": ("m", 1.0), "mm": ("m", 1e-3), "um": ("m", 1e-6), "µm": ("m", 1e-6), "nm": ("m", 1e-9),
    "pm": ("m", 1e-12), "Å": ("m", 1e-10), "A": ("A", 1.0), "nA": ("A", 1e-9), "pA": ("A", 1e-12),
    "V": ("V", 1.0), "mV": ("V", 1e-3), "Hz": ("Hz", 1.0), "kHz": ("Hz", 1e3), "deg": ("deg", 1.0),
}


def to_si(unit: str) -> Tuple[str, float]:
    """(SI base unit, factor) for ``unit``: "nm" -> ("m", 1e-9); an unknown or empty unit -> (unit, 1.0)."""
    return SI_UNITS.get(unit, (unit, 1.0))


def _as_stack(frames: np.ndarray) -> np.ndarray:
    """(T, H, W) or (T, H, W, 1) -> (T, H, W) float32; colour movies are refused (these formats hold heights)."""
    frames = np.asarray(frames)
    if frames.ndim == 4 and frames.shape[-1] == 1:
        frames = frames[..., 0]
    if frames.ndim != 3:
        raise UserError(f"a TIFF/.gwy stack holds one channel of heights, got an array of shape {frames.shape}; "
                        "write colour movies as .npy or PNG frames")
    return np.ascontiguousarray(frames, dtype=np.float32)


def record_text(record: Optional[dict]) -> str:
    """The record as indented JSON (an empty string for None)."""
    return json.dumps(record, indent=1, sort_keys=True, default=str) if record else ""


def write_tiff_stack(path: str, frames: np.ndarray, unit: str = "", pixel_size: Optional[float] = None,
                     pixel_unit: str = "nm", fps: Optional[float] = None, record: Optional[dict] = None,
                     ome: Optional[bool] = None) -> None:
    """A float32 multi-page TIFF of the movie: ImageJ hyperstack (axes TYX, pixel size as resolution with its unit,
    frame interval from ``fps``, z unit and record in ``Info``), or OME-TIFF when ``ome`` (default: the path ends in
    ``.ome.tif``/``.ome.tiff``)."""
    import tifffile

    stack = _as_stack(frames)
    ome = path.lower().endswith((".ome.tif", ".ome.tiff")) if ome is None else ome
    info = f"z unit: {unit or 'a.u.'}\n{record_text(record)}"
    resolution = (1.0 / pixel_size, 1.0 / pixel_size) if pixel_size else None
    if ome:
        metadata = {"axes": "TYX", "Description": info}
        if pixel_size:
            metadata.update(PhysicalSizeX=pixel_size, PhysicalSizeY=pixel_size, PhysicalSizeXUnit=pixel_unit,
                            PhysicalSizeYUnit=pixel_unit)
        if fps:
            metadata.update(TimeIncrement=1.0 / fps, TimeIncrementUnit="s")
        kwargs = {"ome": True, "metadata": metadata}
    else:
        metadata = {"axes": "TYX", "unit": pixel_unit if pixel_size else "pixel", "Info": info}
        if fps:
            metadata["finterval"] = 1.0 / fps
        kwargs = {"imagej": True, "metadata": metadata}
    with atomic.atomic_path(path) as tmp:
        tifffile.imwrite(tmp, stack, resolution=resolution, **kwargs)


def write_gwy(path: str, frames: np.ndarray, unit: str = "", pixel_size: Optional[float] = None,
              pixel_unit: str = "nm", record: Optional[dict] = None) -> None:
    """A Gwyddion file with one channel per frame ("frame 0", "frame 1", ...), values and lateral sizes in SI base
    units (``to_si``), and the record as each channel's metadata."""
    from gwyfile.objects import GwyContainer, GwyDataField, GwySIUnit

    stack = _as_stack(frames)
    z_unit, z_factor = to_si(unit)
    xy_unit, xy_factor = to_si(pixel_unit) if pixel_size else ("", 1.0)
    height, width = stack.shape[1:]
    xreal = width * (pixel_size or 1.0) * xy_factor
    yreal = height * (pixel_size or 1.0) * xy_factor
    meta = {key: (value if isinstance(value, str) else json.dumps(value, default=str))
            for key, value in (record or {}).items()}
    container = GwyContainer()
    for t, frame in enumerate(stack):
        field = GwyDataField(frame.astype(np.float64) * z_factor, xreal=xreal, yreal=yreal,
                             si_unit_xy=GwySIUnit(unitstr=xy_unit), si_unit_z=GwySIUnit(unitstr=z_unit))
        container[f"/{t}/data"] = field
        container[f"/{t}/data/title"] = f"frame {t}"
        if meta:
            container[f"/{t}/meta"] = GwyContainer(meta)
    with atomic.atomic_path(path) as tmp:
        container.tofile(tmp)
