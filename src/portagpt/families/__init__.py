"""Built-in families, one folder each; each folder's ``plugin`` module registers it."""
