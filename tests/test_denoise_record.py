"""denoise_record.py: what a generator checkpoint records about its training, and how a resumed run reads it."""

import pytest

import denoise_record
import iSeeBetterTrain
from errors import UserError


def test_a_denoise_run_records_its_data_options():
    args = iSeeBetterTrain.parse_args(["--denoise", "--target", "median", "--residual", "--residual_base", "mean",
                                       "--temporal_bin", "1", "2", "--channel", "1", "--no-level"])
    record = denoise_record.denoise_record(args)
    assert record == {"target": "median", "warping": False, "flows": "pyflow", "level": False, "channel": "1",
                      "normalisation": denoise_record.NORMALISATION, "residual_base": "mean", "temporal_bin": [1, 2],
                      "spatial_scale": [1.0]}
    assert denoise_record.generator_extra(args) == {"denoise": record, "residual": "mean"}
    assert denoise_record.best_extra(args) == denoise_record.generator_extra(args)
    assert denoise_record.state_extra(args, None) == denoise_record.generator_extra(args)


def test_a_super_resolution_run_records_its_bicubic_method():
    args = iSeeBetterTrain.parse_args(["--residual", "--degradation", "matlab"])
    assert denoise_record.generator_extra(args) == {}
    assert denoise_record.best_extra(args) == {"residual": "matlab"}
    assert denoise_record.best_extra(iSeeBetterTrain.parse_args([])) == {"residual": None}


def test_a_resumed_run_keeps_its_recorded_data_options():
    args = iSeeBetterTrain.parse_args(["--denoise", "--flows", "zero"])
    state = {"denoise": {"target": "median", "flows": "zero", "level": False, "normalisation": "anything"}}
    assert denoise_record.adopt_denoise_record(args, state) == ["--target median", "--level False"]
    assert (args.target, args.flows, args.level) == ("median", "zero", False)
    assert denoise_record.adopt_denoise_record(args, {}) == []


def test_a_training_state_of_the_other_task_is_refused():
    sr_state = {"config": dict(num_channels=3, base_filter=8, feat=8, num_stages=3, n_resblock=1, nFrames=3,
                               scale_factor=4)}
    denoise_state = {"config": dict(sr_state["config"], num_channels=1, scale_factor=1)}
    denoise, sr = iSeeBetterTrain.parse_args(["--denoise"]), iSeeBetterTrain.parse_args([])
    denoise_record.check_resumed_task(sr_state, "s.pth", sr)
    denoise_record.check_resumed_task(denoise_state, "d.pth", denoise)
    with pytest.raises(UserError, match="^--resume: s.pth is a super-resolution training state"):
        denoise_record.check_resumed_task(sr_state, "s.pth", denoise)
    with pytest.raises(UserError, match="^--resume: d.pth is a --denoise training state"):
        denoise_record.check_resumed_task(denoise_state, "d.pth", sr)
