"""Train iSeeBetter: RBPN generator + SRGAN discriminator with the four-fold loss (or a pixel loss for pre-training).

Keeps the original's options and defaults; boolean options take ``--x``/``--no-x`` (and the original ``--x False``).
Resumable (``--resume``), seeded, multi-GPU / multi-node with ``torchrun`` (DDP), mixed precision, activation
checkpointing, per-epoch validation (Y-PSNR/SSIM) with the best generator kept. See the README's training section.

``--denoise`` trains a denoiser for consecutive SPM/AFM scans instead: ``--data_dir`` is a movie or a folder of
movies (``scans.find_movies``), each preprocessed per movie (``denoise_data.preprocess``) and cut into samples by
``denoise_data.DenoiseDataset`` (``--target``); the generator is ``rbpn.Net`` at scale 1, or ``rbpn.Net2`` with
``--upscale_factor 2|4|8`` (that factor inside, output of the input's size).

    python iSeeBetterTrain.py --data_dir vimeo_septuplet/sequences --file_list sep_trainlist.txt \\
        --pretrained --pretrained_sr RBPN_4x.pth --nEpochs 4
    torchrun --nproc_per_node=4 iSeeBetterTrain.py ... --precision bf16
    python iSeeBetterTrain.py --denoise --data_dir afm_movies/ --eval_dir afm_eval.asd --nFrames 3

The steps live in modules of their own: ``checks`` (options and folders), ``denoise_movies`` (the ``--denoise``
data), ``train_setup`` (G, D, losses, resume), ``train_data`` (training and evaluation sets), ``train_epochs`` (one
epoch: train, save, validate) and ``denoise_record`` (what the checkpoints record).
"""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, List, Optional

import logger
from checks import check_data_dir, check_mode, check_numbers, check_writable_folder, remove_stale_temps
from denoise_record import BASES, FLOW_METHODS, TARGETS, adopt_denoise_record, state_extra
from errors import UserError, run_cli
from options import FLOW_BACKENDS, PRECISIONS, add_bool
from SRGAN.weights import DEFAULT_WEIGHTS

if TYPE_CHECKING:  # torch and the modules that import it load in main and train, so that -h and option errors are fast
    from denoise_movies import PreparedMovie
    from training import DistInfo

# Numeric options and the values they accept (argparse only checks the type).
AT_LEAST_ONE = ("batchSize", "testBatchSize", "nEpochs", "snapshots", "eval_every", "gpus", "base_filter", "feat")
AT_LEAST_ZERO = ("patch_size", "threads", "seed", "keep_last", "n_resblock", "flow_threads", "eval_max_frames",
                 "max_steps_per_epoch", "lr_step", "mse_weight", "adv_weight", "perceptual_weight", "tv_weight")
ABOVE_ZERO = ("lr", "lr_gamma")


# ---------------------------------------------------------------------------------------------------------------
# Options


def build_parser() -> argparse.ArgumentParser:
    """The original's options first, then the new ones by topic."""
    p = argparse.ArgumentParser(description="Train iSeeBetter (RBPN + SRGAN discriminator).",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_original_options(p.add_argument_group("original options"))
    add_loss_options(p.add_argument_group("loss"))
    add_model_options(p.add_argument_group("model size (recorded in the checkpoints)"))
    add_data_options(p.add_argument_group("data"))
    add_denoise_options(p.add_argument_group("denoising consecutive SPM/AFM scans (--denoise)"))
    add_validation_options(p.add_argument_group("validation"))
    add_run_options(p.add_argument_group("run control"))
    return p


def add_original_options(g: argparse._ArgumentGroup) -> None:
    """The options of the original iSeeBetterTrain.py, with their names and defaults."""
    g.add_argument("--upscale_factor", type=int, default=None, choices=(1, 2, 4, 8),
                   help="super resolution upscale factor: 2, 4 (default) or 8; with --denoise 1 (default, Net) or "
                        "2/4/8 (Net2: that factor inside, output of the input's size)")
    g.add_argument("--batchSize", type=int, default=2, help="training batch size (per process under torchrun)")
    g.add_argument("--testBatchSize", type=int, default=1, help="validation batch size")
    g.add_argument("--start_epoch", type=int, default=1, help="number of the first epoch (ignored with --resume)")
    g.add_argument("--nEpochs", type=int, default=150, help="number of the last epoch")
    g.add_argument("--snapshots", type=int, default=1, help="save checkpoints every N epochs (and after the last)")
    g.add_argument("--lr", type=float, default=1e-4, help="Adam learning rate of G and D")
    add_bool(g, "gpu_mode", True, "use CUDA when available (a --device other than auto wins)")
    g.add_argument("--threads", type=int, default=8, help="DataLoader worker processes")
    g.add_argument("--seed", type=int, default=123, help="random seed (weights init, sampling, augmentation)")
    g.add_argument("--gpus", type=int, default=8, help="GPUs for --useDataParallel (use torchrun for DDP instead)")
    g.add_argument("--data_dir", default="./vimeo_septuplet/sequences", help="training data folder")
    g.add_argument("--file_list", default="sep_trainlist.txt", help="training list, relative to --data_dir")
    add_bool(g, "other_dataset", False, "--file_list lists frame paths instead of Vimeo-90K septuplet folders")
    add_bool(g, "future_frame", True, "use future frames as neighbours")
    g.add_argument("--nFrames", type=int, default=7, help="frames per sample (target + neighbours)")
    g.add_argument("--patch_size", type=int, default=64, help="LR patch size, 0 = whole frames")
    add_bool(g, "data_augmentation", True, "random flips / rotation")
    g.add_argument("--model_type", default="RBPN", choices=("RBPN",), help="generator architecture")
    add_bool(g, "residual", False, "add the bicubic-upscaled input (--degradation's bicubic) to G's output; with "
             "--denoise, the input frame itself")
    g.add_argument("--pretrained_sr", default="RBPN_4x.pth",
                   help="generator weights for --pretrained (a path, or a name inside --save_folder)")
    g.add_argument("--pretrained", action="store_true", help="start G from --pretrained_sr")
    g.add_argument("--save_folder", default="weights/", help="where checkpoints and logs are written")
    g.add_argument("--prefix", default="F7", help="free-form run tag, recorded in the logs and training state")
    g.add_argument("--APITLoss", action="store_true", help="four-fold GAN loss (same as --loss gan, the default)")
    g.add_argument("--useDataParallel", action="store_true", help="single-process DataParallel over --gpus GPUs")
    g.add_argument("-v", "--debug", action="store_true", help="Print debug spew.")


def add_loss_options(g: argparse._ArgumentGroup) -> None:
    """The loss: four-fold GAN loss or a pixel loss, and the terms' weights."""
    g.add_argument("--loss", choices=("gan", "l1", "mse"), default=None,
                   help="gan: D + four-fold G loss (default; with --denoise the default is l1); l1/mse: pixel loss "
                        "only, no D (pre-training)")
    g.add_argument("--mse_weight", type=float, default=DEFAULT_WEIGHTS["image"], help="weight of the MSE image term")
    g.add_argument("--adv_weight", type=float, default=DEFAULT_WEIGHTS["adversarial"],
                   help="weight of the adversarial term")
    g.add_argument("--perceptual_weight", type=float, default=DEFAULT_WEIGHTS["perception"],
                   help="weight of the VGG16 term (0: no VGG)")
    g.add_argument("--tv_weight", type=float, default=DEFAULT_WEIGHTS["tv"], help="weight of the total-variation term")
    g.add_argument("--vgg_weights", default=None, help="VGG16 weights file (default: torchvision ImageNet weights)")
    g.add_argument("--vgg", choices=("imagenet", "random"), default="imagenet",
                   help="'random' = untrained VGG, for tests only")


def add_model_options(g: argparse._ArgumentGroup) -> None:
    """G's size."""
    g.add_argument("--base_filter", type=int, default=256)
    g.add_argument("--feat", type=int, default=64)
    g.add_argument("--num_stages", type=int, default=3, choices=(3,),
                   help="fixed at 3: RBPN's DBPN-S branch has 3 up-projection stages (kept for the original's "
                        "command lines)")
    g.add_argument("--n_resblock", type=int, default=5)


def add_data_options(g: argparse._ArgumentGroup) -> None:
    """Super-resolution data: the LR degradation and the optical flows."""
    g.add_argument("--degradation", choices=("pil", "matlab"), default="pil", help="HR -> LR downscaling")
    g.add_argument("--flow_cache", default=None, help="folder caching optical flows between runs")
    g.add_argument("--flow_threads", type=int, default=0, help="threads for optical flow per sample (0: auto)")
    g.add_argument("--flow_backend", choices=FLOW_BACKENDS, default="auto",
                   help="training flows: cpp (exact C++ pyflow in the DataLoader, --flow_cache applies), torch "
                        "(pyflow.torch_flow on --flow_device for the whole augmented batch inside the step) or auto "
                        "(torch when training on CUDA); super-resolution only")
    g.add_argument("--flow_device", default=None,
                   help="device of the torch flow: cpu, cuda, cuda:N or auto (default: the training device); unused "
                        "by the cpp flow")


def add_denoise_options(g: argparse._ArgumentGroup) -> None:
    """``--denoise`` and its data options (recorded in the checkpoints, ``denoise_record``)."""
    g.add_argument("--denoise", action="store_true",
                   help="train a denoiser: --data_dir / --eval_dir are movies (.asd, .npy, videos, PNG/TIFF frame "
                        "folders) or folders of movies; --patch_size is in input pixels")
    g.add_argument("--target", choices=TARGETS, default="n2n",
                   help="training target: n2n (a neighbouring scan), select (the cleanest scan of the window), "
                        "median (median of nFrames aligned scans) or interleaved (network frames 2 scans apart, "
                        "target: the mean of the two scans around the input); see denoise_data.make_sample")
    g.add_argument("--residual_base", choices=BASES, default="frame",
                   help="with --residual: add G's output to the input frame, or to the mean of the frames G sees "
                        "(G then starts as the plain temporal mean and learns to improve on it)")
    add_bool(g, "warping", False, "warp each neighbour onto the input with its optical flow before the network")
    g.add_argument("--flows", choices=FLOW_METHODS, default="pyflow", help="optical flow: pyflow, or zero flows")
    g.add_argument("--channel", default=None, help=".asd channel to train on, by name or index (default: the first)")
    g.add_argument("--keep_truncated", action="store_true",
                   help="an .asd file cut short: keep its complete frames instead of refusing it")
    add_bool(g, "level", True, "subtract each scan line's median before normalising (SPM line levelling)")
    g.add_argument("--temporal_bin", type=int, nargs="+", default=[1], metavar="K",
                   help="also train on each movie binned in time by K (the mean of K consecutive scans: noise / "
                        "sqrt(K), K times the motion), e.g. 1 2; 1 = the movies as they are")
    g.add_argument("--spatial_scale", type=float, nargs="+", default=[1.0], metavar="S",
                   help="also train on each movie (and each binned one) resized by S <= 1 with area averaging "
                        "(smaller features, less pixel noise), e.g. 1 0.5; 1 = the movies as they are")


def add_validation_options(g: argparse._ArgumentGroup) -> None:
    """Per-epoch validation on ``--eval_dir``."""
    g.add_argument("--eval_dir", default=None, help="evaluation data folder (or a video / frame folder)")
    g.add_argument("--eval_file_list", default=None, help="evaluation list inside --eval_dir (frame paths)")
    g.add_argument("--eval_every", type=int, default=1, help="validate every N epochs")
    g.add_argument("--eval_max_frames", type=int, default=0, help="frames to evaluate, 0 = all")
    g.add_argument("--eval_degradation", choices=("pil", "matlab"), default="matlab",
                   help="HR -> LR downscaling of the evaluation frames")


def add_run_options(g: argparse._ArgumentGroup) -> None:
    """Resuming, checkpoints kept, the lr schedule, precision, memory and logs."""
    g.add_argument("--resume", nargs="?", const="auto", default=None, metavar="PATH",
                   help="continue from a training state (without PATH: the newest in --save_folder)")
    g.add_argument("--keep_last", type=int, default=2, help="training states to keep, 0 = all")
    g.add_argument("--lr_step", type=float, default=0,
                   help="decay G's lr after epochs where (epoch+1) %% lr_step == 0 (0: nEpochs/2, as the original, "
                        "and no decay when --nEpochs is under 10)")
    g.add_argument("--lr_gamma", type=float, default=0.1, help="lr decay factor")
    g.add_argument("--lr_decay_d", action="store_true", help="decay D's lr too (the original never does)")
    g.add_argument("--device", default="auto",
                   help="auto (CUDA when available and --gpu_mode is on, else CPU), cpu, cuda or cuda:N; wins over "
                        "--gpu_mode; under torchrun, cuda is each process's cuda:LOCAL_RANK")
    g.add_argument("--precision", choices=PRECISIONS, default="auto",
                   help="autocast precision; auto: bf16 where the CPU/GPU has native bf16, else fp32")
    g.add_argument("--grad_checkpoint", action="store_true", help="activation checkpointing in G (less memory)")
    add_bool(g, "channels_last", True, "NHWC memory format for G, D and the batches (faster convolutions)")
    g.add_argument("--log_dir", default=None, help="logs, metrics and curves (default: --save_folder)")
    add_bool(g, "progress", True, "show the tqdm progress bar")
    g.add_argument("--max_steps_per_epoch", type=int, default=0, help="cut each epoch after N steps (smoke tests)")
    g.add_argument("--dist_backend", default=None, choices=("nccl", "gloo"), help="torchrun backend (default: auto)")


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """The options, checked: one ``UserError`` line for a value out of range or an option of the other mode."""
    args = build_parser().parse_args(argv)
    if args.loss is None:
        args.loss = "gan" if args.APITLoss or not args.denoise else "l1"
    elif args.APITLoss and args.loss != "gan":
        raise UserError(f"--APITLoss selects the GAN loss but --loss {args.loss} was given; use one of them")
    check_numbers(args, AT_LEAST_ONE, AT_LEAST_ZERO, ABOVE_ZERO)
    check_mode(args)
    if args.nFrames < 1 and args.denoise:
        raise UserError(f"--nFrames must be at least 1 with --denoise (1 = the single-frame model), got "
                        f"{args.nFrames}")
    if args.nFrames < 2 and not args.denoise:
        raise UserError("--nFrames must be at least 2 (the target frame and one neighbour)")
    if args.denoise and args.target == "interleaved" and args.nFrames % 2 == 0:
        raise UserError(f"--target interleaved needs an odd --nFrames (neighbours at +-2, +-4, ... scans), got "
                        f"{args.nFrames}")
    if args.start_epoch < 1 or args.start_epoch > args.nEpochs:
        raise UserError(f"--start_epoch must be between 1 and --nEpochs ({args.nEpochs}), got {args.start_epoch}")
    return args


# ---------------------------------------------------------------------------------------------------------------
# Training


def train(args: argparse.Namespace, dist: DistInfo) -> int:
    """Train G (and D with ``--loss gan``): the data and G's config, then G, D and the losses, then each epoch is
    trained, saved and validated. Returns the exit status."""
    import train_data
    import train_epochs
    import train_setup
    import training
    from denoise_movies import read_movies

    main = dist.is_main
    log_dir = args.log_dir or args.save_folder
    check_folders(args, log_dir, main)  # before anything is built or written

    # What to train on and G's config: the --resume state's, or from the options and the --denoise movies.
    state, state_path = train_setup.read_resume_state(args)
    adopted = adopt_denoise_record(args, state) if state and args.denoise else []
    movies = read_movies(args.data_dir, "--data_dir", args) if args.denoise else None
    config = train_setup.generator_config(args, state, state_path, movies, main)
    extra = state_extra(args, movies)
    run_log = logger.RunLogger(log_dir, enabled=main, resume_epoch=state["epoch"] if state else None)
    try:
        if main:
            log_start(args, dist, log_dir, adopted, state_path, movies)

        # G, D and the losses in a Trainer; a resumed run continues where its state left off.
        netG, netD, criterion = train_setup.build_networks(args, config, state, dist)
        trainer = train_setup.build_trainer(args, netG, netD, criterion, dist)
        start_epoch, best = train_setup.resume_trainer(trainer, state, state_path, args, config["scale_factor"], main)
        if start_epoch > args.nEpochs:
            if main:
                logger.info(f"nothing to do: the checkpoint is at epoch {start_epoch - 1}, --nEpochs {args.nEpochs}")
            return 0
        if main:
            logger.info(train_epochs.schedule_line(args, trainer.optG.param_groups[0]["lr"], start_epoch))

        # The training set and loader, the evaluation set.
        train_set = train_data.build_train_set(args, config, movies)
        if trainer.flow_fn is not None:
            train_set.skip_flows = True  # the DataLoader does no flow work
        if args.denoise and not args.pretrained and not state:
            train_setup.unit_variance_start(training.unwrap(trainer.netG), train_set, trainer, args, dist)
        loader = train_data.build_train_loader(args, train_set, trainer.netD, config, dist)
        eval_loader = train_data.build_eval_loader(args, config) if main else None
        label = train_data.metric_label(args, config)
        if main:
            train_data.log_data(train_set, loader, eval_loader)
        if eval_loader is not None:
            log_baselines(args, eval_loader, dist, config, label, run_log)

        # Each epoch: train, save, validate, keep the best generator, log.
        for epoch in range(start_epoch, args.nEpochs + 1):
            record = train_epochs.train_one_epoch(trainer, loader, epoch, args, dist)
            # Save before validating: a failing validation must not lose the epoch. The best generator follows.
            saved = None
            if main and (epoch % args.snapshots == 0 or epoch == args.nEpochs):
                saved = train_epochs.save_checkpoints(trainer, args, config, epoch, best, extra)
            if eval_loader is not None and (epoch % args.eval_every == 0 or epoch == args.nEpochs):
                record.update(train_epochs.validate(trainer, eval_loader, args, config, dist))
            if main:
                best = train_epochs.keep_best(record, best, trainer, args, config)
                run_log.log_epoch(record)
                logger.info(train_epochs.epoch_line(record, saved, label))
            training.barrier(dist)
        if main:
            if best:
                logger.info(f"best: epoch {best['epoch']}, {label} {best['val_psnr']:.3f} dB -> "
                            f"{training.best_path(args.save_folder, config['scale_factor'])}")
            logger.info(f"done; logs in {log_dir}")
        return 0
    finally:
        run_log.close()


def log_baselines(args: argparse.Namespace, eval_loader, dist: DistInfo, config: dict, label: str,
                  run_log: logger.RunLogger) -> None:
    """Before the first epoch: what ``--denoise`` validation measures, and the validation baseline (bicubic or
    temporal mean), logged once and kept in the run's metrics and curves. The baselines only inform: one that cannot
    be scored is a warning, and the first validation, after the first epoch is saved, reports the problem."""
    import train_data

    try:
        if args.denoise:
            train_data.log_denoise_validation(args, eval_loader, dist, label.split()[0])
        baseline = train_data.log_validation_baseline(args, eval_loader, dist, config, label)
    except UserError as exc:
        logger.warning(f"validation baseline not scored: {exc}")
        return
    if baseline:
        run_log.set_baseline(baseline[0], baseline[1]["val_psnr"], baseline[1]["val_ssim"])


def check_folders(args: argparse.Namespace, log_dir: str, main: bool) -> None:
    """The super-resolution data exists, and rank 0 can write in ``--save_folder`` and ``--log_dir``."""
    if not args.denoise:
        check_data_dir(args.data_dir, args.file_list)
    if main:
        check_writable_folder(args.save_folder, "--save_folder")
        if log_dir != args.save_folder:
            check_writable_folder(log_dir, "--log_dir")


def log_start(args: argparse.Namespace, dist: DistInfo, log_dir: str, adopted: List[str], state_path: Optional[str],
              movies: Optional[List[PreparedMovie]]) -> None:
    """Clear what killed runs left in the output folders, then log the options, the device and the data options a
    resumed run kept."""
    for folder in dict.fromkeys((args.save_folder, log_dir)):
        remove_stale_temps(folder)
    logger.info(f"iSeeBetterTrain run {args.prefix!r}, options: {json.dumps(vars(args), sort_keys=True)}")
    logger.info(f"device {dist.device}, world size {dist.world_size}, precision {args.precision}, loss {args.loss}")
    for change in adopted:
        logger.warning(f"--resume: {state_path} continues with its recorded data option {change}")
    for movie in movies or []:
        logger.info(f"training movie {movie.describe()}")


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    logger.initLogger(args.debug)
    import train_setup
    import training

    dist = train_setup.setup_device(args)
    args.precision = training.resolve_precision(args.precision, dist.device)
    if args.precision == "fp16" and dist.device.type == "cpu":
        logger.warning("fp16 autocast on CPU runs without a GradScaler; bf16 is the safer CPU choice")
    try:
        return train(args, dist)
    finally:
        training.cleanup_distributed()


if __name__ == "__main__":
    run_cli(main)
