"""The corpus formats `--format` names, and what a file in each holds.

The formats: docs/ARCHITECTURE.md, "corpora/".
"""

from __future__ import annotations

from babyllama.errors import UserError

FORMATS = ("wiki", "baike", "c4", "wudao", "medical", "medical-sft", "text", "jsonl:FIELD",
           "sft-alpaca", "sft-conversations", "auto")
# Conversations for fine-tuning: prepare encodes them with the tokenizer's chat template and a loss mask.
SFT_FORMATS = ("sft-alpaca", "sft-conversations")

FORMAT_HELP = (
    "corpus format: wiki, baike, c4, wudao, medical, medical-sft, text, jsonl:FIELD "
    "(any JSON lines file, the named field); conversations for fine-tuning: sft-alpaca, "
    "sft-conversations; or auto (sniff each file's first record; plain text only from .txt files)"
)


def check_format(fmt: str) -> str:
    """Return `fmt` if it names a format; UserError listing the formats otherwise."""
    if fmt in FORMATS or (fmt.startswith("jsonl:") and len(fmt) > len("jsonl:")):
        return fmt
    raise UserError(f"unknown corpus format {fmt!r}; choose one of: {', '.join(FORMATS)}")


_FORMAT_SHAPES = {
    "wiki": 'a JSON array of {"completion"}',
    "baike": 'JSON lines of {"title", "summary", "sections"}',
    "c4": 'JSON lines of {"text"}',
    "wudao": 'JSON arrays of {"title", "content"}',
    "medical": 'JSON lines of {"text"}',
    "medical-sft": 'JSON lines of {"instruction", "input", "output"}',
    "text": "plain UTF-8 text",
    "sft-alpaca": 'JSON lines of {"instruction", "input", "output"}',
    "sft-conversations": 'JSON lines of {"conversations" or "messages": [{"role", "content"} or {"from", "value"}]}',
}


def is_sft_format(fmt: str) -> bool:
    """Whether `fmt` holds conversations for fine-tuning rather than text for pretraining."""
    return fmt in SFT_FORMATS


def describe_format(fmt: str) -> str:
    """What a file in `fmt` (a format, not auto) holds, in a few words."""
    if fmt.startswith("jsonl:"):
        return f'JSON lines of {{"{fmt[len("jsonl:"):]}"}}'
    return _FORMAT_SHAPES[fmt]
