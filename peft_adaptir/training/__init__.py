"""Training an adapter with Accelerate: ``config`` (TrainingConfig), ``loop`` (``train``), ``datasets`` (what a run
reads), ``checkpoints`` (resume), ``optim`` (the fused AdamW), ``plots`` (curve and preview)."""
