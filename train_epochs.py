"""One epoch of a training run: the training pass and the learning-rate schedule, the checkpoints, validation and
the best generator, and the epoch's log line.
"""

from __future__ import annotations

import argparse
from typing import Dict, List, Optional

import checkpoint
import logger
import training
from denoise_record import best_extra, generator_extra, residual_upscale

# Runs of fewer epochs keep their lr unless --lr_step is given: the original's nEpochs/2 rule would divide it after
# (almost) every epoch of a short run (after epoch 1 of a 2-epoch run).
MIN_DECAY_EPOCHS = 10


def lr_step(args: argparse.Namespace) -> float:
    """Epochs between lr decays: ``--lr_step``, else half of ``--nEpochs`` as the original; 0 (no decay) for a run of
    under ``MIN_DECAY_EPOCHS`` epochs without ``--lr_step``."""
    if args.lr_step > 0:
        return args.lr_step
    return args.nEpochs / 2 if args.nEpochs >= MIN_DECAY_EPOCHS else 0


def lr_decay_due(epoch: int, args: argparse.Namespace) -> bool:
    """Whether G's lr is divided after ``epoch``: when (epoch+1) is a multiple of ``lr_step`` (by default half of
    ``--nEpochs``, as the original: after epochs 74 and 149 of 150)."""
    step = lr_step(args)
    return step > 0 and (epoch + 1) % step == 0


def decay_epochs(args: argparse.Namespace, start_epoch: int) -> List[int]:
    """The epochs from ``start_epoch`` to ``--nEpochs`` after which G's lr is decayed."""
    return [epoch for epoch in range(start_epoch, args.nEpochs + 1) if lr_decay_due(epoch, args)]


def schedule_line(args: argparse.Namespace, lr: float, start_epoch: int) -> str:
    """The lr schedule for the start of the run, e.g. "lr 0.0001, divided by 10 after epochs 74, 149"."""
    epochs = decay_epochs(args, start_epoch)
    if not epochs:
        if lr_step(args) == 0:
            return (f"lr {lr:g}, constant: runs of under {MIN_DECAY_EPOCHS} epochs keep their lr (--lr_step N "
                    "decays it after the epochs where (epoch+1) % N == 0)")
        return f"lr {lr:g}, constant: --lr_step {args.lr_step:g} decays it after no epoch up to {args.nEpochs}"
    inverse = 1 / args.lr_gamma
    change = (f"divided by {round(inverse)}" if args.lr_gamma < 1 and abs(inverse - round(inverse)) < 1e-6
              else f"multiplied by {args.lr_gamma:g}")
    shown = ", ".join(str(e) for e in epochs)
    if len(epochs) > 6:
        shown = ", ".join(str(e) for e in epochs[:3]) + f", ..., {epochs[-1]} ({len(epochs)} decays)"
    plural = "s" if len(epochs) > 1 else ""
    line = f"lr {lr:g}, {change} after epoch{plural} {shown}"
    if args.loss == "gan" and not args.lr_decay_d:
        line += "; D's lr stays constant (--lr_decay_d decays it too)"
    return line


def train_one_epoch(trainer: training.Trainer, loader, epoch: int, args: argparse.Namespace,
                    dist: training.DistInfo) -> Dict:
    """Train one epoch (the loader reseeded for it), then decay the lr when due; returns the epoch's record: its
    number, the lr it trained with and the trainer's averages."""
    training.set_loader_epoch(loader, args.seed, epoch, dist)
    lr = trainer.optG.param_groups[0]["lr"]
    averages = trainer.train_epoch(loader, epoch, show_progress=args.progress, max_steps=args.max_steps_per_epoch)
    if lr_decay_due(epoch, args):
        new_lr = trainer.decay_lr(args.lr_gamma, include_d=args.lr_decay_d)
        if dist.is_main:
            logger.info(f"learning rate decayed to {new_lr:g}")
    return {"epoch": epoch, "lr": lr, **averages}


def save_checkpoints(trainer: training.Trainer, args: argparse.Namespace, config: Dict, epoch: int, best: Dict,
                     state_extra: Optional[Dict] = None) -> str:
    """Write netG/netD (plain state_dicts, the original's names) then the full training state (plus ``state_extra``);
    prune old states. A ``--denoise`` netG is written in the project format, with its config and ``denoise`` record
    (the original scripts cannot run a denoiser anyway). Returns the training state's path."""
    scale = config["scale_factor"]
    folder = args.save_folder
    netG = training.unwrap(trainer.netG)
    if args.denoise:
        checkpoint.save_generator(training.generator_path(folder, scale, epoch), netG, config,
                                  extra=dict(generator_extra(args), epoch=epoch))
    else:
        checkpoint.save_plain_state_dict(training.generator_path(folder, scale, epoch), netG)
    if trainer.netD is not None:
        netD = training.unwrap(trainer.netD)
        checkpoint.save_plain_state_dict(training.discriminator_path(folder, scale, epoch), netD)
    path = training.state_path(folder, scale, epoch)
    extra = dict(state_extra or {}, args=vars(args), best=best, rng=training.rng_states())
    trainer.save_state(path, config, epoch, extra=extra)
    training.prune_states(folder, scale, args.keep_last)
    return path


def validate(trainer: training.Trainer, eval_loader, args: argparse.Namespace, config: Dict,
             dist: training.DistInfo) -> Dict[str, float]:
    """G's validation scores on the evaluation set (``training.validate``: val_psnr, val_ssim, val_frames)."""
    return training.validate(training.unwrap(trainer.netG), eval_loader, dist.device, config["scale_factor"],
                             args.precision, residual_upscale(args), args.eval_max_frames, args.channels_last,
                             denoise=args.denoise)


def keep_best(record: Dict, best: Dict, trainer: training.Trainer, args: argparse.Namespace, config: Dict) -> Dict:
    """The best validation so far; when this epoch's ``record`` beats ``best``, its generator is written as
    ``netG_best`` with its scores and ``best_extra``."""
    if "val_psnr" in record and record["val_psnr"] > best.get("val_psnr", float("-inf")):
        best = {"epoch": record["epoch"], "val_psnr": record["val_psnr"], "val_ssim": record.get("val_ssim")}
        checkpoint.save_generator(training.best_path(args.save_folder, config["scale_factor"]),
                                  training.unwrap(trainer.netG), config, extra=dict(best, **best_extra(args)))
    return best


def epoch_line(record: Dict, saved: Optional[str], metric: str = "Y-PSNR") -> str:
    """The epoch's log line: losses, D's outputs, validation scores (named ``metric``), speed and the saved state."""
    parts = [f"epoch {record['epoch']}"]
    for key, label in (("g_loss", "G"), ("d_loss", "D"), ("d_x", "D(x)"), ("d_g_z", "D(G(z))")):
        if key in record:
            parts.append(f"{label} {record[key]:.4f}")
    if "val_psnr" in record:
        parts.append(f"val {metric} {record['val_psnr']:.3f} dB SSIM {record['val_ssim']:.4f}")
    parts.append(f"{record['samples_per_s']:.2f} samples/s")
    if saved:
        parts.append(f"saved {saved}")
    return ", ".join(parts)
