"""Stand-in for webui v1.10.1 modules/sd_samplers.py: sampler names and aliases."""
all_samplers_map = {"Euler a": ["k_euler_a", "k_euler_ancestral"], "Euler": ["k_euler"], "DDIM": ["ddim"]}
samplers_map = {}


def set_samplers():
    """name or alias (lower case) -> name (modules/sd_samplers.py: set_samplers)."""
    samplers_map.clear()
    for name, aliases in all_samplers_map.items():
        samplers_map[name.lower()] = name
        for alias in aliases:
            samplers_map[alias.lower()] = name


set_samplers()


def visible_sampler_names():
    """Names of the samplers webui offers (modules/sd_samplers.py: visible_sampler_names; none hidden here)."""
    return list(all_samplers_map)
