"""Worker processes and their supervisor (``celeriac worker``).

Imports only the wire layer and the shared vocabulary; never the scheduler,
the client, the front doors or the CLI.
"""
