"""C-Eval and CMMLU: multiple-choice benchmarks scored by the log-likelihood of the answer letter
(`babyllama eval --task`, and the trainer's `bench` rows)."""

from babyllama.mcq.questions import TASKS, Subject, Task, fixed_subset, load_subjects
from babyllama.mcq.scoring import CHANCE, TrainingBench

__all__ = ["CHANCE", "TASKS", "Subject", "Task", "TrainingBench", "fixed_subset", "load_subjects"]
