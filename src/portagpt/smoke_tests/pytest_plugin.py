"""pytest plugin of the portagpt conformance kit (registered under pytest11)."""
