"""Stand-in for webui v1.10.1 modules/extensions.py."""


def find_extension(filename):
    """The extension a file belongs to; no extensions are installed here (modules/extensions.py)."""
    return None
