"""Bundled prompt sets, user prompt files, and resumable result files."""

import json

import pytest

from safetyheads.data import BUNDLED, load_prompts
from safetyheads.errors import DataError, ResultsError
from safetyheads.results import ResultsWriter, read_results


@pytest.mark.parametrize("name", sorted(BUNDLED))
def test_bundled_sets_load_with_checked_hash(name):
    s = load_prompts(name)
    assert len(s.prompts) == BUNDLED[name].rows
    assert s.sha256 == BUNDLED[name].sha256
    assert all(p.strip() for p in s.prompts)


def test_user_csv_and_jsonl(tmp_path):
    (tmp_path / "a.csv").write_text("id,prompt\n1,hello there\n2,how are you\n")
    assert load_prompts(str(tmp_path / "a.csv")).prompts == ("hello there", "how are you")
    (tmp_path / "b.jsonl").write_text('{"q": "x y"}\n{"q": "z"}\n')
    assert load_prompts(str(tmp_path / "b.jsonl"), column="q", limit=1).prompts == ("x y",)


@pytest.mark.parametrize(
    "content,suffix,match",
    [
        ("id,other\n1,x\n", ".csv", "no column"),
        ("input\n", ".csv", "holds no prompts"),
        ("input\nok\n\"\"\n", ".csv", "empty"),
        ('{"input": "a"}\n{broken\n', ".jsonl", "not a well-formed"),
        ("x", ".txt", ".csv, .jsonl or .json"),
    ],
)
def test_bad_prompt_files(tmp_path, content, suffix, match):
    path = tmp_path / f"p{suffix}"
    path.write_text(content)
    with pytest.raises(DataError, match=match) as e:
        load_prompts(str(path))
    assert "\n" not in str(e.value)


def test_unwritable_cache_is_not_called_a_malformed_file(tmp_path, monkeypatch):
    import datasets

    def denied(*a, **k):
        raise PermissionError(13, "Permission denied", str(tmp_path / "cache" / "datasets"))

    monkeypatch.setattr(datasets, "load_dataset", denied)
    (tmp_path / "a.csv").write_text("id,prompt\n1,hello there\n")
    with pytest.raises(DataError, match="SAFETYHEADS_CACHE to a folder you can write") as e:
        load_prompts(str(tmp_path / "a.csv"))
    assert "well-formed" not in str(e.value) and "\n" not in str(e.value)


def test_missing_prompt_file():
    with pytest.raises(DataError, match="no such prompt file"):
        load_prompts("does/not/exist.csv")


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_results_resume_and_crash_tail(tmp_path, suffix):
    path = tmp_path / f"r{suffix}"
    header = {"run": {"eps": 1e-5}, "provenance": {"created_utc": "t0"}}
    cols = ["prompt_id", "head_name", "ships"]
    w = ResultsWriter(path, header, cols, key="prompt_id", group_size=2)
    w.append(0, [{"prompt_id": 0, "head_name": "L0H0", "ships": 0.5}, {"prompt_id": 0, "head_name": "L0H1", "ships": 0.25}])
    # A crash while writing prompt 1: one complete row of two, then half a line.
    with open(path, "a") as f:
        f.write(w._serialise([{"prompt_id": 1, "head_name": "L0H0", "ships": 0.1}]))
        f.write('{"prompt_id": 1, "hea' if suffix == ".jsonl" else "1,L0")
    w2 = ResultsWriter(path, header, cols, key="prompt_id", group_size=2)
    assert w2.is_done(0) and not w2.is_done(1)
    table, head = read_results(path)
    assert len(table) == 2 and head["run"] == {"eps": 1e-5}
    with pytest.raises(ResultsError, match="differs in: eps"):
        ResultsWriter(path, {"run": {"eps": 1e-4}}, cols, key="prompt_id", group_size=2)
    w3 = ResultsWriter(path, {"run": {"eps": 1e-4}}, cols, key="prompt_id", group_size=2, overwrite=True)
    assert not w3.done


def test_results_bad_suffix(tmp_path):
    with pytest.raises(ResultsError, match=".jsonl or .csv"):
        ResultsWriter(tmp_path / "r.txt", {}, ["a"], key="a", group_size=1)


def test_results_header_is_first_line(tmp_path):
    path = tmp_path / "r.jsonl"
    ResultsWriter(path, {"run": {}, "provenance": {"version": "x"}}, ["a"], key="a", group_size=1).append(1, [{"a": 1}])
    first = json.loads(path.read_text().splitlines()[0])
    assert first["header"]["provenance"]["version"] == "x"


# ---------------------------------------------------------------- damaged files and other versions (issue 23, item 6)

HEADER = {"run": {"eps": 1e-5}, "provenance": {"created_utc": "t0", "version": "1.0", "git_commit": "a" * 40}}
COLS = ["prompt_id", "head_name", "ships"]


def _two_prompts(path):
    w = ResultsWriter(path, HEADER, COLS, key="prompt_id", group_size=1)
    for i in range(2):
        w.append(i, [{"prompt_id": i, "head_name": "L0H0", "ships": 0.5 + i}])
    return w


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
@pytest.mark.parametrize("damage", [b"\xff\xfe not text\n", b"{garbage\n", b'"a JSON string"\n'],
                         ids=["not-utf8", "not-json", "not-an-object"])
def test_damaged_line_keeps_the_rows_before_it_and_warns(tmp_path, capsys, suffix, damage):
    path = tmp_path / f"r{suffix}"
    w = _two_prompts(path)
    if suffix == ".csv" and damage != b"\xff\xfe not text\n":
        damage = b"1,2,3,4,5\n"  # a CSV line with too many fields
    with open(path, "ab") as f:  # a damaged complete line, then a good-looking row after it
        f.write(damage)
        f.write(w._serialise([{"prompt_id": 7, "head_name": "L0H0", "ships": 0.1}]).encode())
        f.write(b'{"prompt_id": 3, "hea')  # and a write a crash cut off
    w2 = ResultsWriter(path, HEADER, COLS, key="prompt_id", group_size=1)
    assert w2.done == {"0", "1"}  # the good rows are kept; the row after the damage is dropped
    err = capsys.readouterr().err.splitlines()
    line = 4 if suffix == ".jsonl" else 5  # a CSV has its column names on line 2
    assert len(err) == 1 and err[0].startswith("safetyheads: warning: ") and f"damaged at line {line}" in err[0], err
    assert "the 1 after it are dropped" in err[0]
    table, _ = read_results(path)  # the file was rewritten without the damaged tail
    assert sorted(table["prompt_id"].astype(int)) == [0, 1]
    w2.append(2, [{"prompt_id": 2, "head_name": "L0H0", "ships": 0.2}])
    assert sorted(read_results(path)[0]["prompt_id"].astype(int)) == [0, 1, 2]


def test_read_results_warns_about_a_damaged_tail(tmp_path):
    from safetyheads.results import ResultsWarning

    path = tmp_path / "r.jsonl"
    _two_prompts(path)
    with open(path, "ab") as f:
        f.write(b"\xff\n")
    with pytest.warns(ResultsWarning, match="damaged at line 4"):
        table, _ = read_results(path)
    assert len(table) == 2


def test_damaged_header_is_still_not_a_results_file(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_bytes(b'{"header": {"run": "\xff"}}\n{"prompt_id": 0}\n')
    with pytest.raises(ResultsError, match="not a safetyheads results file") as e:
        ResultsWriter(path, HEADER, COLS, key="prompt_id", group_size=1)
    assert "\n" not in str(e.value)
    assert path.read_bytes() == b'{"header": {"run": "\xff"}}\n{"prompt_id": 0}\n'


@pytest.mark.parametrize("field,value", [("version", "1.1"), ("git_commit", "b" * 40), ("git_commit", None)])
def test_resume_refuses_a_file_of_another_version(tmp_path, field, value):
    path = tmp_path / "r.jsonl"
    _two_prompts(path)
    before = path.read_bytes()
    other = {**HEADER, "provenance": {**HEADER["provenance"], field: value}}
    with pytest.raises(ResultsError, match="must not mix rows of two versions; choose a new --out") as e:
        ResultsWriter(path, other, COLS, key="prompt_id", group_size=1)
    assert "\n" not in str(e.value) and "safetyheads 1.0, commit aaaaaaaaaaaa" in str(e.value)
    assert path.read_bytes() == before
    assert not ResultsWriter(path, other, COLS, key="prompt_id", group_size=1, overwrite=True).done


def test_resume_of_the_same_version_is_byte_identical(tmp_path):
    path = tmp_path / "r.jsonl"
    _two_prompts(path)
    before = path.read_bytes()
    later = {**HEADER, "provenance": {**HEADER["provenance"], "created_utc": "t1"}}
    w = ResultsWriter(path, later, COLS, key="prompt_id", group_size=1)
    assert w.done == {"0", "1"}
    assert read_results(path)[1]["provenance"]["created_utc"] == "t0"
    assert path.read_bytes().splitlines()[1:] == before.splitlines()[1:]
