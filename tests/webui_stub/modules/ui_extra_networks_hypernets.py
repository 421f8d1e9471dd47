"""Stand-in for webui v1.10.1 modules/ui_extra_networks_hypernets.py: webui's own Hypernetworks page."""
from modules import shared, ui_extra_networks


class ExtraNetworksPageHypernetworks(ui_extra_networks.ExtraNetworksPage):
    """(modules/ui_extra_networks_hypernets.py) lists shared.hypernetworks, webui's .pt files."""

    def __init__(self):
        super().__init__('Hypernetworks')

    def refresh(self):
        shared.reload_hypernetworks()

    def create_item(self, name, index=None, enable_filter=True):
        path = shared.hypernetworks.get(name)
        return None if path is None else {"name": name, "filename": path}

    def list_items(self):
        for index, name in enumerate(list(shared.hypernetworks)):
            item = self.create_item(name, index)
            if item is not None:
                yield item

    def allowed_directories_for_previews(self):
        return [shared.cmd_opts.hypernetwork_dir]
