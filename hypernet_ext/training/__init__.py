"""Training a hypernetwork on a frozen diffusion model: TrainConfig, the Trainer loop and one optimizer step;
validation, the overtraining guard and the learning-rate range test.

``Trainer(host, network, dataset, TrainConfig(...), callbacks).train(resume_from=None)``; the host follows
hypernet_ext.host.HostModel, the data set comes from hypernet_ext.data.prepare_dataset.
``find_lr(host, network, dataset, config, FindLRConfig(...))`` runs the range test on a copy of the network.
"""
from .config import FindLRConfig, GuardConfig, TrainConfig, ValidationConfig
from .lr_finder import LRFinderResult, find_lr
from .trainer import Trainer, TrainResult

__all__ = ["FindLRConfig", "GuardConfig", "LRFinderResult", "TrainConfig", "TrainResult", "Trainer",
           "ValidationConfig", "find_lr"]
