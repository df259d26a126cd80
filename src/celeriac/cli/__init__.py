"""The ``celeriac`` command: parsers, what each command does, ``--check``, configuration.

The top layer: it may import every other package; nothing imports it.
"""
