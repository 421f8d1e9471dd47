"""Stand-in for webui v1.10.1 modules/hypernetworks/hypernetwork.py: the list and native application."""
import glob
import os


def list_hypernetworks(path):
    """name -> path of every .pt under ``path`` (modules/hypernetworks/hypernetwork.py)."""
    res = {}
    for filename in sorted(glob.iglob(os.path.join(path, '**/*.pt'), recursive=True), key=str.lower):
        name = os.path.splitext(os.path.basename(filename))[0]
        if name != "None":
            res[name] = filename
    return res


def apply_hypernetworks(hypernetworks, context, layer=None):
    """webui's native path: each loaded network transforms the context (modules/hypernetworks/hypernetwork.py).
    A loaded entry here is any callable ``context -> (k, v)``."""
    context_k = context_v = context
    for hypernetwork in hypernetworks:
        context_k, context_v = hypernetwork(context_k)[0], hypernetwork(context_v)[1]
    return context_k, context_v
