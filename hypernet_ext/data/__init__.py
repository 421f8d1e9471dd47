"""Training data: images and captions in, a deterministic stream of (latents, prompts, loss weights) out.

``prepare_dataset(DataConfig(...), encode, scale_factor)`` builds a LatentDataset whose ``micro_batch(index)`` is
a pure function of the seed and the index; ``count_images(config)`` counts what it would use without encoding.
Modules: config, buckets, captions, images, cache, prepare, dataset.
"""
from .buckets import assign_bucket, cover_crop, make_buckets
from .captions import DEFAULT_TEMPLATE, load_template, read_caption, shipped_templates
from .config import DataConfig
from .dataset import Batch, LatentDataset, Sample
from .prepare import DataSummary, count_images, prepare_dataset

__all__ = [
    "Batch", "DataConfig", "DataSummary", "DEFAULT_TEMPLATE", "LatentDataset", "Sample", "assign_bucket",
    "count_images", "cover_crop", "load_template", "make_buckets", "prepare_dataset", "read_caption",
    "shipped_templates",
]
