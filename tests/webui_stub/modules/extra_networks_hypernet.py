"""Stand-in for webui v1.10.1 modules/extra_networks_hypernet.py: webui's own `hypernet` extra network."""
from modules import extra_networks, shared


class ExtraNetworkHypernet(extra_networks.ExtraNetwork):
    """(modules/extra_networks_hypernet.py) webui loads the named networks into shared.loaded_hypernetworks; the
    stand-in records the names it was asked for there."""

    def __init__(self):
        super().__init__('hypernet')

    def activate(self, p, params_list):
        shared.loaded_hypernetworks.clear()
        shared.loaded_hypernetworks.extend(("webui", params.items[0]) for params in params_list)

    def deactivate(self, p):
        pass
