"""Sub-commands of the ``neural3d`` CLI; each module exposes ``register(subparsers)``."""
