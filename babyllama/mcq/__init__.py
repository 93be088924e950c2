"""C-Eval and CMMLU: multiple-choice benchmarks scored by the log-likelihood of the answer letter
(`babyllama eval --task`, and the trainer's `bench` rows). The package's interface is the
questions side, standard library only, which the app's dialog uses too; scoring (numpy) is
`babyllama.mcq.scoring`."""

from babyllama.mcq.questions import TASKS, Question, Subject, Task, find_subjects, fixed_subset, load_subjects

__all__ = ["TASKS", "Question", "Subject", "Task", "find_subjects", "fixed_subset", "load_subjects"]
