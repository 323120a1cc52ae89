"""``python -m combonet`` is the ``combonet`` command (also what ``torchrun -m combonet`` runs)."""

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
