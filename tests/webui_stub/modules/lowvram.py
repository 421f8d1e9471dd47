"""Stand-in for webui v1.10.1 modules/lowvram.py: what --medvram keeps on the GPU."""
module_in_gpu = None
calls = []   # the functions called, for the tests


def send_everything_to_cpu():
    """(modules/lowvram.py: send_everything_to_cpu)"""
    global module_in_gpu
    calls.append("send_everything_to_cpu")
    if module_in_gpu is not None:
        module_in_gpu.to("cpu")
    module_in_gpu = None


def is_enabled(sd_model):
    """(modules/lowvram.py: is_enabled)"""
    return sd_model.lowvram
