"""C-Eval's and CMMLU's folders as published, read into questions: the layouts, the CSV columns,
the checks (a bad file is one line naming the file and the line), and the fixed subset the
trainer scores. Standard library only.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

from babyllama.errors import UserError
from babyllama.mcq.subjects import CEVAL_CATEGORIES, CEVAL_SUBJECTS, CMMLU_CATEGORIES, CMMLU_SUBJECTS

LETTERS = ("A", "B", "C", "D")
# The columns a file must have, by their lower-cased header (C-Eval: question, answer; CMMLU: Question, Answer).
COLUMNS = ("question", "a", "b", "c", "d", "answer")
FEW_SHOT_SPLIT = "dev"


@dataclass(frozen=True)
class Task:
    name: str
    title: str
    eval_split: str  # the split with answers that is scored
    subjects: dict[str, tuple[str, tuple[str, ...]]]
    categories: tuple[str, ...]
    # The prompt's first line, as lm-evaluation-harness's task definitions word it, and the blank line after.
    description: str
    suffixed: bool  # files named SUBJECT_SPLIT.csv (C-Eval), else SUBJECT.csv (CMMLU)

    def file(self, folder: Path, split: str, subject: str) -> Path:
        return folder / split / (f"{subject}_{split}.csv" if self.suffixed else f"{subject}.csv")

    def subject_of(self, path: Path, split: str) -> str | None:
        if not self.suffixed:
            return path.stem
        suffix = f"_{split}"
        return path.stem[: -len(suffix)] if path.stem.endswith(suffix) else None

    def layout(self) -> str:
        files = (self.file(Path(), split, "SUBJECT") for split in (FEW_SHOT_SPLIT, self.eval_split))
        return f"{' and '.join(map(str, files))} files, as published"


TASKS = {
    "ceval": Task("ceval", "C-Eval", "val", CEVAL_SUBJECTS, CEVAL_CATEGORIES,
                  "以下是中国关于{subject}的单项选择题，请选出其中的正确答案。\n\n", suffixed=True),
    "cmmlu": Task("cmmlu", "CMMLU", "test", CMMLU_SUBJECTS, CMMLU_CATEGORIES,
                  "以下是关于{subject}的单项选择题，请直接给出正确答案的选项。\n\n", suffixed=False),
}


@dataclass(frozen=True)
class Question:
    question: str
    choices: tuple[str, str, str, str]
    answer: str  # one of LETTERS
    where: str  # FILE:LINE


@dataclass(frozen=True)
class Subject:
    name: str  # the file name's stem
    title: str  # the Chinese name the prompt uses (the name itself for a subject outside the tables)
    categories: tuple[str, ...]
    examples: tuple[Question, ...]  # the dev split, in file order: the k-shot examples are its first k
    questions: tuple[Question, ...]


def read_questions(path: Path) -> list[Question]:
    """The rows of one CSV file; UserError "FILE:LINE: what is wrong" for the first bad one."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise UserError(f"{path}: cannot be read ({e.strerror})") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise UserError(f"{path}:{line}: not UTF-8 text (byte {e.start:,})") from None
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader, None)
        if header is None:
            raise UserError(f"{path}: is empty; expected a header with the columns {', '.join(_spelled(COLUMNS))}")
        names = [name.strip().lower() for name in header]
        missing = [column for column in COLUMNS if column not in names]
        if missing:
            raise UserError(f"{path}:1: the header lacks {', '.join(_spelled(missing))} (it has {', '.join(header)})")
        index = [names.index(column) for column in COLUMNS]
        questions = []
        while True:
            line = reader.line_num + 1
            row = next(reader, None)
            if row is None:
                break
            if not row:
                continue
            if len(row) != len(header):
                raise UserError(f"{path}:{line}: {len(row)} fields where the header has {len(header)}")
            question, a, b, c, d, answer = (row[i] for i in index)
            answer = answer.strip()
            if answer not in LETTERS:
                raise UserError(f"{path}:{line}: the answer {answer!r} is not one of {', '.join(LETTERS)}")
            questions.append(Question(question, (a, b, c, d), answer, f"{path}:{line}"))
    except csv.Error as e:
        raise UserError(f"{path}:{reader.line_num}: not valid CSV ({e})") from None
    return questions


def _spelled(columns) -> list[str]:
    return [column if len(column) > 1 else column.upper() for column in columns]


def find_subjects(task: Task, folder: Path) -> list[str]:
    """The subjects whose scored split is in `folder`, sorted; UserError when the folder is not the task's layout."""
    scored = folder / task.eval_split
    if not folder.is_dir():
        raise UserError(f"{folder}: no such folder; give the {task.title} folder ({task.layout()})")
    found = sorted(s for s in (task.subject_of(p, task.eval_split) for p in scored.glob("*.csv")) if s)
    if not found:
        example = task.file(folder, task.eval_split, "SUBJECT")
        raise UserError(f"{folder}: no {example.relative_to(folder)} files; is it the {task.title} folder? "
                        f"(expected {task.layout()})")
    return found


def load_subjects(task: Task, folder: Path, subjects: list[str] | None = None, shots: int = 0) -> list[Subject]:
    """The subjects to score (all, or those named), each with its questions and, for k-shot, its examples."""
    available = find_subjects(task, folder)
    if subjects:
        unknown = [s for s in subjects if s not in available]
        if unknown:
            shown = ", ".join(available[:8]) + (", ..." if len(available) > 8 else "")
            raise UserError(f"{folder / task.eval_split}: has no subject {', '.join(unknown)} (it has {shown})")
        available = [s for s in available if s in set(subjects)]
    loaded = []
    for name in available:
        path = task.file(folder, task.eval_split, name)
        questions = read_questions(path)
        if not questions:
            raise UserError(f"{path}: holds no questions")
        examples: list[Question] = []
        if shots > 0:
            dev = task.file(folder, FEW_SHOT_SPLIT, name)
            if not dev.is_file():
                raise UserError(f"{dev}: missing; {shots}-shot prompts take their examples from the {FEW_SHOT_SPLIT} "
                                "split (or use --shots 0)")
            examples = read_questions(dev)
            if len(examples) < shots:
                raise UserError(f"{dev}: holds {len(examples)} examples, fewer than the {shots} shots asked")
        title, categories = task.subjects.get(name, (name, ()))
        loaded.append(Subject(name, title, categories, tuple(examples[:shots]), tuple(questions)))
    return loaded


def fixed_subset(subjects: list[Subject], n: int) -> list[Subject]:
    """`n` questions spread over the subjects: the first of each in turn, then the second, ...;
    the same questions every time, so scores at different steps compare."""
    counts = [0] * len(subjects)
    left = n
    depth = 0
    while left > 0 and any(len(s.questions) > depth for s in subjects):
        for i, subject in enumerate(subjects):
            if left > 0 and len(subject.questions) > depth:
                counts[i] += 1
                left -= 1
        depth += 1
    return [Subject(s.name, s.title, s.categories, s.examples, s.questions[:k])
            for s, k in zip(subjects, counts) if k]
