"""The spawner's failures that users read."""

from __future__ import annotations


class SpawnError(RuntimeError):
    """A spawn failed for a reason the user should read; JupyterHub shows `jupyterhub_message`."""

    def __init__(self, message: str):
        super().__init__(message)
        self.jupyterhub_message = message
