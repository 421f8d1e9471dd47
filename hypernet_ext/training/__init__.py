"""Training a hypernetwork on a frozen diffusion model: TrainConfig, the Trainer loop and one optimizer step.

``Trainer(host, network, dataset, TrainConfig(...), callbacks).train(resume_from=None)``; the host follows
hypernet_ext.host.HostModel, the data set comes from hypernet_ext.data.prepare_dataset.
"""
from .config import TrainConfig
from .trainer import Trainer, TrainResult

__all__ = ["TrainConfig", "TrainResult", "Trainer"]
