"""Corpus readers on small files written here: every format, .gz, folders and globs,
format sniffing, malformed records, resuming with skip, and byte positions."""

from __future__ import annotations

import gzip
import json
import random
import tracemalloc
import zlib
from pathlib import Path

import pytest

from babyllama.corpora import (
    BLOCK_BYTES,
    BadRecord,
    Document,
    UnrecognisedFile,
    check_format,
    expand_inputs,
    iter_records,
    read_documents,
    sniff_format,
)
from babyllama.errors import UserError


def write_lines(path: Path, records, *, trailing: str = "") -> Path:
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records) + trailing
    path.write_text(text, encoding="utf-8")
    return path


def write_array(path: Path, elements, *, indent: int | None = 4) -> Path:
    path.write_text(json.dumps(elements, ensure_ascii=False, indent=indent) + "\n", encoding="utf-8")
    return path


def gzip_copy(path: Path) -> Path:
    out = path.with_name(path.name + ".gz")
    out.write_bytes(gzip.compress(path.read_bytes()))
    return out


def texts(records) -> list[tuple[str, ...]]:
    return [r.segments for r in records if isinstance(r, Document)]


def bad(records) -> list[str]:
    return [str(r) for r in records if isinstance(r, BadRecord)]


# --- formats -------------------------------------------------------------------------------


def test_wiki_reads_completions_and_the_line_each_element_starts_on(tmp_path):
    path = write_array(tmp_path / "wiki.json", [
        {"completion": "长江是中国第一长河。", "source": "wikipedia.zh2307"},
        {"completion": "黄河，中国第二长河。\n流经九省。", "source": "wikipedia.zh2307"},
    ])
    records = list(iter_records(path, "wiki"))
    assert texts(records) == [("长江是中国第一长河。",), ("黄河，中国第二长河。\n流经九省。",)]
    # indent=4: "[" on line 1, each element's "{" then two fields and "}".
    assert [r.line for r in records] == [2, 6]
    assert all(r.path == path for r in records)


def test_baike_follows_the_seed_concatenation(tmp_path):
    path = write_lines(tmp_path / "baike.json", [
        {"title": "赤壁", "summary": "赤壁之战。", "sections": [
            {"title": "背景", "content": "曹操南下"}, {"title": "结果", "content": "三分天下"}]},
        {"title": "荆州", "summary": None, "sections": [{"title": "地理", "content": "长江中游"}]},
        {"title": "空", "summary": "只有摘要", "sections": []},
        {"summary": "没有标题", "sections": [{"title": "甲", "content": "乙"}]},
        {"title": "没有章节", "summary": "摘要"},
        {"title": "坏章节", "summary": "摘要", "sections": [{"title": "甲", "content": "乙"}, {"title": "丙", "content": 7}]},
        {"title": "章节为空值", "summary": "摘要", "sections": None},
    ])
    records = list(iter_records(path, "baike"))
    assert texts(records) == [
        ("赤壁：赤壁之战。背景：曹操南下。结果：三分天下。",),
        ("地理：长江中游。",),
        ("空：只有摘要",),
        ("甲：乙。",),
    ]
    assert bad(records) == [
        f"{path}:5: missing field 'sections'",
        f"{path}:6: sections[1]: field 'content' is int, expected a string",
        f"{path}:7: field 'sections' is null, expected a list",
    ]


def test_c4_and_medical_read_the_text_field(tmp_path):
    path = write_lines(tmp_path / "c4-train.00000-of-01024.json", [
        {"text": "桃园三结义", "timestamp": "2019-04-25T12:57:54Z", "url": "https://example.com/1"},
        {"text": "三顾茅庐", "timestamp": "2019-04-25T12:57:55Z", "url": "https://example.com/2"},
    ])
    assert texts(iter_records(path, "c4")) == [("桃园三结义",), ("三顾茅庐",)]
    assert texts(iter_records(path, "medical")) == [("桃园三结义",), ("三顾茅庐",)]


def test_wudao_joins_title_and_content_from_a_one_line_array(tmp_path):
    path = write_array(tmp_path / "part-2021278643.json", [
        {"id": 0, "uniqueKey": "a", "title": "草船借箭", "content": "诸葛亮用计借箭十万。", "dataType": "百科"},
        {"id": 1, "uniqueKey": "b", "title": "空城计", "content": "司马懿退兵。", "dataType": "百科"},
    ], indent=None)
    records = list(iter_records(path, "wudao"))
    assert texts(records) == [("草船借箭诸葛亮用计借箭十万。",), ("空城计司马懿退兵。",)]
    assert [r.line for r in records] == [1, 1]


def test_medical_sft_keeps_question_and_answer_as_two_segments(tmp_path):
    path = write_lines(tmp_path / "train_zh_0.json", [
        {"instruction": "请回答：", "input": "感冒了怎么办？", "output": "多喝水，多休息。"},
    ])
    assert texts(iter_records(path, "medical-sft")) == [("请回答：感冒了怎么办？", "多喝水，多休息。")]


def test_text_splits_on_blank_lines(tmp_path):
    path = tmp_path / "novel.txt"
    path.write_bytes("第一段第一行\r\n第一段第二行\r\n\r\n\r\n  \t\n第二段\n\n第三段".encode())
    records = list(iter_records(path, "text"))
    assert texts(records) == [("第一段第一行\n第一段第二行",), ("第二段",), ("第三段",)]
    assert [r.line for r in records] == [1, 6, 8]


def test_jsonl_field_reads_any_named_field(tmp_path):
    path = write_lines(tmp_path / "qa.jsonl", [{"q": "问", "answer": "答一"}, {"q": "问", "answer": "答二"}])
    assert texts(iter_records(path, "jsonl:answer")) == [("答一",), ("答二",)]
    assert bad(iter_records(path, "jsonl:body")) == [f"{path}:1: missing field 'body'", f"{path}:2: missing field 'body'"]


def test_unknown_format_is_a_user_error_listing_the_formats():
    with pytest.raises(UserError, match="unknown corpus format 'wikipedia'.*jsonl:FIELD"):
        check_format("wikipedia")
    with pytest.raises(UserError):
        check_format("jsonl:")
    assert check_format("jsonl:content") == "jsonl:content"


def test_a_byte_order_mark_is_not_part_of_the_first_record(tmp_path):
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + '{"text": "有BOM"}\n'.encode())
    assert texts(iter_records(path, "c4")) == [("有BOM",)]
    assert sniff_format(path) == "c4"


# --- .gz -----------------------------------------------------------------------------------


def test_gz_lines_and_arrays_read_like_the_plain_files(tmp_path):
    lines = write_lines(tmp_path / "c4.json", [{"text": f"第{i}篇"} for i in range(500)])
    array = write_array(tmp_path / "wiki.json", [{"completion": f"条目{i}"} for i in range(500)])
    for path, fmt in ((lines, "c4"), (array, "wiki")):
        packed = gzip_copy(path)
        plain, unpacked = list(iter_records(path, fmt)), list(iter_records(packed, fmt))
        assert texts(unpacked) == texts(plain) and len(texts(plain)) == 500
        assert [r.line for r in unpacked] == [r.line for r in plain]
        ends = [r.end for r in unpacked]
        assert ends == sorted(ends) and ends[-1] == packed.stat().st_size
        assert sniff_format(packed) == fmt


def test_a_truncated_gz_file_ends_with_one_bad_record(tmp_path):
    rng = random.Random(0)
    hanzi = [chr(c) for c in range(0x4E00, 0x4E00 + 3000)]
    path = write_lines(tmp_path / "c4.json", [{"text": "".join(rng.choices(hanzi, k=500))} for _ in range(4000)])
    packed = gzip_copy(path)
    packed.write_bytes(packed.read_bytes()[: packed.stat().st_size // 2])
    records = list(iter_records(packed, "c4"))
    assert 0 < len(texts(records)) < 4000
    assert len(bad(records)) == 1 and "cannot read further" in bad(records)[0]
    assert isinstance(records[-1], BadRecord)


def test_a_cut_gz_keeps_every_record_before_the_cut_and_names_where_it_stops(tmp_path):
    # Under a megabyte decompressed: the reader used to lose every record of the block the cut falls in.
    rng = random.Random(1)
    hanzi = [chr(c) for c in range(0x4E00, 0x4E00 + 3000)]
    chapters = ["".join(rng.choices(hanzi, k=2000)) for _ in range(40)]
    lines = write_lines(tmp_path / "c4.jsonl", [{"text": c} for c in chapters])
    array = write_array(tmp_path / "wiki.json", [{"completion": c} for c in chapters], indent=1)
    text = tmp_path / "novel.txt"
    text.write_text("\n\n".join(chapters) + "\n", encoding="utf-8")
    # For each: how many records the readable text holds whole, and the line the cut one starts on.
    for path, fmt, whole, cut_line in [
        (lines, "c4", lambda data: data.count(b"\n"), lambda n: n + 1),
        (array, "wiki", lambda data: data.count(b"\n }"), lambda n: 2 + 3 * n),
        (text, "text", lambda data: data.count(b"\n\n"), lambda n: 2 * n + 1),
    ]:
        packed = gzip.compress(path.read_bytes())
        cut = path.with_name(path.name + ".gz")
        cut.write_bytes(packed[: len(packed) // 2])
        kept = whole(zlib.decompressobj(wbits=31).decompress(cut.read_bytes()))
        assert 10 < kept < 30, fmt
        records = list(iter_records(cut, fmt))
        assert texts(records) == [(c,) for c in chapters[:kept]], fmt
        assert len(records) == kept + 1 and records[-1].rest_skipped, fmt
        assert bad(records)[0].startswith(f"{cut}:{cut_line(kept)}: "), fmt
        assert "cannot read further (EOFError" in bad(records)[0], fmt
        for n in range(len(records) + 2):
            assert list(iter_records(cut, fmt, skip=n)) == records[n:], (fmt, n)


# --- malformed records ---------------------------------------------------------------------


def test_malformed_lines_are_counted_and_named_and_reading_goes_on(tmp_path):
    path = tmp_path / "c4.json"
    path.write_bytes(b"\n".join([
        '{"text": "好"}'.encode(),
        b'{"text": "unterminated',
        b'{"title": "no text"}',
        b'{"text": 42}',
        b'["not", "an", "object"]',
        b'{"text": "\xff\xfe bad bytes"}',
        b'{"text": "lone \\ud800 surrogate"}',
        b'{"text": "\\ud83d\\ude00 paired"}',
        b"",
        '{"text": "尾"}'.encode(),
    ]) + b"\n")
    records = list(iter_records(path, "c4"))
    assert texts(records) == [("好",), ("😀 paired",), ("尾",)]
    reasons = bad(records)
    assert reasons[0] == f"{path}:2: bad JSON (Invalid control character at column 23)"
    assert reasons[1:4] == [
        f"{path}:3: missing field 'text'",
        f"{path}:4: field 'text' is int, expected a string",
        f"{path}:5: expected a JSON object, found a list",
    ]
    assert reasons[4].startswith(f"{path}:6: not UTF-8 (byte 0xff")
    assert reasons[5].startswith(f"{path}:7: ") and "not valid UTF-8" in reasons[5]
    assert len(reasons) == 6


def test_array_elements_of_the_wrong_shape_are_skipped(tmp_path):
    path = write_array(tmp_path / "wiki.json", [
        {"completion": "一"}, {"completion": None}, "字符串", {"text": "二"}, {"completion": "三"},
    ])
    records = list(iter_records(path, "wiki"))
    assert texts(records) == [("一",), ("三",)]
    assert bad(records) == [
        f"{path}:5: element 2: field 'completion' is null, expected a string",
        f"{path}:8: element 3: expected a JSON object, found a string",
        f"{path}:9: element 4: missing field 'completion'",
    ]


def test_undecodable_bytes_in_an_array_spoil_only_their_element(tmp_path):
    path = tmp_path / "wiki.json"
    path.write_bytes(b'[{"completion": "\xe5\xa5\xbd"},\n {"completion": "\xff"},\n {"completion": "\\udc00"},\n'
                     b' {"completion": "\xe5\x9d\x8f"}]')
    records = list(iter_records(path, "wiki"))
    assert texts(records) == [("好",), ("坏",)]
    assert [r.line for r in records if isinstance(r, BadRecord)] == [2, 3]
    assert all("not valid UTF-8" in reason for reason in bad(records))


def test_a_broken_array_yields_one_bad_record_where_it_breaks(tmp_path):
    path = tmp_path / "wiki.json"
    path.write_text('[\n{"completion": "一"},\n{"completion": "二"}\n{"completion": "三"}\n]', encoding="utf-8")
    records = list(iter_records(path, "wiki"))
    assert texts(records) == [("一",), ("二",)]
    assert bad(records) == [f"{path}:4: element 3: expected ',' or ']' after an element, found '{{'; rest of file skipped"]

    path.write_text('[\n{"completion": "一"},\n{"completion": "二", oops}\n]', encoding="utf-8")
    assert bad(iter_records(path, "wiki")) == [
        f"{path}:3: element 2: bad JSON (Expecting property name enclosed in double quotes); rest of file skipped"]

    path.write_text('[\n{"completion": "一"},\n{"completion": "二"', encoding="utf-8")
    records = list(iter_records(path, "wiki"))
    assert texts(records) == [("一",)] and len(bad(records)) == 1 and f"{path}:3: element 2:" in bad(records)[0]

    path.write_text('{"completion": "not an array"}', encoding="utf-8")
    assert bad(iter_records(path, "wiki")) == [f"{path}:1: element 1: expected a JSON array ('['), found '{{'"]


def test_read_documents_drops_bad_records_and_reports_them(tmp_path):
    write_lines(tmp_path / "a.jsonl", [{"text": "甲"}, {"text": 1}])
    write_lines(tmp_path / "b.jsonl", [{"text": "乙"}])
    seen = []
    docs = list(read_documents([tmp_path], "c4", on_bad_record=seen.append))
    assert [d.segments for d in docs] == [("甲",), ("乙",)]
    assert [str(b) for b in seen] == [f"{tmp_path / 'a.jsonl'}:2: field 'text' is int, expected a string"]


# --- arrays that span many blocks ------------------------------------------------------------


def test_a_large_array_is_streamed_in_bounded_memory(tmp_path):
    chapter = "滚滚长江东逝水，浪花淘尽英雄。" * 400
    elements = [{"completion": f"{i}:{chapter}"} for i in range(1500)]
    path = write_array(tmp_path / "wiki.json", elements)
    assert path.stat().st_size > 15 * BLOCK_BYTES
    tracemalloc.start()
    count = 0
    for record in iter_records(path, "wiki"):
        assert record.segments == (elements[count]["completion"],)
        assert record.line == 2 + 3 * count
        count += 1
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert count == 1500
    assert peak < 12 * BLOCK_BYTES


def test_an_element_longer_than_a_block_and_a_number_cut_by_a_block_are_read_whole(tmp_path):
    path = tmp_path / "wudao.json"
    long_content = "江" * (3 * BLOCK_BYTES)
    path.write_text(json.dumps([{"title": "长", "content": long_content}, {"title": "短", "content": "河"}],
                               ensure_ascii=False), encoding="utf-8")
    records = list(iter_records(path, "wudao"))
    assert texts(records) == [("长" + long_content,), ("短河",)]

    numbers = tmp_path / "numbers.json"
    # The first block ends after "123" of 1234567890.
    prefix = '["' + "y" * (BLOCK_BYTES - 8) + '", '
    numbers.write_text(prefix + "1234567890]", encoding="utf-8")
    records = list(iter_records(numbers, "wiki"))
    assert len(records) == 2
    assert bad(records) == [f"{numbers}:1: element 1: expected a JSON object, found a string",
                            f"{numbers}:1: element 2: expected a JSON object, found int"]


# --- skip and positions ----------------------------------------------------------------------


def corpus_files(tmp_path: Path) -> list[tuple[Path, str]]:
    """One file per format, each with blank lines, bad records and Chinese text."""
    c4 = tmp_path / "c4.jsonl"
    c4.write_bytes("\n".join([
        '{"text": "一"}', "", '{"text": 2}', "{bad", '{"text": "三"}', "   ", "", '{"text": "四"}',
    ]).encode() + b"\n\xff\n\n")
    baike = write_lines(tmp_path / "baike.jsonl", [
        {"title": "甲", "summary": "乙", "sections": []},
        {"title": "甲", "summary": None, "sections": [{"title": "丙", "content": None}]},
        {"title": "丁", "summary": "戊", "sections": [{"title": "己", "content": "庚"}]},
    ], trailing="\n\n")
    sft = write_lines(tmp_path / "sft.jsonl", [
        {"instruction": "问", "input": "一", "output": "答"}, {"instruction": "问", "output": "答"},
        {"instruction": "问", "input": "二", "output": "答"},
    ])
    field = write_lines(tmp_path / "field.jsonl", [{"body": "一"}, {"body": "二"}, {"x": 3}], trailing="\n")
    wiki = write_array(tmp_path / "wiki.json", [{"completion": "一"}, {"completion": 2}, {"completion": "三"}])
    wudao = write_array(tmp_path / "wudao.json", [{"title": "一", "content": "二"}, {"title": "三"},
                                                  {"title": "四", "content": "五"}], indent=None)
    broken = tmp_path / "broken.json"
    broken.write_text('[{"completion": "一"},\n{"completion": "二"},\n{"completion": "三" "四"}]', encoding="utf-8")
    text = tmp_path / "novel.txt"
    text.write_bytes("第一段\n\n\n第二段\n第二段\n\n".encode() + b"\xff\n\n" + "第四段".encode())
    return [
        (c4, "c4"), (gzip_copy(c4), "c4"), (c4, "medical"), (baike, "baike"), (sft, "medical-sft"),
        (field, "jsonl:body"), (wiki, "wiki"), (gzip_copy(wiki), "wiki"), (wudao, "wudao"),
        (broken, "wiki"), (text, "text"), (gzip_copy(text), "text"),
    ]


def test_skip_n_gives_what_reading_all_gives_after_the_first_n(tmp_path):
    for path, fmt in corpus_files(tmp_path):
        records = list(iter_records(path, fmt))
        assert texts(records) and bad(records), (path, fmt)
        for n in range(len(records) + 2):
            assert list(iter_records(path, fmt, skip=n)) == records[n:], (path, fmt, n)


def test_positions_never_decrease_and_end_at_the_file_size(tmp_path):
    for path, fmt in corpus_files(tmp_path):
        ends = [r.end for r in iter_records(path, fmt)]
        assert ends == sorted(ends) and ends[0] > 0, (path, fmt)
        assert ends[-1] == path.stat().st_size, (path, fmt)


def test_positions_of_plain_json_lines_are_exact(tmp_path):
    path = write_lines(tmp_path / "c4.jsonl", [{"text": "三国"}, {"text": "演义"}], trailing="\n\n")
    first_line = len(json.dumps({"text": "三国"}, ensure_ascii=False).encode()) + 1
    assert [r.end for r in iter_records(path, "c4")] == [first_line, path.stat().st_size]


# --- inputs: files, folders, globs -----------------------------------------------------------


@pytest.fixture
def data_tree(tmp_path) -> Path:
    data = tmp_path / "data"
    for name in ["a.jsonl", "b/2.jsonl", "b/10.jsonl", "b/c/x.jsonl", "z.txt", ".hidden.jsonl",
                 ".cache/y.jsonl", "wiki.bin", "wiki.bin.json", "wiki.bin.partial", "wiki.bin.partial.json"]:
        (data / name).parent.mkdir(parents=True, exist_ok=True)
        (data / name).write_text('{"text": "字"}\n', encoding="utf-8")
    return data


def test_a_folder_expands_to_its_files_sorted_without_hidden_files_or_outputs(data_tree):
    assert expand_inputs([data_tree]) == [
        data_tree / "a.jsonl", data_tree / "b/10.jsonl", data_tree / "b/2.jsonl",
        data_tree / "b/c/x.jsonl", data_tree / "z.txt",
    ]


def test_globs_expand_sorted_and_each_file_is_read_once(data_tree):
    assert expand_inputs([str(data_tree / "b" / "*.jsonl")]) == [data_tree / "b/10.jsonl", data_tree / "b/2.jsonl"]
    assert expand_inputs([str(data_tree / "**" / "*.jsonl")]) == [
        data_tree / "a.jsonl", data_tree / "b/10.jsonl", data_tree / "b/2.jsonl", data_tree / "b/c/x.jsonl"]
    assert expand_inputs([data_tree / "z.txt", data_tree, str(data_tree / "*.txt")]) == [
        data_tree / "z.txt", data_tree / "a.jsonl", data_tree / "b/10.jsonl", data_tree / "b/2.jsonl",
        data_tree / "b/c/x.jsonl"]


def test_missing_inputs_are_user_errors_naming_them(data_tree):
    with pytest.raises(UserError, match=r"^data/foo\.json: no such file or folder$"):
        expand_inputs(["data/foo.json"])
    with pytest.raises(UserError, match="no file matches"):
        expand_inputs([str(data_tree / "*.parquet")])
    (data_tree / "empty").mkdir()
    with pytest.raises(UserError, match="folder holds no corpus files"):
        expand_inputs([data_tree / "empty"])
    with pytest.raises(UserError, match="no such file"):
        iter_records(data_tree / "nope.jsonl", "c4")


# --- sniffing --------------------------------------------------------------------------------


def test_auto_detects_every_format(tmp_path):
    files = {
        "wiki": write_array(tmp_path / "wiki.json", [{"completion": "一", "source": "w"}]),
        "wudao": write_array(tmp_path / "wudao.json", [{"id": 0, "title": "一", "content": "二"}], indent=None),
        "baike": write_lines(tmp_path / "baike.json", [{"title": "一", "summary": None, "sections": []}]),
        "c4": write_lines(tmp_path / "c4.json", [{"text": "一", "url": "u"}]),
        "medical-sft": write_lines(tmp_path / "sft.json", [{"instruction": "一", "input": "", "output": "二"}]),
        "text": tmp_path / "novel.txt",
    }
    files["text"].write_text("话说天下大势，分久必合，合久必分。\n", encoding="utf-8")
    for fmt, path in files.items():
        assert sniff_format(path) == fmt
        assert sniff_format(gzip_copy(path)) == fmt
        assert texts(iter_records(path, "auto")) == texts(iter_records(path, fmt))
    blank_start = tmp_path / "blank.jsonl"
    blank_start.write_text('\n\n  \n{"text": "一"}\n', encoding="utf-8")
    assert sniff_format(blank_start) == "c4"
    docs = list(read_documents([files["wiki"], files["baike"], files["text"]], "auto"))
    assert [d.segments for d in docs] == [("一",), ("",), ("话说天下大势，分久必合，合久必分。",)]


def test_sniffing_an_unknown_shape_names_the_file_the_keys_and_the_formats(tmp_path):
    lines = write_lines(tmp_path / "qa.jsonl", [{"question": "一", "answer": "二"}])
    with pytest.raises(UserError) as e:
        sniff_format(lines)
    message = str(e.value)
    assert message.startswith(f"{lines}:1: cannot tell the format")
    assert "'question', 'answer'" in message and "jsonl:FIELD" in message and "jsonl:question" in message

    array = write_array(tmp_path / "docs.json", ["第一回", "第二回"])
    with pytest.raises(UserError, match=r"docs\.json:2: .*a string instead of an object.*wiki.*wudao"):
        sniff_format(array)

    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"text": \n', encoding="utf-8")
    with pytest.raises(UserError, match=r"broken\.jsonl:1: starts like JSON lines.*--format text"):
        sniff_format(broken)


def test_auto_recognises_plain_text_only_in_txt_files_and_never_binary_ones(tmp_path):
    novel = tmp_path / "novel.txt"
    novel.write_text("话说天下大势" * 100_000, encoding="utf-8")  # the first block ends inside a character
    assert sniff_format(novel) == "text" and sniff_format(gzip_copy(novel)) == "text"
    readme = tmp_path / "README.md"
    readme.write_text("# 语料\n\n说明。\n", encoding="utf-8")
    image = tmp_path / "image.png"
    image.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    nul = tmp_path / "table.txt"
    nul.write_bytes(b"id\x00name\n")
    cut = tmp_path / "c4.jsonl.gz"
    cut.write_bytes(gzip.compress(json.dumps({"text": "字" * 5000}).encode())[:100])
    for path, where, reason in [
        (readme, str(readme), "plain text not named *.txt"),
        (image, str(image), "not UTF-8 text: byte 0x89 at byte 1"),
        (nul, str(nul), "not UTF-8 text: byte 0x00 at byte 3"),
        (cut, str(cut), "cannot be read (EOFError: Compressed file ended before the end-of-stream marker was reached)"),
    ]:
        with pytest.raises(UnrecognisedFile) as e:
            sniff_format(path)
        assert (e.value.where, e.value.reason) == (where, reason)
        assert str(e.value) == f"{where}: {reason}; {e.value.hint}" and e.value.hint
    assert texts(iter_records(readme, "text")) == [("# 语料",), ("说明。",)]
