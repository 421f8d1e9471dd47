"""Run by webui after installing the extension from its URL, and at every start (unless --skip-install).

Installs only the optional extras that are missing, through webui's own launch.is_installed / launch.run_pip,
pinned and without dependencies, so torch and everything webui pins stay as they are. Prints nothing when all
are present. HYPERNET_EXT_NO_EXTRAS=1 skips it. Everything else hypernet_ext needs comes with webui.
"""
import os

import launch

# (distribution, version): pure-Python optimizers hypernet_ext offers when they are installed
EXTRAS = (
    ("lion-pytorch", "0.2.5"),
    ("prodigyopt", "1.1.2"),
    ("dadaptation", "3.2"),
    ("schedulefree", "1.4.1"),
)


def main():
    if os.environ.get("HYPERNET_EXT_NO_EXTRAS", "").strip() not in ("", "0"):
        return
    for name, version in EXTRAS:
        if launch.is_installed(name):
            continue
        try:
            launch.run_pip(f"install --no-deps {name}=={version}", f"hypernet_ext extra: {name} {version}")
        except Exception as err:  # noqa: BLE001 - an optional extra: say so in one line and go on
            reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            print(f"hypernet_ext: could not install the optional {name}=={version} ({reason}); everything else "
                  "works, and its optimizer is offered once it is installed")


if __name__ == "__main__":
    main()
