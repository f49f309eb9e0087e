"""Import and export: CSV (long or wide), TensorBoard event files."""
