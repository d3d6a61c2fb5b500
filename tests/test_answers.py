"""Results that belong and summaries that answer: the relevance floor, one result per article,
answer-bearing sentences, and the vLLM prompt carrying the re-ranked passages in order.

The fixture corpus and questions are hand-written; the models are the packaged ones
(``typeahead/assets/relevance``) with the packaged student they were trained with."""

from __future__ import annotations

import dataclasses
import gzip
import json
from pathlib import Path

import pytest

from tests.gen_support import (
    api_client,
    grounding,
    read_sse,
    settings_for,
    standin_server,
    worker_task,
)
from tests.redis_server import RedisServer
from tests.vllm_standin import StandIn
from typeahead.embed.student import Student
from typeahead.errors import ArtifactError
from typeahead.generation.extractive import HashingEmbedder, summarise
from typeahead.generation.prompt import Doc, build_messages
from typeahead.generation.worker import DOCS_PER_SUMMARY
from typeahead.manifest import describe_files, write_manifest
from typeahead.retrieval import answers, relevance
from typeahead.retrieval.documents import DocsIndex, build_docs_index

PARAGRAPHS = [
    ("Rhine#0", "Rhine", "The Rhine is a European river that begins in the Swiss canton of "
     "Graubünden and flows north through Germany. It empties into the North Sea in the "
     "Netherlands."),
    ("Rhine#1", "Rhine", "The Rhine is the second-longest river in Central Europe. Its length "
     "is about 1,230 kilometres."),
    ("Rhine#2", "Rhine", "Ships on the Rhine carry coal, steel and grain to the port of "
     "Rotterdam, the busiest port of Europe."),
    ("Oxygen#0", "Oxygen", "Oxygen is a chemical element with symbol O and atomic number 8. "
     "It was discovered by Carl Wilhelm Scheele in 1771."),
    ("Oxygen#1", "Oxygen", "Oxygen makes up almost half of the Earth's crust as oxides. "
     "Plants release oxygen by photosynthesis."),
    ("Warsaw#0", "Warsaw", "Warsaw is the capital and largest city of Poland. About 1.8 "
     "million people live within its city limits."),
    ("Warsaw#1", "Warsaw", "The Warsaw Uprising of 1944 was fought by the Polish resistance "
     "against the German occupation."),
]


@pytest.fixture(scope="module")
def student() -> Student:
    return Student.load(None)


@pytest.fixture(scope="module")
def models() -> relevance.Models:
    return relevance.load()


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory, student: Student) -> DocsIndex:
    root = tmp_path_factory.mktemp("answers")
    source = root / "docs.jsonl.gz"
    with gzip.open(source, "wt", encoding="utf-8") as fh:
        for doc_id, title, text in PARAGRAPHS:
            fh.write(json.dumps({"id": doc_id, "title": title, "text": text}) + "\n")
    build_docs_index(source, root / "docs", student)
    return DocsIndex.load(root / "docs", student)


# --- the relevance floor ---------------------------------------------------------------------


@pytest.mark.parametrize("text", ["goo", "how to", "who was the first", "ebay", "www.",
                                  "cheap flights"])
def test_inputs_the_documents_do_not_answer_show_no_result(
        index: DocsIndex, models: relevance.Models, text: str) -> None:
    assert index.instant(text, 3, model=models.results) == []


@pytest.mark.parametrize(("text", "title"), [
    ("where does the rhine flow into the sea", "Rhine"),
    ("who discovered oxygen", "Oxygen"),
    ("what is the capital of poland", "Warsaw"),
])
def test_questions_the_documents_answer_show_their_article_first(
        index: DocsIndex, models: relevance.Models, text: str, title: str) -> None:
    got = index.instant(text, 3, model=models.results)
    assert got and got[0].title == title
    assert all(models.results.threshold <= r.score <= 1.0 for r in got)


def test_the_floor_is_the_models_threshold(index: DocsIndex, models: relevance.Models) -> None:
    text = "where does the rhine flow into the sea"
    scored = [models.results.probability(row) for _, row in index.scored(text, 3, features=True)]
    strict = relevance.ResultModel(models.results.weights, models.results.bias,
                                   max(scored) + 1e-6)
    assert index.instant(text, 3, model=strict) == []
    lenient = relevance.ResultModel(models.results.weights, models.results.bias, 0.0)
    assert len(index.instant(text, 3, model=lenient)) == len(scored)


def test_a_tampered_model_is_refused(tmp_path: Path) -> None:
    for name in (relevance.PARAMS, "manifest.json"):
        (tmp_path / name).write_bytes((relevance.MODEL_DIR / name).read_bytes())
    (tmp_path / relevance.PARAMS).write_text("{}")
    with pytest.raises(ArtifactError):
        relevance.load(tmp_path)


# --- one result per article ------------------------------------------------------------------


def test_one_result_per_article_by_default(index: DocsIndex) -> None:
    got = index.instant("rhine river", 3)
    assert [r.title for r in got][:1] == ["Rhine"]
    assert len({r.title for r in got}) == len(got)


def test_more_per_article_when_asked(index: DocsIndex) -> None:
    every = index.instant("rhine river", 3, per_article=0)
    assert [r.title for r in every] == ["Rhine", "Rhine", "Rhine"]
    two = index.instant("rhine river", 3, per_article=2)
    assert [r.title for r in two][:2] == ["Rhine", "Rhine"]
    assert [r.title for r in two].count("Rhine") == 2


# --- the paragraph an article shows, and free slots -------------------------------------------


def _chooser(weights: dict[str, float], fill_min_words: int = 2) -> relevance.ParagraphModel:
    return relevance.ParagraphModel(
        tuple(weights.get(f, 0.0) for f in relevance.PARAGRAPH_FEATURES), 4, fill_min_words)


def test_each_article_shows_the_paragraph_its_chooser_ranks_first(
        index: DocsIndex, models: relevance.Models) -> None:
    text = "rhine river"
    fused = [d for d, _ in index.article_paragraphs(text, "Rhine", 4)]
    assert len(fused) == 3
    plain = dataclasses.replace(models.results, paragraphs=None)
    assert [r.id for r in index.instant(text, 3, model=plain)] == [fused[0]]
    # A chooser that prefers any paragraph but the fused first, and never fills free slots.
    contrary = dataclasses.replace(models.results, paragraphs=_chooser({"first": -1.0}, 99))
    assert [r.id for r in index.instant(text, 3, model=contrary)] == [fused[1]]


def test_the_packaged_chooser_shows_the_paragraph_holding_the_question(
        index: DocsIndex, models: relevance.Models) -> None:
    got = index.instant("which port do ships on the rhine carry coal to", 3,
                        model=models.results)
    assert got[0].id == "Rhine#2"


def test_free_slots_take_the_shown_articles_next_paragraphs_only_when_asked(
        index: DocsIndex, models: relevance.Models) -> None:
    question = "where does the rhine flow into the sea"
    # By default one result per article: no repeated titles.
    assert [r.title for r in index.instant(question, 3, model=models.results)] == ["Rhine"]
    got = index.instant(question, 3, model=models.results, fill=True)
    assert got[0].id == "Rhine#0"
    assert [r.title for r in got] == ["Rhine", "Rhine", "Rhine"]
    assert len({r.id for r in got}) == 3
    assert len({r.score for r in got}) == 1  # each keeps its article's probability
    # One word names a topic: one paragraph per article, as without the chooser.
    assert [r.title for r in index.instant("rhine", 3, model=models.results, fill=True)] == \
        ["Rhine"]
    # Nothing the floor hid comes back.
    assert index.instant("goo", 3, model=models.results, fill=True) == []
    plain = dataclasses.replace(models.results, paragraphs=None)
    assert len(index.instant(question, 3, model=plain, fill=True)) == 1


def test_free_slots_after_every_article_the_floor_passed(
        index: DocsIndex, models: relevance.Models) -> None:
    got = index.instant("what is the capital of poland", 3, model=models.results, fill=True)
    assert [r.id for r in got][:1] == ["Warsaw#0"]
    titles = [r.title for r in got]
    assert titles == sorted(set(titles), key=titles.index) + titles[len(set(titles)):]


def test_paragraphs_are_chosen_alike_with_faiss_candidates(
        tmp_path: Path, student: Student, models: relevance.Models) -> None:
    source = tmp_path / "docs.jsonl"
    source.write_text("".join(json.dumps({"id": d, "title": t, "text": x}) + "\n"
                              for d, t, x in PARAGRAPHS))
    build_docs_index(source, tmp_path / "docs", student)
    dense = DocsIndex.load(tmp_path / "docs", student)
    pooled = DocsIndex.load(tmp_path / "docs", student)
    pooled._rows_t = None  # score the FAISS and BM25 candidates only, as a large corpus does
    for text in ("where does the rhine flow into the sea", "rhine river", "who discovered ox",
                 "what is the capital of poland"):
        for fill in (False, True):
            assert dense.instant(text, 3, model=models.results, fill=fill) == pooled.instant(
                text, 3, model=models.results, fill=fill)


def test_article_paragraphs_carry_the_paragraph_features(index: DocsIndex) -> None:
    got = index.article_paragraphs("how long is the rhine", "Rhine", 2)
    assert len(got) == 2
    assert all(len(row) == len(relevance.PARAGRAPH_FEATURES) for _, row in got)
    assert got[0][1][relevance.PARAGRAPH_FEATURES.index("first")] == 1.0
    assert index.article_paragraphs("how long is the rhine", "Danube", 2) == []
    assert index.article_paragraphs("how is the", "Rhine", 2) == []


def test_the_sentence_cosine_and_word_pairs_point_at_the_paragraph_the_question_rewords(
        index: DocsIndex, models: relevance.Models) -> None:
    names = relevance.PARAGRAPH_FEATURES
    got = dict(index.article_paragraphs("which port do ships on the rhine carry coal to",
                                        "Rhine", 4))
    # Its pairs: port ships, ships rhine, rhine carry, carry coal; Rhine#2 holds the last 3.
    assert [got[d][names.index("pair_gap")] for d in ("Rhine#0", "Rhine#1", "Rhine#2")] == \
        [-0.75, -0.75, 0.0]
    assert got["Rhine#2"][names.index("sentence_cosine_gap")] == 0.0
    assert all(got[d][names.index("sentence_cosine_gap")] < 0 for d in ("Rhine#0", "Rhine#1"))
    # A chooser reading only the best sentence's cosine shows the paragraph it is in.
    by_cosine = dataclasses.replace(models.results,
                                    paragraphs=_chooser({"sentence_cosine_gap": 1.0}))
    assert [r.id for r in index.instant("how many kilometres long is the rhine", 3,
                                        model=by_cosine)] == ["Rhine#1"]


def test_a_paragraph_model_of_other_features_is_refused(tmp_path: Path) -> None:
    for name in (relevance.PARAMS, "manifest.json"):
        (tmp_path / name).write_bytes((relevance.MODEL_DIR / name).read_bytes())
    params = relevance.read_params(tmp_path)
    params["paragraphs"]["features"] = ["fused_gap"]
    relevance.write_params(tmp_path, params)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    manifest["files"] = describe_files(tmp_path, [tmp_path / relevance.PARAMS])
    write_manifest(tmp_path, manifest)  # a consistent artefact, of another build's features
    with pytest.raises(ArtifactError, match="paragraph model features differ"):
        relevance.load(tmp_path)


# --- answer-bearing sentences ----------------------------------------------------------------


def _docs(*ids: str) -> list[Doc]:
    text = {d: (t, x) for d, t, x in PARAGRAPHS}
    return [Doc(d, *text[d], 1.0) for d in ids]


@pytest.mark.parametrize(("question", "docs", "answer"), [
    ("When was oxygen discovered?", ("Oxygen#0", "Oxygen#1"), "1771"),
    ("Who discovered oxygen?", ("Oxygen#0", "Oxygen#1"), "Scheele"),
    ("How many people live in Warsaw?", ("Warsaw#1", "Warsaw#0"), "1.8 million"),
    ("Which sea does the Rhine empty into?", ("Rhine#0", "Rhine#1", "Rhine#2"), "North Sea"),
    ("What is the length of the Rhine?", ("Rhine#0", "Rhine#1", "Rhine#2"), "1,230"),
])
def test_the_summary_holds_the_answer(student: Student, models: relevance.Models, question: str,
                                      docs: tuple[str, ...], answer: str) -> None:
    summary = summarise(question, _docs(*docs), student, models.sentences)
    assert answer in summary
    assert len(summary.split()) <= answers.MAX_WORDS + 5  # (the citations)


def test_the_answer_bearing_sentence_is_picked_first(student: Student,
                                                     models: relevance.Models) -> None:
    passages = _docs("Oxygen#0", "Oxygen#1")
    best = answers.pick("In what year was oxygen discovered?", passages, student,
                        models.sentences, max_sentences=1)
    assert [s.text for s in best] == ["It was discovered by Carl Wilhelm Scheele in 1771."]


def test_the_summary_cites_its_passages_and_repeats_nothing() -> None:
    docs = [Doc("a", "Rhine", "The Rhine flows into the North Sea. It is long."),
            Doc("b", "Rhine copy", "The Rhine flows into the North Sea. Barges use it.")]
    summary = summarise("where does the rhine flow", docs, HashingEmbedder())
    assert summary.count("The Rhine flows into the North Sea.") == 1
    assert "[1]" in summary or "[2]" in summary


def test_question_types() -> None:
    assert answers.question_type("How many people live there?") == "number"
    assert answers.question_type("When did it end?") == "date"
    assert answers.question_type("Who wrote it?") == "person"
    assert answers.question_type("Where is it?") == "place"
    assert answers.question_type("What is it?") is None


def test_passages_are_reranked_by_their_answer_bearing_sentences(
        student: Student, models: relevance.Models) -> None:
    passages = _docs("Oxygen#1", "Warsaw#1", "Oxygen#0")
    ranked = answers.rerank("Who discovered oxygen?", passages, student, models.sentences, 2)
    assert [d.id for d in ranked] == ["Oxygen#0", "Oxygen#1"]


# --- the vLLM prompt -------------------------------------------------------------------------


async def test_the_prompt_carries_the_reranked_passages_in_order(
        redis_server: RedisServer, student: Student) -> None:
    question = "Who discovered oxygen"
    retriever = grounding([Doc(d, t, x) for d, t, x in PARAGRAPHS], student)
    grounded = retriever.search(question, DOCS_PER_SUMMARY)
    assert grounded[0].id == "Oxygen#0"
    standin = StandIn()
    async with standin_server(standin) as url:
        settings = settings_for(redis_server.url, llm_url=url)
        async with api_client(settings) as client, worker_task(settings, name="ans",
                                                               docs=retriever):
            resp = await client.post("/v1/generate", json={"query": question})
            assert resp.status == 202, await resp.text()
            events = await read_sse(client, (await resp.json())["stream_url"])
    assert events[-1][0] == "done"
    assert [s["id"] for s in json.loads(events[-1][1])["sources"]] == [d.id for d in grounded]
    [request] = standin.requests
    assert request["messages"] == build_messages(question, grounded)
    assert '[1] title: "Oxygen"' in request["messages"][1]["content"]


def test_several_per_article_share_their_articles_relevance(
        index: DocsIndex, models: relevance.Models) -> None:
    text = "where does the rhine flow into the sea"
    one = next(r for r in index.instant(text, 3, model=models.results) if r.title == "Rhine")
    every = index.instant(text, 3, per_article=0, model=models.results)
    assert [r.title for r in every] == ["Rhine", "Rhine", "Rhine"]
    assert {r.score for r in every} == {one.score}
    assert index.instant("goo", 3, per_article=0, model=models.results) == []


def test_a_definition_question_gets_the_defining_sentence(student: Student,
                                                          models: relevance.Models) -> None:
    passages = [Doc("n1", "Normans", "These Normans began a long conquest of Wales. They "
                    "built castles there.", 1.0),
                Doc("n0", "Normans", "The Normans (Norman: Nourmands) were the people who "
                    "gave their name to Normandy. They descended from Norse raiders.", 0.9)]
    assert answers.definition_subject("Who were the Normans?") == ("norman",)
    assert answers.definition_subject("Who discovered oxygen?") == ()
    best = answers.pick("who were the normans", passages, student, models.sentences,
                        max_sentences=1)
    assert best[0].text.startswith("The Normans (Norman: Nourmands) were the people")
    assert [d.id for d in answers.rerank("who were the normans", passages, student,
                                         models.sentences, 2)] == ["n0", "n1"]


# --- settings and training splits ------------------------------------------------------------


def test_results_per_article_setting() -> None:
    from typeahead.errors import ConfigError
    from typeahead.settings import Settings

    assert Settings.from_env({"TYPEAHEAD_RESULTS_PER_ARTICLE": "0"}).results_per_article == 0
    assert Settings.from_env({}).results_per_article == 1
    with pytest.raises(ConfigError, match="results_per_article"):
        Settings.from_env({"TYPEAHEAD_RESULTS_PER_ARTICLE": "-1"})


def test_training_never_sees_held_out_queries(tmp_path: Path) -> None:
    from typeahead.train import ranker as rt

    log = tmp_path / "aol.tsv.gz"
    with gzip.open(log, "wt", encoding="utf-8") as fh:
        fh.write("query\tcount_total\tcount_rows_1_800000\tcount_rows_800001_999999\n")
        fh.write("google\t10\t8\t2\nebay\t5\t5\t0\nyahoo\t3\t0\t3\n")
    assert rt.aol_queries(log, "train", 10) == ["ebay"]
    assert rt.aol_queries(log, "test", 10) == ["yahoo", "google"]
    parts = {rt.split_of(f"question {i}") for i in range(50)}
    assert parts == {"train", "test"}
    assert rt.split_of("question 7") == rt.split_of("question 7")
    assert list(rt.keystrokes("ab c")) == ["ab", "ab c"]
