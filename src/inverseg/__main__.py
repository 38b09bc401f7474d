"""``python -m inverseg`` (and ``torchrun -m inverseg train …``) runs the ``inverseg`` command."""

from .cli.main import main

raise SystemExit(main())
