"""The model and the network of a ``train`` run: the host (the tiny built-in model, or a checkpoint loaded by
hypernet_ext.standalone.checkpoints), the network (new with the model's widths, or read from --network/--resume)
and the prompt cache through which each distinct prompt is encoded once.
"""
from __future__ import annotations

import logging

from ...errors import ConfigError, FormatError

logger = logging.getLogger(__name__)


def build_host(args):
    import torch

    from ..ldm_host import LdmHost

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if args.ckpt:
        from ..checkpoints import load_checkpoint

        return load_checkpoint(args.ckpt, args.config, device=device, sgm_path=args.sgm_path)
    if args.config:
        raise ConfigError("--config names the yaml of a checkpoint: give the checkpoint with --ckpt too")
    from ..demo import build_tiny_ldm, tiny_model_hash

    return LdmHost(build_tiny_ldm(seed=args.model_seed), model_name="tiny-sd1",
                   model_hash=tiny_model_hash(args.model_seed)).to(device)


def cache_conditioning(host, dataset, config, extra_prompts=()):
    """The host the run uses: each distinct prompt of the data set encoded once before the run
    (training.prompts.cache_conditioning), then ``extra_prompts`` (the previews'). On a GPU, once every prompt the
    run can ask for is cached, the text encoders wait on the CPU (SDXL's two take 1.6 GB in fp16)."""
    import torch

    from ...training.prompts import cache_conditioning as cache_dataset_prompts

    cached, count = cache_dataset_prompts(host, dataset)
    if count is None:
        return cached
    cached.fill(list(extra_prompts))
    encoder = getattr(host, "text_encoder", None)
    if torch.device(host.device).type != "cpu" and encoder is not None and not config.validation.data_dir:
        encoder().to("cpu")
        cached.sealed = True
        logger.info("the text encoders wait on the CPU: every prompt of the run is cached")
    return cached


def build_network(args, host):
    """(network, resume_from): a new network, or the one --network / --resume names. ``resume_from`` is the file
    whose .optim the trainer restores: only with --resume."""
    from ... import create, formats
    from ...attach import attention_modules
    from .train import network_config

    source = args.resume or args.network
    if source:
        from ...formats.common import nonfinite_weights

        network = formats.load(source)
        bad = nonfinite_weights(network)
        if bad:
            raise FormatError(source, f"holds NaN or infinite weights ({'; '.join(bad[:3])}); training from it "
                                      "cannot work. Start from an earlier checkpoint")
        if args.resume:
            return network, source
        logger.info("continuing %s from step %d with a fresh optimizer (its .optim is not read; --resume restores "
                    "it)", source, network.step)
        return network, None
    widths = [width for _, _, width in attention_modules(host.attention_root())]
    return create(network_config(args, widths), name=args.name), None
