"""``python -m combonet.bench``: the same as ``combonet bench``."""

from .cli import main

raise SystemExit(main())
