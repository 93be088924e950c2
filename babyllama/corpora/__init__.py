"""Corpus readers: one streaming reader per `--format`, each yielding documents and, for a
record it cannot read, a `BadRecord`; `--format auto` sniffs each file. The names below are
the package's interface. See docs/ARCHITECTURE.md."""

from babyllama.corpora.corpus_file import BLOCK_BYTES
from babyllama.corpora.formats import FORMAT_HELP, FORMATS, SFT_FORMATS, check_format, describe_format, is_sft_format
from babyllama.corpora.inputs import expand_inputs
from babyllama.corpora.reading import iter_records, read_documents
from babyllama.corpora.records import BadRecord, Document, Record
from babyllama.corpora.sniff import UnrecognisedFile, sniff_format

__all__ = [
    "BLOCK_BYTES",
    "FORMATS",
    "FORMAT_HELP",
    "SFT_FORMATS",
    "BadRecord",
    "Document",
    "Record",
    "UnrecognisedFile",
    "check_format",
    "describe_format",
    "expand_inputs",
    "is_sft_format",
    "iter_records",
    "read_documents",
    "sniff_format",
]
