"""Data: loading prompts and texts through `datasets`, row validation that names file and row, bundled toy tasks."""
