"""``python -m hypernet_ext``: see hypernet_ext.standalone.cli."""
import sys

from .standalone.cli import main

sys.exit(main())
