"""Our ``hypernet`` extra network (``<hypernet:name:strength>`` in prompts) and our Extra Networks page
"Hypernetworks", each replacing webui's own while the extension is loaded.

``install()`` runs from ``on_before_ui``, just after webui has cleared both registries and registered its
defaults (at start and on every UI reload); ``uninstall()`` puts webui's back (script unload). The page lists
every file the library lists (``.safetensors`` included) with its structure, widths, step and base model.
"""
from __future__ import annotations

import json
import logging
import os

logger = logging.getLogger(__name__)

NAME = "hypernet"
TITLE = "Hypernetworks"

def make_extra_network(session):
    from modules import extra_networks

    class HypernetExtraNetwork(extra_networks.ExtraNetwork):
        """``<hypernet:name[:strength]>`` through hypernet_ext's loader and attachment."""

        def __init__(self):
            super().__init__(NAME)
            self.session = session

        def activate(self, p, params_list):
            self.session.generation.activate(p, params_list)

        def deactivate(self, p):
            self.session.generation.detach()

    return HypernetExtraNetwork()


def describe_card(info) -> str:
    """The card text: widths, structure, step and base model."""
    config = info.config
    parts = [f"widths {', '.join(str(w) for w in info.widths)}",
             f"structure {', '.join(f'{v:g}' for v in config.layer_structure)} {config.activation}",
             f"step {info.step}"]
    if info.sd_checkpoint_name or info.sd_checkpoint:
        parts.append(f"base {info.sd_checkpoint_name or ''} {f'[{info.sd_checkpoint}]' if info.sd_checkpoint else ''}"
                     .strip())
    return " · ".join(parts)


def make_page(session):
    from modules import shared, ui_extra_networks
    from modules.hashes import sha256_from_cache
    from modules.ui_extra_networks import quote_js

    class HypernetPage(ui_extra_networks.ExtraNetworksPage):
        """The Hypernetworks page, listing every file hypernet_ext reads."""

        def __init__(self):
            super().__init__(TITLE)
            self.session = session

        def refresh(self):
            shared.reload_hypernetworks()

        def create_item(self, name, index=None, enable_filter=True):
            entry = self.session.library.scan().get(name)
            if entry is None:
                return None
            try:
                info = self.session.library.describe(entry.path)
            except Exception as err:  # noqa: BLE001 - one unreadable file must not break the page
                logger.warning("Hypernetworks page: %s: %s", entry.path, err)
                return None
            return self._item(entry, info, index)

        def _item(self, entry, info, index):
            full_path = str(entry.path)
            path, ext = os.path.splitext(full_path)
            sha256 = sha256_from_cache(full_path, f"hypernet/{entry.name}")
            search_terms = [self.search_terms_from_path(path)] + ([sha256] if sha256 else [])
            metadata = {"format": info.format, "widths": list(info.widths), "step": info.step,
                        "structure": info.config.to_dict(), "sd_checkpoint": info.sd_checkpoint,
                        "sd_checkpoint_name": info.sd_checkpoint_name, "created": info.created}
            return {
                "name": entry.name,
                "filename": full_path,
                "shorthash": sha256[:10] if sha256 else None,
                "preview": self.find_preview(path),
                "description": self.find_description(path) or describe_card(info),
                "search_terms": search_terms,
                "prompt": quote_js(f"<hypernet:{entry.name}:") + " + opts.extra_networks_default_multiplier + "
                + quote_js(">"),
                "local_preview": f"{path}.preview.{shared.opts.samples_format}",
                "metadata": json.loads(json.dumps(metadata, default=str)),
                "sort_keys": {"default": index, **self.get_sort_keys(path + ext)},
            }

        def list_items(self):
            for index, name in enumerate(list(self.session.library.scan())):
                item = self.create_item(name, index)
                if item is not None:
                    yield item

        def allowed_directories_for_previews(self):
            return [shared.cmd_opts.hypernetwork_dir]

    return HypernetPage()


def install(session) -> None:
    """Register our extra network and page in place of webui's (see the module docstring); webui's own are kept
    in ``session.replaced`` to put back."""
    from modules import extra_networks, ui_extra_networks

    replaced = session.replaced

    previous = extra_networks.extra_network_registry.get(NAME)
    if previous is not None and getattr(previous, "session", None) is None:
        replaced["network"] = previous
    extra_networks.register_extra_network(make_extra_network(session))
    page = make_page(session)
    pages = ui_extra_networks.extra_pages
    index = next((i for i, p in enumerate(pages) if p.name == page.name), None)
    if index is None:
        ui_extra_networks.register_page(page)
    else:
        if getattr(pages[index], "session", None) is None:
            replaced["page"] = pages[index]
        pages[index] = page   # same place, same title: webui's tab order and element ids stay


def uninstall(session) -> None:
    """Put webui's own extra network and page back (or just remove ours)."""
    from modules import extra_networks, ui_extra_networks

    replaced = session.replaced
    current = extra_networks.extra_network_registry.get(NAME)
    if current is not None and getattr(current, "session", None) is not None:
        if replaced.get("network") is not None:
            extra_networks.register_extra_network(replaced["network"])
        else:
            del extra_networks.extra_network_registry[NAME]
    pages = ui_extra_networks.extra_pages
    for i, page in enumerate(list(pages)):
        if getattr(page, "session", None) is not None:
            if replaced.get("page") is not None:
                pages[i] = replaced["page"]
            else:
                pages.remove(page)
    replaced.clear()
