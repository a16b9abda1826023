"""The bottom layer: registries, errors, YAML reading, the one identity function, atomic writes."""
