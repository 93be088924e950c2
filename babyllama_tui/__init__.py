"""babyllama-tui: the terminal app over babyllama's files and subprocesses (never imports mindspore)."""
