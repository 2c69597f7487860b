"""Building a training run before its first epoch: the training state to resume, the generator's config, G (fresh,
from ``--pretrained`` weights, or started as the identity / at unit variance for ``--denoise``), D and the four-fold
loss, and the ``training.Trainer`` that holds them on the device.
"""

from __future__ import annotations

import argparse
import os
import random
from typing import Dict, List, Optional, Tuple

import torch
from torch import nn

import checkpoint
import denoise_record
import logger
import rbpn
import training
from base_networks import scale_to_unit_variance
from checks import flow_backend_for, resolve_flow_device, resolve_train_device
from denoise_movies import PreparedMovie, check_movie_channels
from errors import UserError
from SRGAN.loss import GeneratorLoss
from SRGAN.model import Discriminator

# ---------------------------------------------------------------------------------------------------------------
# The device


def setup_device(args: argparse.Namespace) -> training.DistInfo:
    """Where this process trains (``checks.resolve_train_device``: ``--device``, else ``--gpu_mode``), joined to the
    torchrun process group when there is one; the torch flow's ``--flow_device`` is checked here too, before any
    data is read."""
    device = resolve_train_device(args.device, args.gpu_mode, int(os.environ.get("WORLD_SIZE", "1")))
    if not (args.denoise and args.flows == "zero"):
        resolve_flow_device(args.flow_device, args.flow_backend, device)
    dist = training.setup_distributed(device.type == "cuda", args.dist_backend)
    if device.index is not None:  # --device cuda:N (a single process)
        torch.cuda.set_device(device)
        dist.device = device
    return dist


# ---------------------------------------------------------------------------------------------------------------
# The training state and the generator's config


def read_resume_state(args: argparse.Namespace) -> Tuple[Optional[Dict], Optional[str]]:
    """(training state, its path) for ``--resume`` (``auto``: the newest in ``--save_folder``); (None, None)
    without it. The state must be of the same task (super-resolution or ``--denoise``)."""
    if not args.resume:
        return None, None
    path = args.resume
    if path == "auto":
        path = training.find_latest_state(args.save_folder, args.upscale_factor)
    state = training.read_training_state(path)
    denoise_record.check_resumed_task(state, path, args)
    return state, path


def model_config(args: argparse.Namespace, num_channels: int = 3) -> Dict:
    """The generator's config (``rbpn.from_config``): ``Net``, or ``Net2`` for ``--denoise`` with a factor > 1."""
    arch = "Net2" if args.denoise and args.upscale_factor > 1 else "Net"
    return dict(num_channels=num_channels, base_filter=args.base_filter, feat=args.feat, num_stages=args.num_stages,
                n_resblock=args.n_resblock, nFrames=args.nFrames, scale_factor=args.upscale_factor, arch=arch)


def generator_config(args: argparse.Namespace, state: Optional[Dict], state_path: Optional[str],
                     movies: Optional[List[PreparedMovie]], main: bool) -> Dict:
    """G's config: from the options and the movies' channels (3 for super-resolution), or the resumed state's.

    A resumed run keeps its generator: its config, its output mode (``--residual``) and movies of its channels. The
    data follows the generator: ``args.nFrames`` becomes the config's.
    """
    channels = movies[0].channels if movies else 3
    config = dict(state["config"]) if state else model_config(args, channels)
    if state and movies:
        check_movie_channels(movies, "--data_dir", config["num_channels"], f"the generator of {state_path}")
    if state and "residual" in (state.get("args") or {}):
        args.residual = bool(state["args"]["residual"])  # a resumed run keeps its generator's output mode
    if state and dict({"arch": "Net"}, **config) != model_config(args, channels) and main:
        logger.warning(f"--resume: using the checkpoint's model configuration {config}")
    args.nFrames = config["nFrames"]  # the data follows the generator (a resumed run keeps its nFrames)
    return config


# ---------------------------------------------------------------------------------------------------------------
# G, D and the losses


def build_networks(args: argparse.Namespace, config: Dict, state: Optional[Dict], dist: training.DistInfo
                   ) -> Tuple[nn.Module, Optional[nn.Module], Optional[nn.Module]]:
    """(G, D, GeneratorLoss) on the CPU; D and the loss only with ``--loss gan``.

    G's weights come from the seed (every rank builds the same ones), then from ``--pretrained`` weights unless a
    training state will overwrite them; a fresh ``--denoise --residual`` G starts as its base (``start_as_identity``).
    """
    training.seed_everything(args.seed)
    netG = rbpn.from_config(config)
    if args.denoise and args.residual and not args.pretrained and not state:
        start_as_identity(netG)
    if args.grad_checkpoint:
        netG.set_grad_checkpointing(True)
    if args.pretrained and not state:
        start_from_pretrained(netG, args, config, dist.is_main)
    netD = None
    criterion = None
    if args.loss == "gan":
        netD = Discriminator(num_channels=config["num_channels"])
        criterion = build_criterion(args).to(dist.device)
    if dist.is_main:
        logger.info(f"generator parameters: {count_parameters(netG):,} {config}")
        if netD is not None:
            logger.info(f"discriminator parameters: {count_parameters(netD):,}")
        logger.debug(str(netG))
    return netG, netD, criterion


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def start_as_identity(netG: nn.Module) -> None:
    """Zero the reconstruction conv of a ``--denoise --residual`` generator, so that training starts from its base
    (the input frame, or the frames' mean with ``--residual_base mean``) instead of RBPN's random output."""
    with torch.no_grad():
        netG.output.conv.weight.zero_()
        if netG.output.conv.bias is not None:
            netG.output.conv.bias.zero_()


def build_criterion(args: argparse.Namespace) -> GeneratorLoss:
    """The four-fold GAN loss with the options' weights and VGG16 (none is built with ``--perceptual_weight 0``)."""
    if args.perceptual_weight == 0:
        vgg = "random"  # not built: no VGG is needed without the perceptual term
    elif args.vgg_weights:
        if not os.path.isfile(args.vgg_weights):
            raise UserError(f"--vgg_weights: {args.vgg_weights!r} does not exist")
        vgg = args.vgg_weights
    else:
        vgg = args.vgg
    return GeneratorLoss(vgg=vgg, image_weight=args.mse_weight, adversarial_weight=args.adv_weight,
                         perception_weight=args.perceptual_weight, tv_weight=args.tv_weight)


# ---------------------------------------------------------------------------------------------------------------
# --pretrained


def start_from_pretrained(netG: nn.Module, args: argparse.Namespace, config: Dict, main: bool) -> None:
    """Load ``--pretrained_sr`` into G. A super-resolution checkpoint trained with ``--residual`` turns
    ``--residual`` on (its output needs the bicubic upscale added); a mismatch of bicubic methods is a warning."""
    source = resolve_pretrained(args)
    meta = load_pretrained(netG, source, args, config, main)
    if main:
        logger.info(f"loaded pretrained generator {source}")
    if meta is not None and meta.get("residual") and not args.residual and not args.denoise:
        args.residual = True
        if main:
            logger.info(f"{source} was trained with --residual: this run uses --residual too")
    method = meta.get("residual") if meta is not None else None
    if args.residual and isinstance(method, str) and method != args.degradation and main:
        logger.warning(f"{source} adds a {method} bicubic upscale to its output, but this run's "
                       f"--degradation {args.degradation} makes it a {args.degradation} one")


def resolve_pretrained(args: argparse.Namespace) -> str:
    """The original loads ``save_folder + pretrained_sr``; also accept a plain path."""
    for path in (args.pretrained_sr, os.path.join(args.save_folder, args.pretrained_sr)):
        if os.path.isfile(path):
            return path
    raise UserError(f"--pretrained: {args.pretrained_sr!r} not found (nor in --save_folder {args.save_folder!r}); "
                    "download RBPN_4x.pth (see weights/README.md) or pass the file with --pretrained_sr PATH")


def load_pretrained(netG: nn.Module, source: str, args: argparse.Namespace, config: Dict, main: bool) -> Optional[Dict]:
    """Load ``--pretrained`` weights into G strictly; returns the checkpoint's meta (None for a plain state_dict).

    With ``--denoise`` the checkpoint must be a denoiser for the data's channels (``checkpoint.build_generator``'s
    one-line errors), except that a ``Net2`` may start from a super-resolution RBPN of its factor and channels
    (``init_net2_from_sr``).
    """
    if args.denoise:
        expect = {"task": "denoise", "num_channels": config["num_channels"]}
        try:
            checkpoint.build_generator(source, expect=expect)
        except checkpoint.CheckpointError:
            if config.get("arch") != "Net2" or not init_net2_from_sr(netG, source):
                raise
            if main:
                logger.info(f"initialised the denoising Net2 x{config['scale_factor']} from the super-resolution "
                            f"checkpoint {source}: every tensor but output.conv.weight (the strided output conv "
                            "keeps its fresh initialisation)")
            return None
    return checkpoint.load_into(netG, source, what="generator")


def init_net2_from_sr(netG: nn.Module, source: str) -> bool:
    """Initialise a denoising ``Net2`` from a super-resolution RBPN of the same factor, as the fork did (x2): load
    every tensor but ``output.conv.weight`` (its kernel differs), which keeps its fresh initialisation. Returns False,
    loading nothing, unless the keys are the same and every other shape matches."""
    skipped = "output.conv.weight"
    sd, _ = checkpoint.read_checkpoint(source)
    expected = netG.state_dict()
    if set(sd) != set(expected) or any(tuple(sd[k].shape) != tuple(v.shape) for k, v in expected.items()
                                       if k != skipped):
        return False
    missing, unexpected = netG.load_state_dict({k: v for k, v in sd.items() if k != skipped}, strict=False)
    if list(missing) != [skipped] or unexpected:  # cannot happen after the checks above
        raise checkpoint.CheckpointError(f"checkpoint {source}: partial load left {missing} / {unexpected}")
    return True


# ---------------------------------------------------------------------------------------------------------------
# The Trainer: G and D on the device, the step's flows, a resumed state


def build_trainer(args: argparse.Namespace, netG: nn.Module, netD: Optional[nn.Module],
                  criterion: Optional[nn.Module], dist: training.DistInfo) -> training.Trainer:
    """G and D moved to the device (NHWC with ``--channels_last``) and wrapped for DDP / DataParallel, in a
    ``training.Trainer`` with the options' loss, lr, precision and output mode, and the step's flow function."""
    layout = torch.channels_last if args.channels_last else torch.contiguous_format
    netG = wrap_parallel(netG.to(dist.device, memory_format=layout), args, dist)
    if netD is not None:
        netD = wrap_parallel(netD.to(dist.device, memory_format=layout), args, dist)
    flow_fn = step_flow_fn(args, dist.device, dist.is_main)
    prepare_fn = None
    if flow_fn is not None and args.denoise:
        prepare_fn = training.denoise_step_inputs(args.warping, args.residual_base if args.residual else None)
    return training.Trainer(netG, netD, criterion, args.loss, args.lr, dist, args.precision, args.residual,
                            args.channels_last, flow_fn=flow_fn, prepare_fn=prepare_fn)


def wrap_parallel(model: nn.Module, args: argparse.Namespace, dist: training.DistInfo) -> nn.Module:
    """DDP under torchrun, DataParallel over ``--gpus`` with ``--useDataParallel`` and several GPUs, else the model."""
    if dist.distributed:
        ids = [dist.device.index] if dist.device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(model, device_ids=ids)
    if args.useDataParallel and dist.device.type == "cuda" and torch.cuda.device_count() > 1:
        return nn.DataParallel(model, device_ids=list(range(min(args.gpus, torch.cuda.device_count()))))
    return model


def step_flow_fn(args: argparse.Namespace, device: torch.device, main: bool):
    """The training step's flow function for ``--flow_backend torch`` (None: the DataLoader's C++ flows)."""
    if args.denoise and args.flows == "zero":
        return None
    flow_device = resolve_flow_device(args.flow_device, args.flow_backend, device)
    if flow_backend_for(args.flow_backend, device) == "cpp":
        return None
    if args.denoise and args.target != "interleaved" and main:
        logger.info(f"--flow_backend torch with --target {args.target}: the neighbours' flows come from the torch flow "
                    "in the step; the target's alignment flows still come from the C++ pyflow in the DataLoader")
    elif args.flow_cache and main:
        logger.warning("--flow_cache is for the C++ flows; with --flow_backend torch it is not used")
    if main:
        logger.info(f"flows: pyflow.torch_flow on {flow_device}, for the whole batch inside each step")
    return training.batch_flow_fn(flow_device)


def resume_trainer(trainer: training.Trainer, state: Optional[Dict], state_path: Optional[str],
                   args: argparse.Namespace, scale: int, main: bool) -> Tuple[int, Dict]:
    """(first epoch, best validation so far): ``--start_epoch`` and none, or where the training state left off
    (its weights, optimizers and RNG states loaded; the best as ``training.best_after_resume`` finds it)."""
    if not state:
        return args.start_epoch, {}
    trainer.load_state(state)
    training.set_rng_states(state["rng"])
    best = training.best_after_resume(args.save_folder, scale, dict(state.get("best") or {}), state["epoch"])
    if main:
        lr = trainer.optG.param_groups[0]["lr"]
        logger.info(f"resumed from {state_path} (epoch {state['epoch']}, G lr {lr:g})")
    return state["epoch"] + 1, best


def unit_variance_start(netG: nn.Module, train_set, trainer: training.Trainer, args: argparse.Namespace,
                        dist: training.DistInfo) -> None:
    """Rescale a fresh ``--denoise`` generator's convs to unit-variance outputs on a few training samples
    (``base_networks.scale_to_unit_variance``; the reconstruction conv is left as it is, zero with ``--residual``).
    RBPN's original init makes the recurrent features explode with nFrames at scale 1; SR training keeps the
    original init. Every rank computes the same samples; rank 0's weights are then broadcast to be sure."""
    rng = random.Random(args.seed)
    indices = sorted(rng.sample(range(len(train_set)), min(8, len(train_set))))
    train_set.reseed(args.seed)
    batch = torch.utils.data.default_collate([train_set[i] for i in indices])
    inp, _, neighbours, flows, _ = training.to_device(batch, dist.device, args.channels_last)
    if trainer.flow_fn is not None:
        flows = trainer.flow_fn(inp, neighbours)
    was_training = netG.training
    netG.eval()
    try:
        changed = scale_to_unit_variance(netG, lambda: netG(inp, neighbours, flows), skip=[netG.output.conv])
    finally:
        netG.train(was_training)
    if dist.world_size > 1:
        for tensor in netG.state_dict().values():
            torch.distributed.broadcast(tensor, src=0)
    if dist.is_main:
        logger.info(f"--denoise from scratch: {changed} conv rescalings to unit-variance features on {len(indices)} "
                    "training samples (RBPN's init lets its recurrent features explode at scale 1)")
