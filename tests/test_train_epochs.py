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
