"""Runs as the Train and Monitor screens see them: the new-run form's meaning, the runs table's poll, one run's metrics and their history, stop/kill/resume; no widgets."""
