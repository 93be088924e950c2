"""`babyllama prepare`: corpora to a token file, NAME.bin plus its manifest, on all cores and
resumable. The names below are the package's interface. See docs/ARCHITECTURE.md."""

from babyllama.prepare.journal import read_journal
from babyllama.prepare.pipeline import prepare
from babyllama.prepare.token_file import OutputPaths

__all__ = ["OutputPaths", "prepare", "read_journal"]
