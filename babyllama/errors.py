"""Errors meant for the person at the terminal, not for a traceback."""

from __future__ import annotations

import re


class UserError(Exception):
    """Bad input or environment: the message says what is wrong and what to do.

    The CLI prints it as one line and exits non-zero; the app shows it as is, beside the
    field it concerns when `field` names one ("model.n_heads", "data", "tokenizer").
    """

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field


# MindSpore's C++ errors are a lead message, then blocks each under a heading between dashed banners:
#     ----------------------------------------------------
#     - C++ Call Stack: (For framework developers)
#     ----------------------------------------------------
# Split on it, the text is [lead, heading, body, heading, body, ...].
_MINDSPORE_HEADING = re.compile(r"^-{20,}\n- (.*)\n-{20,}$", re.MULTILINE)
# Blocks for MindSpore's developers: call stacks, the construct code's traceback, internal dumps.
_DEVELOPER_BLOCK = re.compile(r"Call Stack|Traceback|For framework developers")
MESSAGE_LIMIT = 300

LOWER_MEMORY = "lower --batch_size (raising --grad_accum keeps the tokens per step) or --max_seq_len"
# (what MindSpore's full text says, what to do about it); the first match wins.
_CAUSES = (
    (re.compile(r"Memory not enough"), LOWER_MEMORY),
    (re.compile(r"Launch kernel failed.*AllReduce|timed out node"),
     ("another worker stopped or cannot be reached: check every host and worker (msrun's worker logs), "
      "then resume with --resume")),
    (re.compile(r"kernel_build_client"),
     "MindSpore's kernel compiler (its AKG server process) stopped answering, see train.log"),
    (re.compile(r"ccsrc/frontend/|/ops/infer/|/core/abstract/"),
     "the graph did not compile, see train.log for MindSpore's full report"),
)


def describe_failure(error: BaseException) -> str:
    """One line for a status or a listing: what failed and, where the cause is known, what to do.

    A MindSpore error becomes its message without the banners, call stacks, code traceback
    and dumps around it; any other error is "Type: first line". The message is cut at
    MESSAGE_LIMIT characters; advice follows it after "; ".
    """
    text = str(error)
    said = _mindspore_message(text)
    if said is None:
        lines = text.strip().splitlines()
        said = f"{type(error).__name__}: {lines[0]}" if lines else ""
    said = said or type(error).__name__
    if len(said) > MESSAGE_LIMIT:
        said = said[: MESSAGE_LIMIT - 1].rstrip() + "…"
    if isinstance(error, MemoryError):
        advice = LOWER_MEMORY
    else:
        advice = next((advice for cause, advice in _CAUSES if cause.search(text)), None)
    return f"{said.rstrip('.')}; {advice}" if advice else said


def _mindspore_message(text: str) -> str | None:
    """The lead and the blocks meant for users, on one line; None for text not in MindSpore's form.

    Lines pointing elsewhere (a web address) are left out: they are not the failure.
    """
    parts = _MINDSPORE_HEADING.split(text)
    if len(parts) == 1:
        return None
    blocks = [("", parts[0])] + [(heading, body) for heading, body in zip(parts[1::2], parts[2::2])
                                 if not _DEVELOPER_BLOCK.search(heading)]
    said = []
    for heading, body in blocks:
        lines = [line.strip() for line in body.splitlines() if line.strip() and "://" not in line]
        if lines:
            said.append(" ".join([heading, *lines]).strip())
    return " ".join(said)
