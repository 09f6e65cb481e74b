"""The runtime layer under every model: checkpoint files, devices, precision, random generators
and process groups. It imports nothing from the rest of realdeal but ``errors`` and ``utils``."""
