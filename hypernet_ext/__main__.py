"""``python -m hypernet_ext``: see hypernet_ext.cli."""
import sys

from .cli import main

sys.exit(main())
