"""Stand-in for webui v1.10.1 modules/options.py: OptionInfo and Options with data / data_labels."""


class OptionInfo:
    """One setting (modules/options.py: OptionInfo.__init__ has this signature)."""

    def __init__(self, default=None, label="", component=None, component_args=None, onchange=None, section=None,
                 refresh=None, comment_before='', comment_after='', infotext=None, restrict_api=False,
                 category_id=None):
        self.default = default
        self.label = label
        self.component = component
        self.component_args = component_args
        self.onchange = onchange
        self.section = section
        self.category_id = category_id
        self.refresh = refresh
        self.do_not_save = False
        self.comment_before = comment_before
        self.comment_after = comment_after
        self.infotext = infotext
        self.restrict_api = restrict_api


class Options:
    """Settings by key (modules/options.py: Options); values live in ``data``, definitions in ``data_labels``."""

    def __init__(self, data_labels, restricted_opts=()):
        object.__setattr__(self, "data_labels", dict(data_labels))
        object.__setattr__(self, "data", {k: v.default for k, v in data_labels.items()})
        object.__setattr__(self, "restricted_opts", set(restricted_opts))

    def __getattr__(self, item):
        """(modules/options.py: Options.__getattr__)"""
        data = object.__getattribute__(self, "data")
        if item in data:
            return data[item]
        labels = object.__getattribute__(self, "data_labels")
        if item in labels:
            return labels[item].default
        raise AttributeError(item)

    def __setattr__(self, key, value):
        """(modules/options.py: Options.__setattr__)"""
        self.data[key] = value

    def set(self, key, value, is_api=False, run_callbacks=True):
        """Set a value and run its onchange (modules/options.py: Options.set)."""
        old = self.data.get(key)
        if old == value:
            return False
        self.data[key] = value
        info = self.data_labels.get(key)
        if run_callbacks and info is not None and info.onchange is not None:
            info.onchange()
        return True

    def add_option(self, key, info):
        """(modules/options.py: Options.add_option)"""
        self.data_labels[key] = info
        if key not in self.data and not info.do_not_save:
            self.data[key] = info.default
