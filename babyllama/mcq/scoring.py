"""Multiple-choice accuracy by log-likelihood: the prompt of each question (lm-evaluation-harness's
format for its ceval-valid and cmmlu tasks), fitting it into the model's context, scoring the four
answer letters with the numpy decoder, and the report per subject, per category and overall.

The format, the truncation and the two averages: docs/ARCHITECTURE.md, "Benchmarks".
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from babyllama.errors import UserError
from babyllama.mcq.questions import LETTERS, TASKS, Question, Subject, Task, fixed_subset, load_subjects

CHANCE = 0.25
ANSWER_CUE = "答案："
# Between a question's cue and its letter (the harness's target_delimiter), and after each example.
TARGET_DELIMITER = " "
FEW_SHOT_DELIMITER = "\n\n"

# Called after each question with the questions scored so far and how many were right.
Progress = Callable[[int, int], None]


def question_text(question: Question) -> str:
    """The question, its four options and the answer cue, without the answer."""
    options = "".join(f"\n{letter}. {option}" for letter, option in zip(LETTERS, question.choices))
    return f"{question.question.strip()}{options}\n{ANSWER_CUE}"


def prompt_text(task: Task, subject: Subject, question: Question, shots: int) -> str:
    """The description, the first `shots` examples with their answers, then the question."""
    examples = "".join(question_text(e) + TARGET_DELIMITER + e.answer + FEW_SHOT_DELIMITER
                       for e in subject.examples[:shots])
    return task.description.format(subject=subject.title) + examples + question_text(question)


@dataclass(frozen=True)
class Encoded:
    """A question's tokens: the context and each letter's continuation (as the harness splits them:
    the tokens of context + " A" after those of the context alone)."""

    context: list[int]
    continuations: list[list[int]]
    shots: int  # examples that fit
    cut: int  # tokens cut from the context's left when even no example fits


def encode_question(tokenizer, task: Task, subject: Subject, question: Question, shots: int,
                    max_seq_len: int) -> Encoded:
    """The question with as many of the `shots` examples as fit the context (the last ones dropped
    first), and with none, cut from the left as the harness cuts, when even that does not fit."""
    for k in range(shots, -1, -1):
        text = prompt_text(task, subject, question, k)
        context = tokenizer.encode(text)
        continuations = [tokenizer.encode(text + TARGET_DELIMITER + letter)[len(context):] for letter in LETTERS]
        if not all(continuations):
            raise UserError(f"{question.where}: tokenizer {tokenizer.name} gives no token for an answer letter "
                            "after the prompt")
        # The model reads the context and every continuation token but the last.
        length = len(context) + max(map(len, continuations)) - 1
        if length <= max_seq_len:
            return Encoded(context, continuations, k, 0)
    cut = length - max_seq_len
    return Encoded(context[cut:], continuations, 0, cut)


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    logits = logits.astype(np.float64)
    peak = logits.max()
    return logits - (np.log(np.exp(logits - peak).sum()) + peak)


def letter_log_likelihoods(decoder, encoded: Encoded) -> list[float]:
    """log p(continuation | context) for each letter: the context is run once, and a continuation
    of several tokens is fed after it on the decoder's cache, rewound between letters."""
    first = _log_softmax(decoder.prefill(encoded.context))
    scores = []
    for continuation in encoded.continuations:
        score = first[continuation[0]]
        if len(continuation) > 1:
            decoder.rewind(len(encoded.context))
            for previous, token in zip(continuation, continuation[1:]):
                score += _log_softmax(decoder.decode(previous))[token]
        scores.append(float(score))
    return scores


@dataclass(frozen=True)
class Scored:
    subject: str
    answer: str
    predicted: str
    log_likelihoods: list[float]
    shots: int
    cut: int

    @property
    def correct(self) -> bool:
        return self.predicted == self.answer

    @property
    def answer_log_likelihood(self) -> float:
        return self.log_likelihoods[LETTERS.index(self.answer)]


def score_questions(decoder, tokenizer, task: Task, subjects: list[Subject], shots: int,
                    progress: Progress | None = None) -> list[Scored]:
    """Every question of the subjects, in order; the predicted letter is the most likely (the first on a tie)."""
    scored = []
    correct = 0
    for subject in subjects:
        for question in subject.questions:
            encoded = encode_question(tokenizer, task, subject, question, shots, decoder.max_seq_len)
            log_likelihoods = letter_log_likelihoods(decoder, encoded)
            predicted = LETTERS[int(np.argmax(log_likelihoods))]
            scored.append(Scored(subject.name, question.answer, predicted, log_likelihoods, encoded.shots,
                                 encoded.cut))
            correct += predicted == question.answer
            if progress is not None:
                progress(len(scored), correct)
    return scored


def _group(results: list[Scored], accuracies: list[float]) -> dict:
    right = sum(r.correct for r in results)
    return {"questions": len(results), "correct": right, "accuracy": right / len(results),
            "subject_average": float(np.mean(accuracies))}


def report(task: Task, subjects: list[Subject], scored: list[Scored], shots: int) -> dict:
    """Accuracy per subject, per category and over all questions (`accuracy`, weighted by questions as
    lm-evaluation-harness's group scores are) with `subject_average` (each subject counting once, as
    C-Eval's and CMMLU's own scripts average), next to the chance of guessing."""
    by_subject = {s.name: [r for r in scored if r.subject == s.name] for s in subjects}
    per_subject = {}
    for subject in subjects:
        results = by_subject[subject.name]
        right = sum(r.correct for r in results)
        per_subject[subject.name] = {"title": subject.title, "categories": list(subject.categories),
                                     "questions": len(results), "correct": right, "accuracy": right / len(results)}
    per_category = {}
    for category in task.categories:
        members = [s.name for s in subjects if category in s.categories]
        if members:
            per_category[category] = {
                "subjects": len(members),
                **_group([r for name in members for r in by_subject[name]],
                         [per_subject[name]["accuracy"] for name in members]),
            }
    fewer = sum(r.shots < shots for r in scored)
    cut = sum(r.cut > 0 for r in scored)
    return {
        "task": task.name,
        "shots": shots,
        "subjects": len(subjects),
        **_group(scored, [entry["accuracy"] for entry in per_subject.values()]),
        "chance": CHANCE,
        # Moves before the accuracy leaves chance: the mean log-likelihood of the right letter.
        "answer_log_likelihood": float(np.mean([r.answer_log_likelihood for r in scored])),
        "fewer_shots": fewer,
        "cut": cut,
        "per_category": per_category,
        "per_subject": per_subject,
    }


class TrainingBench:
    """The benchmark the trainer scores every bench_interval steps: a fixed subset, loaded once."""

    def __init__(self, tokenizer, train):
        """`train` is the run's TrainConfig: its bench_task, bench_data (absolute), bench_questions and bench_shots."""
        self.tokenizer = tokenizer
        self.task = TASKS[train.bench_task]
        subjects = load_subjects(self.task, Path(train.bench_data), shots=train.bench_shots)
        self.subjects = fixed_subset(subjects, train.bench_questions)
        self.shots = train.bench_shots

    def __call__(self, step: int, decoder) -> dict:
        """The `bench` metrics row for the weights `decoder` holds."""
        began = time.perf_counter()
        result = report(self.task, self.subjects, score_questions(decoder, self.tokenizer, self.task, self.subjects,
                                                                  self.shots), self.shots)
        return {"kind": "bench", "step": step, "task": self.task.name, "shots": self.shots,
                "accuracy": result["accuracy"], "questions": result["questions"], "subjects": result["subjects"],
                "chance": CHANCE, "answer_log_likelihood": result["answer_log_likelihood"],
                "bench_ms": round((time.perf_counter() - began) * 1000, 1)}
