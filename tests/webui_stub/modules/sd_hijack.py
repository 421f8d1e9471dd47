"""Stand-in for webui v1.10.1 modules/sd_hijack.py: the selected attention optimization and model_hijack."""
from modules import sd_hijack_optimizations

optimizers = []
current_optimizer = None


def list_optimizers():
    """(modules/sd_hijack.py: list_optimizers)"""
    res = []
    sd_hijack_optimizations.list_optimizers(res)
    optimizers[:] = sorted([x for x in res if x.is_available()], key=lambda x: x.priority, reverse=True)


def apply_optimizations(option=None):
    """(modules/sd_hijack.py: apply_optimizations): undo, then apply the first (Automatic) or the named one."""
    global current_optimizer
    undo_optimizations()
    if current_optimizer is not None:
        current_optimizer.undo()
        current_optimizer = None
    if not optimizers:
        list_optimizers()
    if option == "None":
        return ''
    matching = next((x for x in optimizers if option in (None, "Automatic", x.title())), optimizers[0])
    matching.apply()
    current_optimizer = matching
    return current_optimizer.name


def undo_optimizations():
    """(modules/sd_hijack.py: undo_optimizations)"""
    sd_hijack_optimizations.SdOptimization().undo()


class EmbeddingDatabase:
    """(modules/textual_inversion/textual_inversion.py: EmbeddingDatabase) with no embeddings."""

    def __init__(self):
        self.loads = 0

    def load_textual_inversion_embeddings(self, force_reload=False):
        self.loads += 1


class StableDiffusionModelHijack:
    """(modules/sd_hijack.py: StableDiffusionModelHijack)"""

    def __init__(self):
        self.extra_generation_params = {}
        self.comments = []
        self.embedding_db = EmbeddingDatabase()

    def clear_comments(self):
        self.comments = []
        self.extra_generation_params = {}


model_hijack = StableDiffusionModelHijack()
