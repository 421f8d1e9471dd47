"""Stand-in for webui v1.10.1 modules/sd_vae.py."""
loaded_vae_file = None


def get_loaded_vae_name():
    """(modules/sd_vae.py: get_loaded_vae_name) None: the checkpoint's own VAE."""
    return None


def get_loaded_vae_hash():
    """(modules/sd_vae.py: get_loaded_vae_hash) None: the checkpoint's own VAE."""
    return None
