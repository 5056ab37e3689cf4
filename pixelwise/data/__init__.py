"""Data: the Sample every reader yields, one module per on-disk format, image I/O, training presets, the linter."""
