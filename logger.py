"""Logging for the scripts: the original's thin ``logging`` wrapper plus ``RunLogger`` for training runs.

``initLogger``/``info``/``debug``/``warning``/``errorOut`` keep the original iSeeBetter names and formats.
``RunLogger`` adds what a training run needs: a ``train.log`` file, per-epoch metrics as ``metrics.csv`` and
``metrics.jsonl`` (rewritten atomically, resumable), TensorBoard scalars when ``tensorboard`` is installed, and a
loss/PSNR curve ``curves.png`` (with the validation baseline dashed) refreshed after every epoch.
"""

import csv
import io
import json
import logging
import math
import os
import sys
import warnings
from typing import Dict, List, Optional

import atomic

LOGGER = logging.getLogger("root")
PLAIN_FORMAT = "[%(levelname)8.8s] %(message)s"
DEBUG_FORMAT = "[%(levelname)8.8s] [%(filename)s:%(lineno)d:%(funcName)s()] %(message)s"


PROJECT_ROOT = os.path.dirname(os.path.abspath(__file__))
_PYTHON_SHOWWARNING = warnings.showwarning


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """``warnings.warn`` of this project's code (a UserWarning raised in a file under the project) becomes one
    ``WARNING`` line of the log, without Python's category and source line; other warnings print as Python does."""
    ours = os.path.abspath(filename).startswith(PROJECT_ROOT + os.sep) and issubclass(category, UserWarning)
    if ours:
        LOGGER.warning(str(message))
    else:
        _PYTHON_SHOWWARNING(message, category, filename, lineno, file, line)


def initLogger(debugFlag: bool = False) -> logging.Logger:
    """Set up console logging like the original: INFO by default, DEBUG with file:line:func() when asked. The
    project's own ``warnings.warn`` lines go through the log too (``_show_warning``)."""
    warnings.showwarning = _show_warning
    LOGGER.setLevel(logging.DEBUG if debugFlag else logging.INFO)
    fmt = logging.Formatter(DEBUG_FORMAT if debugFlag else PLAIN_FORMAT)
    console = [h for h in LOGGER.handlers if getattr(h, "_iseebetter_console", False)]
    if console:
        console[0].setFormatter(fmt)
        # sys.stderr may have been replaced (and the old one closed) since: tests, notebooks. No flush of the old one.
        console[0].stream = sys.stderr
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(fmt)
        handler._iseebetter_console = True  # type: ignore[attr-defined]
        LOGGER.addHandler(handler)
    LOGGER.propagate = False
    return LOGGER


def info(msg: str) -> None:
    LOGGER.info(msg, stacklevel=2)


def debug(msg: str) -> None:
    LOGGER.debug(msg, stacklevel=2)


def warning(msg: str) -> None:
    LOGGER.warning(msg, stacklevel=2)


def error(msg: str) -> None:
    LOGGER.error(msg, stacklevel=2)


def errorOut(msg: str, e: Optional[BaseException] = None) -> None:
    """Log an error (with the exception, if any) and exit with status 1, as the original did."""
    LOGGER.error(f"{msg}: {e}" if e is not None else msg, stacklevel=2)
    sys.exit(1)


def _finite_or_none(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class RunLogger:
    """Per-run logs in ``folder``: train.log, metrics.csv, metrics.jsonl, curves.png and TensorBoard (optional).

    ``enabled=False`` (non-zero DDP ranks) makes every method a no-op. When ``resume_epoch`` is given, records of
    epochs after it (written by a run that was killed before its checkpoint) are dropped so that the files continue
    cleanly from the resumed checkpoint.
    """

    def __init__(
        self,
        folder: str,
        enabled: bool = True,
        resume_epoch: Optional[int] = None,
        tensorboard: bool = True,
        plot: bool = True,
    ) -> None:
        self.folder = folder
        self.enabled = enabled
        self.plot = plot
        self.records: List[Dict] = []
        self.baseline: Dict = {}
        self._file_handler: Optional[logging.Handler] = None
        self._tb = None
        if not enabled:
            return
        os.makedirs(folder, exist_ok=True)
        self.csv_path = os.path.join(folder, "metrics.csv")
        self.jsonl_path = os.path.join(folder, "metrics.jsonl")
        self.plot_path = os.path.join(folder, "curves.png")
        if resume_epoch is not None:
            self.records = [r for r in self._read_jsonl() if int(r.get("epoch", 0)) <= resume_epoch]
            self._write_tables()
        handler = logging.FileHandler(os.path.join(folder, "train.log"), mode="a" if resume_epoch else "w")
        handler.setFormatter(logging.Formatter("%(asctime)s " + PLAIN_FORMAT))
        LOGGER.addHandler(handler)
        if LOGGER.level == logging.NOTSET:
            LOGGER.setLevel(logging.INFO)
        self._file_handler = handler
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                LOGGER.debug("tensorboard is not installed; skipping TensorBoard logs")
            else:
                self._tb = SummaryWriter(log_dir=os.path.join(folder, "tensorboard"))

    def _read_jsonl(self) -> List[Dict]:
        if not os.path.exists(self.jsonl_path):
            return []
        records = []
        with open(self.jsonl_path) as f:
            for line in f:
                line = line.strip()
                if line:
                    try:
                        records.append(json.loads(line))
                    except json.JSONDecodeError:
                        break  # a line cut by a kill: keep what came before it
        return records

    def _write_tables(self) -> None:
        lines = [json.dumps({k: _finite_or_none(v) for k, v in r.items()}) + "\n" for r in self.records]
        atomic.write_text(self.jsonl_path, "".join(lines))
        columns: List[str] = []
        for record in self.records:
            columns += [k for k in record if k not in columns]
        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow(columns)
        for r in self.records:
            writer.writerow(["" if r.get(c) is None else r.get(c) for c in columns])
        atomic.write_text(self.csv_path, buf.getvalue())

    def set_baseline(self, name: str, psnr: float, ssim: Optional[float] = None) -> None:
        """The validation baseline (``name``: "bicubic", "temporal mean"), written in every following epoch's record
        (``baseline``, ``baseline_psnr``, ``baseline_ssim``) and drawn as a dashed line on the PSNR curve."""
        self.baseline = {"baseline": name, "baseline_psnr": psnr, "baseline_ssim": ssim}

    def log_epoch(self, record: Dict) -> None:
        """Add one epoch's metrics (a flat dict with an ``epoch`` key) to every output and redraw the curves."""
        if not self.enabled:
            return
        record = dict(record, **self.baseline)
        self.records = [r for r in self.records if r.get("epoch") != record.get("epoch")] + [record]
        self._write_tables()
        if self._tb is not None:
            for key, value in record.items():
                if key != "epoch" and isinstance(value, (int, float)):
                    self._tb.add_scalar(key, value, int(record["epoch"]))
            self._tb.flush()
        if self.plot:
            self.draw_curves()

    def draw_curves(self) -> None:
        """Write curves.png: training losses (left) and validation PSNR (right) against the epoch."""
        import matplotlib

        matplotlib.use("Agg")
        logging.getLogger("matplotlib").setLevel(logging.WARNING)
        import matplotlib.pyplot as plt
        from matplotlib.ticker import MaxNLocator

        epochs = [r["epoch"] for r in self.records]
        fig, (ax_loss, ax_psnr) = plt.subplots(1, 2, figsize=(10, 4))
        values = []
        for key, label in (("g_loss", "G loss"), ("d_loss", "D loss"), ("pixel_loss", "pixel loss")):
            points = [(e, r[key]) for e, r in zip(epochs, self.records) if r.get(key) is not None]
            if points:
                ax_loss.plot(*zip(*points), marker="." if len(points) > 30 else "o", label=label)
                values += [v for _, v in points]
        if values and min(values) > 0:
            ax_loss.set_yscale("log")  # early epochs would otherwise flatten the rest of the curve
        ax_loss.set_xlabel("epoch")
        ax_loss.set_ylabel("training loss")
        if ax_loss.get_legend_handles_labels()[0]:
            ax_loss.legend()
        self._draw_psnr(ax_psnr, epochs)
        ax_psnr.set_xlabel("epoch")
        for ax in (ax_loss, ax_psnr):
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax_psnr.set_ylabel("PSNR (dB)")
        fig.tight_layout()
        try:
            with atomic.atomic_path(self.plot_path) as tmp:
                fig.savefig(tmp, dpi=80)
        finally:
            plt.close(fig)

    def _draw_psnr(self, ax, epochs: List[int]) -> None:
        """The validation PSNR per epoch, and the latest baseline as a horizontal dashed line."""
        points = [(e, r["val_psnr"]) for e, r in zip(epochs, self.records) if r.get("val_psnr") is not None]
        if points:
            ax.plot(*zip(*points), marker="o", color="tab:green", label="val Y-PSNR")
        baselines = [r for r in self.records if r.get("baseline_psnr") is not None]
        if baselines and math.isfinite(baselines[-1]["baseline_psnr"]):
            name, value = baselines[-1].get("baseline", "baseline"), baselines[-1]["baseline_psnr"]
            ax.axhline(value, linestyle="--", color="tab:gray", label=f"{name} {value:.2f} dB")
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
        else:
            ax.text(0.5, 0.5, "no validation set", ha="center", va="center", transform=ax.transAxes)

    def close(self) -> None:
        if self._file_handler is not None:
            LOGGER.removeHandler(self._file_handler)
            self._file_handler.close()
            self._file_handler = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None

