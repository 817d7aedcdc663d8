"""Training data: ``sources`` (image datasets through ``datasets``), ``degradations`` (the named tasks), ``pairs``
(seeded degraded/clean patch pairs)."""
