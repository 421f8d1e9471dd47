"""Stand-in for webui v1.10.1 modules/paths_internal.py: webui's folders (set by tests/webui_env.py)."""
import os

script_path = os.getcwd()
data_path = os.getcwd()
models_path = os.path.join(data_path, "models")
