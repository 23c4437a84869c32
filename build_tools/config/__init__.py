"""Reading and checking the inputs: matrix.yaml (model, loader, JSON Schema), device strings, pyproject.toml."""
