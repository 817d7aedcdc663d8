"""Restoring images: ``pipeline`` (``restore``: pad, tile, run, blend, crop), ``image_io`` (PIL / numpy / tensor
in and out), ``tiling`` (overlapping tiles and their blending)."""
