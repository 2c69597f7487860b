"""train_epochs.py: the learning-rate schedule and the epoch's log line."""

import iSeeBetterTrain
import train_epochs


def test_original_lr_schedule():
    args = iSeeBetterTrain.parse_args(["--nEpochs", "150"])
    assert [e for e in range(1, 151) if train_epochs.lr_decay_due(e, args)] == [74, 149]
    args = iSeeBetterTrain.parse_args(["--nEpochs", "150", "--lr_step", "30"])
    assert [e for e in range(1, 151) if train_epochs.lr_decay_due(e, args)] == [29, 59, 89, 119, 149]


def test_epoch_line():
    record = {"epoch": 3, "g_loss": 0.5, "d_loss": 1.25, "d_x": 0.75, "d_g_z": 0.125, "val_psnr": 30.12345,
              "val_ssim": 0.9, "samples_per_s": 12.345}
    assert train_epochs.epoch_line(record, "w/state.pth", "PSNR") == (
        "epoch 3, G 0.5000, D 1.2500, D(x) 0.7500, D(G(z)) 0.1250, val PSNR 30.123 dB SSIM 0.9000, 12.35 samples/s, "
        "saved w/state.pth")
    assert train_epochs.epoch_line({"epoch": 1, "g_loss": 2.0, "samples_per_s": 1.0}, None) == \
        "epoch 1, G 2.0000, 1.00 samples/s"


def test_short_runs_keep_their_lr_unless_lr_step_is_given():
    """A 2-epoch run no longer divides its lr after epoch 1; from MIN_DECAY_EPOCHS epochs the original's rule holds."""
    for n in (1, 2, 4, 9):
        args = iSeeBetterTrain.parse_args(["--nEpochs", str(n)])
        assert train_epochs.decay_epochs(args, 1) == []
    args = iSeeBetterTrain.parse_args(["--nEpochs", str(train_epochs.MIN_DECAY_EPOCHS)])
    assert train_epochs.decay_epochs(args, 1) == [4, 9]
    args = iSeeBetterTrain.parse_args(["--nEpochs", "2", "--lr_step", "1"])
    assert train_epochs.decay_epochs(args, 1) == [1, 2]


def test_schedule_line():
    args = iSeeBetterTrain.parse_args(["--nEpochs", "150"])
    assert train_epochs.schedule_line(args, 1e-4, 1) == (
        "lr 0.0001, divided by 10 after epochs 74, 149; D's lr stays constant (--lr_decay_d decays it too)")
    assert train_epochs.schedule_line(args, 1e-5, 80) == (
        "lr 1e-05, divided by 10 after epoch 149; D's lr stays constant (--lr_decay_d decays it too)")
    args = iSeeBetterTrain.parse_args(["--nEpochs", "150", "--lr_step", "10", "--lr_gamma", "0.3", "--loss", "l1"])
    assert train_epochs.schedule_line(args, 1e-4, 1) == \
        "lr 0.0001, multiplied by 0.3 after epochs 9, 19, 29, ..., 149 (15 decays)"
    args = iSeeBetterTrain.parse_args(["--nEpochs", "2"])
    assert train_epochs.schedule_line(args, 1e-4, 1).startswith("lr 0.0001, constant: runs of under 10 epochs")
    args = iSeeBetterTrain.parse_args(["--nEpochs", "3", "--lr_step", "30"])
    assert train_epochs.schedule_line(args, 1e-4, 1) == \
        "lr 0.0001, constant: --lr_step 30 decays it after no epoch up to 3"
