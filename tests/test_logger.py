"""logger.py: the original's functions and RunLogger's CSV/JSONL/curves, including resume truncation."""

import csv
import json
import logging

import pytest

import logger


def test_original_functions(capsys):
    log = logger.initLogger(False)
    logger.info("hello info")
    logger.debug("hidden debug")
    assert log.level == logging.INFO
    err = capsys.readouterr().err
    assert "[    INFO] hello info" in err and "hidden debug" not in err
    logger.initLogger(True)
    logger.debug("shown debug")
    assert "test_logger.py" in capsys.readouterr().err  # debug format names file:line:func()
    with pytest.raises(SystemExit) as exc:
        logger.errorOut("fatal", ValueError("boom"))
    assert exc.value.code == 1
    logger.initLogger(False)


def test_run_logger_writes_csv_jsonl_and_curves(tmp_path):
    run = logger.RunLogger(str(tmp_path), tensorboard=False)
    logger.info("a line for the file")
    run.log_epoch({"epoch": 1, "g_loss": 0.5, "d_loss": 1.0})
    run.log_epoch({"epoch": 2, "g_loss": 0.4, "d_loss": 0.9, "val_psnr": 25.0, "val_ssim": 0.7})
    run.close()
    rows = list(csv.DictReader((tmp_path / "metrics.csv").open()))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert rows[0]["val_psnr"] == "" and float(rows[1]["val_psnr"]) == 25.0  # a column added later
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert records[1]["g_loss"] == 0.4
    assert (tmp_path / "curves.png").read_bytes()[:4] == b"\x89PNG"
    assert "a line for the file" in (tmp_path / "train.log").read_text()


def test_run_logger_resume_drops_epochs_after_the_checkpoint(tmp_path):
    run = logger.RunLogger(str(tmp_path), tensorboard=False, plot=False)
    for e in (1, 2, 3):
        run.log_epoch({"epoch": e, "g_loss": 1.0 / e})
    run.close()
    with (tmp_path / "metrics.jsonl").open("a") as f:
        f.write('{"epoch": 4, "g_lo')  # a line cut by a kill
    run = logger.RunLogger(str(tmp_path), resume_epoch=2, tensorboard=False, plot=False)
    run.log_epoch({"epoch": 3, "g_loss": 0.3})
    run.close()
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [(r["epoch"], r["g_loss"]) for r in records] == [(1, 1.0), (2, 0.5), (3, 0.3)]


def test_disabled_run_logger_writes_nothing(tmp_path):
    run = logger.RunLogger(str(tmp_path / "x"), enabled=False)
    run.log_epoch({"epoch": 1, "g_loss": 1.0})
    run.close()
    assert not (tmp_path / "x").exists()


def test_project_warnings_are_one_log_line(capsys, monkeypatch):
    """warnings.warn in the project's code prints as one WARNING log line, not Python's 'UserWarning' + source line."""
    import warnings

    monkeypatch.setattr(warnings, "showwarning", warnings.showwarning)  # restored after the test
    others = []
    monkeypatch.setattr(logger, "_PYTHON_SHOWWARNING", lambda message, category, *a: others.append(category))
    logger.initLogger()
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn("m.asd: channel stays in volts", stacklevel=1)  # this file is the project's code too
        warnings.warn("a library's deprecation", DeprecationWarning, stacklevel=1)
    err = capsys.readouterr().err.splitlines()
    ours = [line for line in err if "volts" in line]
    assert len(ours) == 1 and ours[0].startswith("[ WARNING]") and "UserWarning" not in ours[0]
    assert others == [DeprecationWarning]  # a library's warning is shown as Python shows it


def test_run_logger_records_and_draws_the_validation_baseline(tmp_path):
    """The baseline goes into every epoch's row (CSV and JSONL) and is a dashed horizontal line on the PSNR curve."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run = logger.RunLogger(str(tmp_path), tensorboard=False)
    run.log_epoch({"epoch": 1, "g_loss": 0.5})  # before the baseline is known: no baseline columns
    run.set_baseline("bicubic", 27.125, 0.8)
    run.log_epoch({"epoch": 2, "g_loss": 0.4, "val_psnr": 28.0, "val_ssim": 0.85})
    run.close()
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert "baseline_psnr" not in records[0]
    assert [records[1][k] for k in ("baseline", "baseline_psnr", "baseline_ssim")] == ["bicubic", 27.125, 0.8]
    rows = list(csv.DictReader((tmp_path / "metrics.csv").open()))
    assert rows[1]["baseline_psnr"] == "27.125"
    fig, ax = plt.subplots()
    run._draw_psnr(ax, [1, 2])
    dashed = [line for line in ax.lines if line.get_linestyle() == "--"]
    plt.close(fig)
    assert len(dashed) == 1 and set(dashed[0].get_ydata()) == {27.125}
    assert dashed[0].get_label() == "bicubic 27.12 dB"
