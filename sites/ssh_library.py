"""asyncssh, imported for the whole workbench without the five CryptographyDeprecationWarning blocks
its DSA support prints at import (cryptography 43 and later deprecate DSA). The workbench neither
makes nor accepts DSA keys (ed25519 only), so the hub, the CLI and the tunnel daemon say nothing of
it to the people who start them. Import asyncssh from here, never directly."""

import warnings

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="DSA is deprecated")
    import asyncssh

__all__ = ["asyncssh"]
