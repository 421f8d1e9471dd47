"""Stand-in for webui v1.10.1's top-level launch.py (which re-exports modules/launch_utils.py): what an
extension's install.py uses. run_pip records its commands instead of running pip."""
import importlib.metadata
import importlib.util

pip_commands = []   # (command, desc) of every run_pip call


def is_installed(package):
    """(modules/launch_utils.py: is_installed) a distribution by name, else an importable module."""
    try:
        dist = importlib.metadata.distribution(package)
    except importlib.metadata.PackageNotFoundError:
        try:
            spec = importlib.util.find_spec(package)
        except ModuleNotFoundError:
            return False
        return spec is not None
    return dist is not None


def run_pip(command, desc=None, live=False):
    """(modules/launch_utils.py: run_pip) recorded, not run."""
    pip_commands.append((command, desc))
