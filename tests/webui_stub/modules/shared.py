"""Stand-in for webui v1.10.1 modules/shared.py: the process-wide objects (set up by tests/webui_env.py)."""
from modules import options, shared_items

cmd_opts = None            # argparse.Namespace of webui's command line (modules/shared_cmd_options.py)
opts = None                # options.Options
state = None               # shared_state.State
sd_model = None            # the loaded model (webui: a property backed by sd_models.model_data)
device = None
hypernetworks = {}         # name -> path of webui's own hypernetwork list
loaded_hypernetworks = []  # webui's natively applied hypernetworks
parallel_processing_allowed = True

OptionInfo = options.OptionInfo
reload_hypernetworks = shared_items.reload_hypernetworks
