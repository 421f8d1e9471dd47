"""Stand-in for webui v1.10.1 modules/extra_networks.py: the registry and the <name:args> prompt syntax."""
import re
from collections import defaultdict

from modules import errors

extra_network_registry = {}
extra_network_aliases = {}


def initialize():
    """(modules/extra_networks.py: initialize)"""
    extra_network_registry.clear()
    extra_network_aliases.clear()


def register_extra_network(extra_network):
    """(modules/extra_networks.py: register_extra_network)"""
    extra_network_registry[extra_network.name] = extra_network


def register_default_extra_networks():
    """(modules/extra_networks.py: register_default_extra_networks)"""
    from modules.extra_networks_hypernet import ExtraNetworkHypernet
    register_extra_network(ExtraNetworkHypernet())


class ExtraNetworkParams:
    """(modules/extra_networks.py: ExtraNetworkParams)"""

    def __init__(self, items=None):
        self.items = items or []
        self.positional = []
        self.named = {}
        for item in self.items:
            parts = item.split('=', 2) if isinstance(item, str) else [item]
            if len(parts) == 2:
                self.named[parts[0]] = parts[1]
            else:
                self.positional.append(item)


class ExtraNetwork:
    """(modules/extra_networks.py: ExtraNetwork)"""

    def __init__(self, name):
        self.name = name

    def activate(self, p, params_list):
        raise NotImplementedError

    def deactivate(self, p):
        raise NotImplementedError


def lookup_extra_networks(extra_network_data):
    """(modules/extra_networks.py: lookup_extra_networks)"""
    res = {}
    for name, args in list(extra_network_data.items()):
        extra_network = extra_network_registry.get(name, None) or extra_network_aliases.get(name, None)
        if extra_network is None:
            continue
        res.setdefault(extra_network, []).extend(args)
    return res


def activate(p, extra_network_data):
    """Activate the networks named in the prompt, then every other one with no arguments
    (modules/extra_networks.py: activate)."""
    activated = []
    for extra_network, args in lookup_extra_networks(extra_network_data).items():
        try:
            extra_network.activate(p, args)
            activated.append(extra_network)
        except Exception as e:
            errors.display(e, f"activating extra network {extra_network.name} with arguments {args}")
    for name, extra_network in extra_network_registry.items():
        if extra_network in activated:
            continue
        try:
            extra_network.activate(p, [])
        except Exception as e:
            errors.display(e, f"activating extra network {name}")


def deactivate(p, extra_network_data):
    """(modules/extra_networks.py: deactivate)"""
    data = lookup_extra_networks(extra_network_data)
    for extra_network in data:
        try:
            extra_network.deactivate(p)
        except Exception as e:
            errors.display(e, f"deactivating extra network {extra_network.name}")
    for name, extra_network in extra_network_registry.items():
        if extra_network in data:
            continue
        try:
            extra_network.deactivate(p)
        except Exception as e:
            errors.display(e, f"deactivating unmentioned extra network {name}")


re_extra_net = re.compile(r"<(\w+):([^>]+)>")


def parse_prompt(prompt):
    """(modules/extra_networks.py: parse_prompt)"""
    res = defaultdict(list)

    def found(m):
        res[m.group(1)].append(ExtraNetworkParams(items=m.group(2).split(":")))
        return ""

    return re.sub(re_extra_net, found, prompt), res


def parse_prompts(prompts):
    """(modules/extra_networks.py: parse_prompts)"""
    res, extra_data = [], None
    for prompt in prompts:
        updated_prompt, parsed = parse_prompt(prompt)
        if extra_data is None:
            extra_data = parsed
        res.append(updated_prompt)
    return res, extra_data
