"""Errors meant for the person at the terminal, not for a traceback."""


class UserError(Exception):
    """Bad input or environment: the message says what is wrong and what to do.

    The CLI prints it as one line and exits non-zero; the app shows it as is.
    """
