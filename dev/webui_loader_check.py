"""Loads hypernetwork files with webui v1.10.1's own loader (modules/hypernetworks/hypernetwork.py: Hypernetwork.load,
through webui's safe unpickler) and prints, per file, its step, widths and whether webui took the .optim beside
it (its hash matched). Run with webui's python, in webui's folder, PYTHONPATH=. (dev/webui_e2e.py does).
Exit status 1 when a file does not load or its .optim is not taken."""
import json
import os
import sys


def main(paths):
    sys.argv = sys.argv[:1]   # webui parses its command line on import
    from modules import initialize

    initialize.imports()       # webui's own import order (launch -> webui.py)
    import modules.safe  # noqa: F401  (webui's torch.load check, on as for users)
    from modules.hypernetworks.hypernetwork import Hypernetwork

    failed = False
    for path in paths:
        network = Hypernetwork()
        try:
            network.load(path)
        except Exception as err:  # noqa: BLE001 - report every file
            print(json.dumps({"path": path, "error": f"{type(err).__name__}: {err}"}))
            failed = True
            continue
        has_optim = os.path.exists(path + ".optim")
        taken = network.optimizer_state_dict is not None
        print(json.dumps({"path": path, "step": network.step, "widths": sorted(network.layers),
                          "optim_file": has_optim, "optim_taken": taken, "optimizer": network.optimizer_name}))
        failed |= not network.layers or (has_optim and not taken)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
