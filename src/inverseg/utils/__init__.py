"""Small shared helpers (image conversion and grids, atomic file writes)."""
