"""`babyllama clean`: corpora to JSON lines without low-quality documents and duplicates (exact
and near), resumable, on all cores. The names below are the package's interface.
See docs/ARCHITECTURE.md."""

from babyllama.clean.pipeline import clean
from babyllama.clean.settings import FILTER_RULES, RULE_HELP, RULES, CleanSettings
from babyllama.clean.work import CleanPaths, read_journal

__all__ = ["FILTER_RULES", "RULES", "RULE_HELP", "CleanPaths", "CleanSettings", "clean", "read_journal"]
