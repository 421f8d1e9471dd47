"""Stand-in for webui v1.10.1 modules/ui_extra_networks.py: the Extra Networks pages (no HTML here)."""
import os
import urllib.parse
from pathlib import Path

from modules import shared

extra_pages = []
allowed_dirs = set()


def register_page(page):
    """(modules/ui_extra_networks.py: register_page)"""
    extra_pages.append(page)
    allowed_dirs.clear()
    allowed_dirs.update(set(sum([x.allowed_directories_for_previews() for x in extra_pages], [])))


def quote_js(s):
    """(modules/ui_extra_networks.py: quote_js)"""
    s = s.replace('\\', '\\\\').replace('"', '\\"')
    return f'"{s}"'


class ExtraNetworksPage:
    """(modules/ui_extra_networks.py: ExtraNetworksPage)"""

    def __init__(self, title):
        self.title = title
        self.name = title.lower()
        self.extra_networks_tabname = self.name.replace(" ", "_")
        self.allow_prompt = True
        self.allow_negative_prompt = False
        self.metadata = {}
        self.items = {}

    def refresh(self):
        pass

    def link_preview(self, filename):
        """(ExtraNetworksPage.link_preview)"""
        return f"./sd_extra_networks/thumb?filename={urllib.parse.quote(filename.replace(os.sep, '/'))}"

    def search_terms_from_path(self, filename, possible_directories=None):
        """(ExtraNetworksPage.search_terms_from_path)"""
        abspath = os.path.abspath(filename)
        for parentdir in (possible_directories or self.allowed_directories_for_previews()):
            parentdir = os.path.dirname(os.path.abspath(parentdir))
            if abspath.startswith(parentdir):
                return os.path.relpath(abspath, parentdir)
        return ""

    def create_html(self, tabname, *, empty=False):
        """Fills items and metadata as webui does before rendering (ExtraNetworksPage.create_html)."""
        self.metadata = {}
        self.items = {x["name"]: x for x in ([] if empty else self.list_items())}
        for item in self.items.values():
            if item.get("metadata"):
                self.metadata[item["name"]] = item["metadata"]
        return "".join(f"<div class='card'>{name}</div>" for name in self.items)

    def create_item(self, name, index=None):
        raise NotImplementedError()

    def list_items(self):
        raise NotImplementedError()

    def allowed_directories_for_previews(self):
        return []

    def get_sort_keys(self, path):
        """(ExtraNetworksPage.get_sort_keys)"""
        pth = Path(path)
        mtime = os.path.getmtime(path) if os.path.exists(path) else 0
        return {"date_created": int(mtime), "date_modified": int(mtime), "name": pth.name.lower(),
                "path": str(pth).lower()}

    def find_preview(self, path):
        """(ExtraNetworksPage.find_preview)"""
        for ext in ("png", "jpg", "jpeg", "webp", "gif", shared.opts.samples_format):
            for file in (f"{path}.{ext}", f"{path}.preview.{ext}"):
                if os.path.exists(file):
                    return self.link_preview(file)
        return None

    def find_description(self, path):
        """(ExtraNetworksPage.find_description)"""
        for file in (f"{path}.txt", f"{path}.description.txt"):
            if os.path.exists(file):
                with open(file, "r", encoding="utf-8", errors="replace") as f:
                    return f.read()
        return None


def initialize():
    """(modules/ui_extra_networks.py: initialize)"""
    extra_pages.clear()


def register_default_pages():
    """(modules/ui_extra_networks.py: register_default_pages), the Hypernetworks page only."""
    from modules.ui_extra_networks_hypernets import ExtraNetworksPageHypernetworks
    register_page(ExtraNetworksPageHypernetworks())
