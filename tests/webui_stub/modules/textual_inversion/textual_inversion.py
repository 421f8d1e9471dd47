"""Stand-in for webui v1.10.1 modules/textual_inversion/textual_inversion.py: the templates folder."""
import os

from modules import shared


class TextualInversionTemplate:
    """(modules/textual_inversion/textual_inversion.py: TextualInversionTemplate)"""

    def __init__(self, name, path):
        self.name = name
        self.path = path


textual_inversion_templates = {}


def list_textual_inversion_templates():
    """file name -> template, for every file of --textual-inversion-templates-dir
    (modules/textual_inversion/textual_inversion.py: list_textual_inversion_templates)."""
    textual_inversion_templates.clear()
    for root, _, fns in os.walk(shared.cmd_opts.textual_inversion_templates_dir):
        for fn in fns:
            textual_inversion_templates[fn] = TextualInversionTemplate(fn, os.path.join(root, fn))
    return textual_inversion_templates
