"""``python -m peft_adaptir.cli ...``: the same as the ``peft-adaptir`` command."""

from . import main

raise SystemExit(main())
