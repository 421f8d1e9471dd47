"""Stand-in for webui v1.10.1 modules/shared_items.py."""


def reload_hypernetworks():
    """webui's own list of hypernetworks: every .pt in --hypernetwork-dir (modules/shared_items.py)."""
    from modules import shared
    from modules.hypernetworks import hypernetwork

    shared.hypernetworks = hypernetwork.list_hypernetworks(shared.cmd_opts.hypernetwork_dir)
