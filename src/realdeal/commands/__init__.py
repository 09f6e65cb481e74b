"""Sub-commands of the ``realdeal`` command line; each module has ``register(subparsers)``."""
