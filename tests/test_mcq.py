"""`babyllama eval --task ceval|cmmlu`: C-Eval's and CMMLU's folders written as published, scored by a
model whose answers are known in advance, so every accuracy is counted by hand; the prompt's exact
text; the context limit; bad files; progress events. The same scores from transformers on the
Hugging Face export: tests/test_export.py."""

from __future__ import annotations

import csv
import dataclasses
import json
import subprocess
import sys

import numpy as np
import pytest
from numpy_checkpoints import weight_shapes

from babyllama.config import ModelConfig
from babyllama.errors import UserError
from babyllama.mcq import TASKS, fixed_subset, load_subjects
from babyllama.mcq.questions import Question, Subject
from babyllama.mcq.scoring import encode_question, prompt_text, report, score_questions

FAVOURING = ModelConfig(vocab_size=2000, dim=32, n_layers=1, n_heads=2, max_seq_len=512)


def write_csv(path, header, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def question(n: int, answer: str) -> tuple[str, str, str, str, str, str]:
    return (f"第{n}题：{n}加{n}等于几？", str(n), str(2 * n), str(3 * n), str(4 * n), answer)


def write_ceval(folder, subjects: dict[str, str], dev: int = 5):
    """C-Eval's layout: dev/SUBJECT_dev.csv (with explanation) and val/SUBJECT_val.csv; one question per
    letter of the subject's answers string."""
    for name, answers in subjects.items():
        write_csv(folder / "val" / f"{name}_val.csv", ["id", "question", "A", "B", "C", "D", "answer"],
                  [(i, *question(i, a)) for i, a in enumerate(answers)])
        write_csv(folder / "dev" / f"{name}_dev.csv", ["id", "question", "A", "B", "C", "D", "answer", "explanation"],
                  [(i, *question(100 + i, "ABCD"[i % 4]), "") for i in range(dev)])
    return folder


def write_cmmlu(folder, subjects: dict[str, str], dev: int = 5):
    """CMMLU's layout: dev/SUBJECT.csv and test/SUBJECT.csv, the first column an unnamed index."""
    for name, answers in subjects.items():
        write_csv(folder / "test" / f"{name}.csv", ["", "Question", "A", "B", "C", "D", "Answer"],
                  [(i, *question(i, a)) for i, a in enumerate(answers)])
        write_csv(folder / "dev" / f"{name}.csv", ["", "Question", "A", "B", "C", "D", "Answer"],
                  [(i, *question(100 + i, "ABCD"[i % 4])) for i in range(dev)])
    return folder


def favouring_checkpoint(folder, tokenizer, letter: str, cfg: ModelConfig = FAVOURING):
    """A checkpoint that always answers `letter`. Its layers are zero, so the logits at a position
    depend on that position's token alone (its embedding against every embedding, tied); the
    letter's embedding is made a large multiple of the token before the letter in "答案： X", so
    after that token the letter outweighs every other."""
    from safetensors.numpy import save_file

    rng = np.random.default_rng(5)
    weights = {name: (np.ones(shape) if len(shape) == 1 else np.zeros(shape)).astype(np.float32)
               for name, shape in weight_shapes(cfg).items()}
    embedding = rng.normal(0, 0.02, (cfg.vocab_size, cfg.dim)).astype(np.float32)
    *_, before, token = tokenizer.encode(f"答案： {letter}")
    embedding[token] = 8 * embedding[before]
    weights["tok_embeddings.weight"] = embedding
    folder.mkdir(parents=True)
    save_file(weights, str(folder / "model.safetensors"))
    config = {"model": dataclasses.asdict(cfg), "train": {}, "tokenizer": tokenizer.describe(), "preset": None}
    (folder / "config.json").write_text(json.dumps(config), encoding="utf-8")
    return folder


def babyllama_eval(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "babyllama", "eval", *map(str, args)],
                          capture_output=True, text=True, timeout=300)


# ---------------------------------------------------------------------------------------
# The prompt


def test_prompts_are_lm_evaluation_harness_format_with_the_first_k_dev_examples(tmp_path):
    folder = write_ceval(tmp_path / "ceval", {"high_school_mathematics": "B"}, dev=3)
    [subject] = load_subjects(TASKS["ceval"], folder, shots=2)
    assert prompt_text(TASKS["ceval"], subject, subject.questions[0], 2) == (
        "以下是中国关于高中数学的单项选择题，请选出其中的正确答案。\n\n"
        "第100题：100加100等于几？\nA. 100\nB. 200\nC. 300\nD. 400\n答案： A\n\n"
        "第101题：101加101等于几？\nA. 101\nB. 202\nC. 303\nD. 404\n答案： B\n\n"
        "第0题：0加0等于几？\nA. 0\nB. 0\nC. 0\nD. 0\n答案："
    )
    folder = write_cmmlu(tmp_path / "cmmlu", {"anatomy": "C"})
    [subject] = load_subjects(TASKS["cmmlu"], folder)
    assert prompt_text(TASKS["cmmlu"], subject, subject.questions[0], 0) == (
        "以下是关于解剖学的单项选择题，请直接给出正确答案的选项。\n\n"
        "第0题：0加0等于几？\nA. 0\nB. 0\nC. 0\nD. 0\n答案："
    )


def test_the_letters_continue_the_prompt_as_the_harness_splits_them(tmp_path, sp_tokenizer):
    folder = write_ceval(tmp_path / "ceval", {"law": "A"})
    [subject] = load_subjects(TASKS["ceval"], folder)
    encoded = encode_question(sp_tokenizer, TASKS["ceval"], subject, subject.questions[0], 0, 512)
    text = prompt_text(TASKS["ceval"], subject, subject.questions[0], 0)
    assert encoded.context == sp_tokenizer.encode(text)
    for letter, continuation in zip("ABCD", encoded.continuations):
        assert encoded.context + continuation == sp_tokenizer.encode(text + " " + letter)


# ---------------------------------------------------------------------------------------
# Accuracies counted by hand


@pytest.mark.parametrize("letter", ["A", "C"])
def test_ceval_accuracy_per_subject_category_and_overall_equal_a_hand_count(tmp_path, sp_tokenizer, letter):
    ckpt = favouring_checkpoint(tmp_path / "ckpt", sp_tokenizer, letter)
    # The model answers `letter` everywhere: a subject's accuracy is the share of its answers that are it.
    answers = {"high_school_mathematics": "AACC", "college_physics": "BD", "law": f"{letter}D",
               "my_own_subject": f"{letter}"}
    folder = write_ceval(tmp_path / "ceval", answers)
    for shots in (0, 2):
        done = babyllama_eval("--ckpt", ckpt, "--task", "ceval", "--data", folder, "--shots", shots, "--json")
        assert done.returncode == 0, done.stderr
        result = json.loads(done.stdout)
        expected = {"college_physics": 0 / 2, "high_school_mathematics": 2 / 4, "law": 1 / 2, "my_own_subject": 1 / 1}
        assert {name: s["accuracy"] for name, s in result["per_subject"].items()} == expected
        assert list(result["per_subject"]) == sorted(answers)
        assert result["per_subject"]["my_own_subject"]["categories"] == []
        stem = result["per_category"]["STEM"]
        assert (stem["questions"], stem["correct"], stem["accuracy"], stem["subject_average"]) == (6, 2, 2 / 6, 0.25)
        assert result["per_category"]["Humanities"]["accuracy"] == 1 / 2
        assert set(result["per_category"]) == {"STEM", "Humanities"}
        assert (result["questions"], result["correct"], result["accuracy"]) == (9, 4, 4 / 9)
        assert result["subject_average"] == pytest.approx((0 + 0.5 + 0.5 + 1) / 4, abs=1e-15)
        assert (result["task"], result["shots"], result["subjects"], result["chance"]) == ("ceval", shots, 4, 0.25)
        assert (result["fewer_shots"], result["cut"]) == (0, 0)


def test_cmmlu_counts_a_china_specific_subject_in_both_its_categories(tmp_path, sp_tokenizer):
    ckpt = favouring_checkpoint(tmp_path / "ckpt", sp_tokenizer, "D")
    folder = write_cmmlu(tmp_path / "cmmlu", {"ancient_chinese": "DDDA", "anatomy": "ABCD", "arts": "DD"})
    done = babyllama_eval("--ckpt", ckpt, "--task", "cmmlu", "--data", folder, "--shots", 5, "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    categories = {name: (c["questions"], c["accuracy"]) for name, c in result["per_category"].items()}
    assert categories == {"STEM": (4, 1 / 4), "Humanities": (2, 1.0), "Social Science": (4, 3 / 4),
                          "China specific": (4, 3 / 4)}
    assert list(result["per_category"]) == ["STEM", "Humanities", "Social Science", "China specific"]
    assert (result["questions"], result["accuracy"]) == (10, 6 / 10)


def test_subjects_and_questions_choose_a_fixed_subset(tmp_path, sp_tokenizer):
    ckpt = favouring_checkpoint(tmp_path / "ckpt", sp_tokenizer, "B")
    folder = write_ceval(tmp_path / "ceval", {"law": "BBAA", "logic": "ABBB", "marxism": "BB"})
    done = babyllama_eval("--ckpt", ckpt, "--task", "ceval", "--data", folder, "--subjects", "law", "logic",
                          "--questions", 5, "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    # In turn: law 1, logic 1, law 2, logic 2, law 3.
    assert {name: (s["questions"], s["correct"]) for name, s in result["per_subject"].items()} == \
        {"law": (3, 2), "logic": (2, 1)}


def test_fixed_subset_takes_each_subjects_questions_in_turn():
    def subject(name, n):
        return Subject(name, name, (), (), tuple(Question(f"{name}{i}", ("", "", "", ""), "A", "") for i in range(n)))

    picked = fixed_subset([subject("a", 1), subject("b", 3), subject("c", 2)], 5)
    assert [[q.question for q in s.questions] for s in picked] == [["a0"], ["b0", "b1"], ["c0", "c1"]]
    assert [s.name for s in fixed_subset([subject("a", 1), subject("b", 3)], 1)] == ["a"]


def test_text_report_lists_subjects_categories_average_and_guessing_within_80_columns(tmp_path, sp_tokenizer):
    ckpt = favouring_checkpoint(tmp_path / "ckpt", sp_tokenizer, "A")
    folder = write_ceval(tmp_path / "ceval", {"environmental_impact_assessment_engineer": "AB", "law": "A"})
    done = babyllama_eval("--ckpt", ckpt, "--task", "ceval", "--data", folder)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == f"C-Eval (val), zero-shot: {ckpt}"
    assert "environmental_impact_assessment_engineer" + " " * 13 + "2     50.0%" in lines
    assert "Humanities" + " " * 43 + "1    100.0%" in lines
    assert "all" + " " * 50 + "3     66.7%" in lines
    assert "average of the 2 subjects 75.0%; guessing scores 25%" in lines
    assert all(len(line) <= 80 for line in lines[1:])


# ---------------------------------------------------------------------------------------
# The context limit


def test_examples_that_do_not_fit_are_dropped_last_first_then_the_question_is_cut(tmp_path, sp_tokenizer):
    folder = write_ceval(tmp_path / "ceval", {"law": "A"}, dev=5)
    task = TASKS["ceval"]
    [subject] = load_subjects(task, folder, shots=5)
    q = subject.questions[0]
    lengths = [len(sp_tokenizer.encode(prompt_text(task, subject, q, k))) + 1 for k in range(6)]
    fits_two = lengths[2]
    encoded = encode_question(sp_tokenizer, task, subject, q, 5, fits_two)
    assert (encoded.shots, encoded.cut, len(encoded.context) + 1) == (2, 0, fits_two)
    encoded = encode_question(sp_tokenizer, task, subject, q, 5, lengths[0] - 3)
    assert (encoded.shots, encoded.cut) == (0, 3)
    assert encoded.context == sp_tokenizer.encode(prompt_text(task, subject, q, 0))[3:]

    small = dataclasses.replace(FAVOURING, max_seq_len=fits_two)
    ckpt = favouring_checkpoint(tmp_path / "ckpt", sp_tokenizer, "A", small)
    done = babyllama_eval("--ckpt", ckpt, "--task", "ceval", "--data", folder, "--shots", 5)
    assert done.returncode == 0, done.stderr
    assert f"note: 1 questions had fewer than 5 examples, to fit the model's {fits_two} tokens" in done.stdout


def test_scores_of_a_cut_prompt_come_from_the_model_context(tmp_path, sp_tokenizer):
    """Scoring never asks the decoder for more positions than it holds."""
    from babyllama.checkpoint import load_model_for_inference
    from babyllama.decode import NumpyDecoder

    small = dataclasses.replace(FAVOURING, max_seq_len=12)
    loaded = load_model_for_inference(favouring_checkpoint(tmp_path / "ckpt", sp_tokenizer, "C", small))
    folder = write_ceval(tmp_path / "ceval", {"law": "CA"})
    subjects = load_subjects(TASKS["ceval"], folder, shots=1)
    scored = score_questions(NumpyDecoder(loaded.cfg, loaded.weights), sp_tokenizer, TASKS["ceval"], subjects, 1)
    assert [(s.predicted, s.shots) for s in scored] == [("C", 0), ("C", 0)]
    assert all(s.cut > 0 for s in scored)
    assert report(TASKS["ceval"], subjects, scored, 1)["cut"] == 2


# ---------------------------------------------------------------------------------------
# Faults and events


def test_a_bad_answer_is_one_line_naming_the_file_and_its_line(tmp_path, sp_tokenizer):
    ckpt = favouring_checkpoint(tmp_path / "ckpt", sp_tokenizer, "A")
    folder = write_ceval(tmp_path / "ceval", {"law": "A"})
    bad = write_csv(folder / "val" / "logic_val.csv", ["id", "question", "A", "B", "C", "D", "answer"],
                    [(0, "两行的\n题目", "1", "2", "3", "4", "A"), (1, "q", "1", "2", "3", "4", "E")])
    done = babyllama_eval("--ckpt", ckpt, "--task", "ceval", "--data", folder)
    assert done.returncode == 2
    assert done.stderr == f"babyllama eval: error: {bad}:4: the answer 'E' is not one of A, B, C, D\n"


@pytest.mark.parametrize("content, message", [
    ("id,question,A,B,C\n0,q,1,2,3\n", "{path}:1: the header lacks D, answer (it has id, question, A, B, C)"),
    ("id,question,A,B,C,D,answer\n0,q,1,2,3,4,A\n1,q,1,2,3,A\n", "{path}:3: 6 fields where the header has 7"),
    ("", "{path}: is empty; expected a header with the columns question, A, B, C, D, answer"),
])
def test_a_malformed_file_is_one_line_naming_it(tmp_path, content, message):
    folder = tmp_path / "ceval"
    path = folder / "val" / "law_val.csv"
    path.parent.mkdir(parents=True)
    path.write_text(content, encoding="utf-8")
    with pytest.raises(UserError) as e:
        load_subjects(TASKS["ceval"], folder)
    assert str(e.value) == message.format(path=path)


def test_a_file_that_is_not_utf8_names_its_line(tmp_path):
    folder = tmp_path / "cmmlu"
    path = folder / "test" / "arts.csv"
    path.parent.mkdir(parents=True)
    path.write_bytes(",Question,A,B,C,D,Answer\n0,q,1,2,3,4,A\n1,\xff,1,2,3,4,A\n".encode("latin-1"))
    with pytest.raises(UserError, match=rf"^{path}:3: not UTF-8 text"):
        load_subjects(TASKS["cmmlu"], folder)


def test_a_folder_of_the_other_layout_or_missing_examples_is_one_line(tmp_path, sp_tokenizer):
    ckpt = favouring_checkpoint(tmp_path / "ckpt", sp_tokenizer, "A")
    cmmlu = write_cmmlu(tmp_path / "cmmlu", {"arts": "A"})
    done = babyllama_eval("--ckpt", ckpt, "--task", "ceval", "--data", cmmlu)
    assert done.returncode == 2
    assert done.stderr == (f"babyllama eval: error: {cmmlu}: no val/SUBJECT_val.csv files; is it the C-Eval folder? "
                           "(expected dev/SUBJECT_dev.csv and val/SUBJECT_val.csv files, as published)\n")
    (cmmlu / "dev" / "arts.csv").unlink()
    done = babyllama_eval("--ckpt", ckpt, "--task", "cmmlu", "--data", cmmlu, "--shots", 1)
    assert done.stderr == (f"babyllama eval: error: {cmmlu / 'dev' / 'arts.csv'}: missing; 1-shot prompts take "
                           "their examples from the dev split (or use --shots 0)\n")
    done = babyllama_eval("--ckpt", ckpt, "--task", "cmmlu", "--data", cmmlu, "--subjects", "law")
    assert done.stderr == f"babyllama eval: error: {cmmlu / 'test'}: has no subject law (it has arts)\n"
    done = babyllama_eval("--ckpt", ckpt, "--task", "cmmlu", "--data", cmmlu, "--batches", 2)
    assert done.stderr == "babyllama eval: error: --task cmmlu does not take --batches (those are for token files)\n"


def test_progress_jsonl_says_start_progress_and_done_with_the_report(tmp_path, sp_tokenizer):
    ckpt = favouring_checkpoint(tmp_path / "ckpt", sp_tokenizer, "A")
    folder = write_cmmlu(tmp_path / "cmmlu", {"arts": "AB", "anatomy": "A"})
    done = babyllama_eval("--ckpt", ckpt, "--task", "cmmlu", "--data", folder, "--progress", "jsonl")
    assert done.returncode == 0, done.stderr
    events = [json.loads(line) for line in done.stdout.splitlines()]
    assert events[0]["event"] == "start" and events[0]["total_questions"] == 3
    progress = [e for e in events if e["event"] == "progress"]
    assert progress and (progress[-1]["questions"], progress[-1]["total_questions"], progress[-1]["correct"]) == (3, 3, 2)
    assert events[-1]["event"] == "done"
    assert (events[-1]["accuracy"], events[-1]["questions"]) == (2 / 3, 3)
    assert events[-1]["per_subject"]["arts"]["accuracy"] == 0.5
    failed = babyllama_eval("--ckpt", ckpt, "--task", "cmmlu", "--data", tmp_path / "nowhere", "--progress", "jsonl")
    assert failed.returncode == 2
    assert json.loads(failed.stdout.splitlines()[-1])["event"] == "error"
