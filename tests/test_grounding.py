"""Grounding: the worker's documents come from the documents index behind instant results,
whichever way it is given, and a broken one is refused rather than replaced."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.student_fixtures import tiny_student
from typeahead.errors import ArtifactError
from typeahead.generation.grounding import Grounding, load_retriever
from typeahead.retrieval import DocsIndex, build_docs_index, docs_dir

DOCS = [
    ("Paris#0", "Paris", "Cheap flights to Paris leave daily. Paris is in France."),
    ("Rhine#0", "Rhine", "The river Rhine flows past France into the North Sea."),
    ("Oxygen#0", "Oxygen", "Oxygen is a chemical element with atomic number 8."),
]


def write_jsonl(path: Path) -> Path:
    path.write_text("".join(json.dumps({"id": i, "title": t, "text": x}) + "\n"
                            for i, t, x in DOCS))
    return path


def test_an_index_on_disk_and_one_in_memory_ground_alike(tmp_path: Path) -> None:
    student = tiny_student(tmp_path / "student", dim=16)
    build_docs_index(write_jsonl(tmp_path / "d.jsonl"), tmp_path / "idx" / "docs", student)
    on_disk = DocsIndex.load(docs_dir(tmp_path / "idx"), student)
    in_memory = DocsIndex.in_memory(DOCS, student)
    query = "cheap flights paris"
    assert in_memory.passages(query, 3) == on_disk.passages(query, 3)
    assert in_memory.search(query, 2, partial=True) == on_disk.search(query, 2, partial=True)
    grounded = load_retriever(tmp_path / "idx", None, student).search(query, 2)
    assert [d.id for d in grounded] == [d.id for d in Grounding(in_memory).search(query, 2)]
    assert grounded[0].text == DOCS[0][2]  # whole passages, not snippets


@pytest.mark.parametrize("name", ["docs.csv", "docs.jsonl"])
def test_a_docs_file_of_any_format_is_indexed_in_memory(tmp_path: Path, name: str) -> None:
    student = tiny_student(tmp_path / "student", dim=16)
    path = tmp_path / name
    if name.endswith(".csv"):
        path.write_text("id,title,text\n" + "".join(f'{i},{t},"{x}"\n' for i, t, x in DOCS))
    else:
        write_jsonl(path)
    retriever = load_retriever(None, path, student)
    assert isinstance(retriever.index, DocsIndex) and len(retriever.index) == len(DOCS)
    assert retriever.search("oxygen element", 1)[0].id == "Oxygen#0"


def test_a_broken_documents_index_is_refused(tmp_path: Path) -> None:
    student = tiny_student(tmp_path / "student", dim=16)
    build_docs_index(write_jsonl(tmp_path / "d.jsonl"), tmp_path / "idx" / "docs", student)
    (tmp_path / "idx" / "docs" / "docs.jsonl").write_text("{}\n")
    with pytest.raises(ArtifactError, match="missing or corrupt"):
        load_retriever(tmp_path / "idx", None, student)
    other = tiny_student(tmp_path / "other", dim=8)
    with pytest.raises(ArtifactError, match="built with student"):
        load_retriever(tmp_path / "idx", None, other)
    (tmp_path / "bare" / "docs").mkdir(parents=True)
    with pytest.raises(ArtifactError, match="no documents index"):
        load_retriever(tmp_path / "bare", None, student)


def test_no_documents_grounds_on_nothing(tmp_path: Path) -> None:
    assert load_retriever(tmp_path, None).search("anything", 4) == []
