"""GLUE tasks and sentence pairs in train_cls.py: the task registry's files fetched and checked, column handling and
bad pair files as one-line errors, a tiny-model run per task family (single, pair, multi-class), and exports that
encode pairs as the run did (pipeline text/text_pair)."""
import hashlib
import io
import json
import shutil
import zipfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import model
import report
import train_cls
from data import fetch, glue
from files import DataUnavailable
from helpers import assert_one_line_error, run_script

ROOT = Path(__file__).resolve().parents[1]
QNLI = ROOT / "data" / "samples" / "qnli_squad"
SST2 = ROOT / "data" / "samples" / "sst2"


def rows(path: Path, n: int) -> list[list[str]]:
    """The first n rows of a bundled TSV, header skipped, as fields."""
    return [line.split("\t") for line in path.read_text().splitlines()[1:n + 1]]


def tsv(path: Path, header: list[str] | None, body: list[list[str]]) -> Path:
    path.write_text("".join("\t".join(r) + "\n" for r in ([header] if header else []) + body))
    return path


@pytest.fixture(scope="module")
def qnli_cut(tmp_path_factory) -> Path:
    """120 training and 40 test pairs of the bundled QNLI-style sample, in GLUE QNLI's layout."""
    folder = tmp_path_factory.mktemp("qnli")
    header = ["index", "question", "sentence", "label"]
    tsv(folder / "train.tsv", header, rows(QNLI / "train.tsv", 120))
    tsv(folder / "dev.tsv", header, rows(QNLI / "dev.tsv", 40))
    return folder


@pytest.fixture
def tiny(tmp_path, monkeypatch, tiny_llama_folder):
    """run(*flags, name=...) -> (exit code, metrics.json, run folder): the tiny Llama, 2 epochs."""
    monkeypatch.setenv("LLAMA_HEADS_CACHE", str(tmp_path / "cache"))

    def run(*flags, name="run"):
        rc = train_cls.main(["--model", str(tiny_llama_folder), "--dtype", "fp32", "--epochs", "2",
                             "--runs-dir", str(tmp_path / "runs"), "--run-name", name, *flags])
        folder = tmp_path / "runs" / name
        return rc, json.loads((folder / "metrics.json").read_text()), folder
    return run


# --- a tiny run per task family ----------------------------------------------------------------------------

def test_pair_task_run_records_task_columns_and_metrics(tiny, qnli_cut):
    rc, info, run = tiny("--task", "qnli", "--data-dir", str(qnli_cut), "--zero-shot")
    assert rc == 0
    assert info["task"] == "qnli" and info["text_columns"] == ["question", "sentence"]
    assert info["labels"] == info["label_names"] == ["entailment", "not_entailment"]
    assert info["task_metrics"] == ["accuracy"] and set(info["metrics"]) == {"before", "zero_shot", "after"}
    assert info["split"]["test"] == 40 and "more_tests" not in info
    config = json.loads((run / "config.json").read_text())
    assert config["task"] == "qnli" and config["text_column"] == "question,sentence"
    assert config["label_column"] == "label"


def test_single_sentence_task_reports_matthews_correlation(tiny, tmp_path):
    """CoLA's files have no header; its metric is the Matthews correlation."""
    data = tmp_path / "cola"
    data.mkdir()
    for name, n in (("train.tsv", 100), ("dev.tsv", 30)):
        tsv(data / name, None, [["src", label, "", sentence] for sentence, label in rows(SST2 / name, n)])
    rc, info, _ = tiny("--task", "cola", "--data-dir", str(data))
    assert rc == 0 and info["task"] == "cola" and info["label_names"] == ["unacceptable", "acceptable"]
    assert info["task_metrics"] == ["mcc"] and all(-1 <= m["mcc"] <= 1 for m in info["metrics"].values())
    assert all("mcc" in row for row in info["epochs"])


def glue_zip(members: dict[str, str]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        for name, text in members.items():
            z.writestr(name, text)
    return buffer.getvalue()


@pytest.fixture
def download(monkeypatch):
    """serve(zip_name, payload): urlopen answers with payload, and the zip's recorded sha256 is the payload's;
    returns the list of URLs fetched."""
    def serve(zip_name: str, payload: bytes, sha: str | None = None) -> list[str]:
        urls = []

        def urlopen(url, timeout):
            urls.append(url)
            return io.BytesIO(payload)
        monkeypatch.setattr(fetch.urllib.request, "urlopen", urlopen)
        monkeypatch.setitem(fetch.GLUE_ZIPS, zip_name, sha or hashlib.sha256(payload).hexdigest())
        return urls
    return serve


def mnli_file(pairs: list[list[str]], offset: int) -> str:
    labels = glue.TASKS["mnli"].values
    return "".join(["sentence1\tsentence2\tgold_label\n"] + [f"{q}\t{s}\t{labels[(i + offset) % 3]}\n"
                                                              for i, (_, q, s, _) in enumerate(pairs)])


def test_multi_class_task_fetched_with_both_test_sets(tiny, download):
    """MNLI from its (stand-in) GLUE zip: three labels, dev_matched the test set, dev_mismatched beside it."""
    pairs = rows(QNLI / "train.tsv", 150)
    urls = download("MNLI.zip", glue_zip({"MNLI/train.tsv": mnli_file(pairs[:90], 0),
                                          "MNLI/dev_matched.tsv": mnli_file(pairs[90:120], 1),
                                          "MNLI/dev_mismatched.tsv": mnli_file(pairs[120:], 2)}))
    rc, info, folder = tiny("--task", "mnli")
    assert rc == 0 and urls == [fetch.GLUE_URL + "MNLI.zip"]  # one download serves the three files
    assert info["labels"] == ["entailment", "neutral", "contradiction"] and len(info["confusion"]) == 3  # GLUE's ids
    assert info["split"]["test"] == 30 and info["split"]["test_mismatched"] == 30
    assert info["test_sets"] == {"test": "glue_dev_matched", "test_mismatched": "glue_dev_mismatched"}
    assert set(info["more_tests"]) == {"test_mismatched"}
    assert set(info["more_tests"]["test_mismatched"]) == {"before", "after"}
    # each test set's predictions, pairs as pairs, and its label counts: the report's baseline for both test sets
    for name, offset in (("test", 90), ("test_mismatched", 120)):
        preds = [json.loads(line) for line in (folder / f"{name}_preds.jsonl").read_text().splitlines()]
        assert [r["text"] for r in preds] == [[q, s] for _, q, s, _ in pairs[offset:offset + 30]]
        assert info["label_counts"][name] == [sum(r["label"] == n for r in preds) for n in info["labels"]]
    out = folder.parent / "REPORT.md"
    assert report.main([str(folder), "-o", str(out)]) == 0
    assert out.read_text().count("↳ baseline: always `") == 4 and "not recorded" not in out.read_text().split("## ")[1]


# --- fetching a GLUE zip -----------------------------------------------------------------------------------

def test_glue_zip_is_checked_cached_and_extracted(tmp_path, monkeypatch, download):
    monkeypatch.setenv("LLAMA_HEADS_CACHE", str(tmp_path))
    files = {"QNLI/train.tsv": "index\tquestion\tsentence\tlabel\n0\tq\ts\tentailment\n", "QNLI/dev.tsv": "dev\n"}
    payload = glue_zip(files)
    urls = download("QNLIv2.zip", payload)
    hashed = []
    monkeypatch.setattr(fetch, "sha256_of", lambda data: hashed.append(data) or hashlib.sha256(data).hexdigest())
    path = fetch.fetch_file("qnli_train")
    assert path.read_text() == files["QNLI/train.tsv"] and fetch.fetch_file("qnli_dev").read_text() == "dev\n"
    assert urls == [fetch.GLUE_URL + "QNLIv2.zip"]  # the zip is cached: the second member needs no download
    assert hashed.count(payload) == 1  # and is checked once in this process, not once per member
    archive = tmp_path / "glue" / "QNLIv2.zip"
    archive.write_bytes(payload[:-1] + b"!")  # changed on disk: checked again, and fetched again
    assert fetch.fetch_file("qnli_dev").read_text() == "dev\n" and len(urls) == 2
    assert archive.read_bytes() == payload
    path.write_text("damaged")  # an extracted copy that differs from the checked zip's record is extracted again
    assert fetch.fetch_file("qnli_train").read_text() == files["QNLI/train.tsv"] and len(urls) == 2


def test_glue_zip_with_another_checksum_is_refused(tmp_path, monkeypatch, download):
    monkeypatch.setenv("LLAMA_HEADS_CACHE", str(tmp_path))
    download("RTE.zip", glue_zip({"RTE/train.tsv": "x"}), sha="0" * 64)
    with pytest.raises(DataUnavailable, match="whose sha256 is not 0{64}; pass a trusted local copy with --data-dir"):
        fetch.fetch_file("rte_train")
    assert not (tmp_path / "rte_train").exists() and not (tmp_path / "glue" / "RTE.zip").exists()


def test_every_task_names_fetchable_files():
    for task in glue.TASKS.values():
        for name in (task.train, *(fetch_name for _, fetch_name, _ in task.tests)):
            assert name in fetch.SOURCES or fetch.ZIP_MEMBERS[name][0] in fetch.GLUE_ZIPS, (task.name, name)


def test_mrpc_files_are_cached_as_tsv(tmp_path, monkeypatch):
    monkeypatch.setenv("LLAMA_HEADS_CACHE", str(tmp_path))
    text = b"\xef\xbb\xbfQuality\t#1 ID\t#2 ID\t#1 String\t#2 String\n1\t1\t2\tA b.\tA c.\n"
    monkeypatch.setattr(fetch.urllib.request, "urlopen", lambda url, timeout: io.BytesIO(text))
    url, member, _, flag = fetch.SOURCES["mrpc_train"]
    monkeypatch.setitem(fetch.SOURCES, "mrpc_train", (url, member, hashlib.sha256(text).hexdigest(), flag))
    path = fetch.fetch_file("mrpc_train")
    assert path.name == "msr_paraphrase_train.tsv"
    data = train_cls.read_labelled(path, tuple(glue.TASKS["mrpc"].text_columns), "Quality")
    assert data.texts == [("A b.", "A c.")] and data.labels == ["1"]


# --- one-line errors ---------------------------------------------------------------------------------------

def cli(*flags, env=None):
    return run_script("train_cls.py", "--model", "unused", *flags, env=env)


def pair_files(tmp_path, train: str, header="premise\thypothesis\tlabel\n") -> list[str]:
    (tmp_path / "train.tsv").write_text(header + train)
    (tmp_path / "dev.tsv").write_text("premise\thypothesis\tlabel\na\tb\tyes\n")
    return ["--train-file", str(tmp_path / "train.tsv"), "--eval-file", str(tmp_path / "dev.tsv")]


@pytest.mark.parametrize("header, train, words", [
    ("premise\tlabel\n", "a\tyes\n", ["train.tsv", "missing column(s) ['hypothesis']", "--text-column"]),
    ("premise\thypothesis\tlabel\n", "a\tb\tyes\nc\t \tno\n",
     ["train.tsv", "row 3", "`hypothesis` (half of the pair premise/hypothesis)", "remove or fill it"]),
    ("premise\thypothesis\tlabel\n", "a\tb\tyes\nc\tno\n", ["train.tsv:3", "expected 3 columns"]),
], ids=["missing-second-column", "empty-half", "row-without-second-half"])
def test_bad_pair_files_exit_2_with_one_line(tmp_path, header, train, words):
    out = cli(*pair_files(tmp_path, train, header), "--text-column", "premise,hypothesis")
    assert_one_line_error(out, *words)


@pytest.mark.parametrize("flags, words", [
    (["--task", "stsb"], ["--task stsb: not supported", "regression"]),
    (["--task", "wnli2"], ["--task wnli2: unknown", "qnli", "custom"]),
    (["--text-column", "a,b,c"], ["--text-column a,b,c", "two comma-separated"]),
    (["--task", "qnli", "--text-column", "q"], ["--text-column q", "qnli reads 2 text column(s)"]),
    (["--task", "custom"], ["--task custom", "--train-file and --eval-file"]),
], ids=["stsb", "unknown-task", "three-columns", "task-columns", "custom-without-files"])
def test_flag_errors_exit_2_with_one_line(flags, words):
    assert_one_line_error(cli(*flags), *words)


def test_zero_shot_of_own_labels_needs_label_words(tmp_path):
    files = pair_files(tmp_path, "a\tb\tyes\nc\td\tno\n" * 4)
    out = cli(*files, "--text-column", "premise,hypothesis", "--zero-shot")
    assert_one_line_error(out, "--zero-shot", "['no', 'yes']", "--label-words")
    out = cli(*files, "--text-column", "premise,hypothesis", "--zero-shot", "--label-words", "no")
    assert_one_line_error(out, "--label-words no", "needs 2 words")


def test_offline_glue_task_names_the_flags(tmp_path):
    env = {"LLAMA_HEADS_CACHE": str(tmp_path), "https_proxy": "http://127.0.0.1:9", "no_proxy": ""}
    assert_one_line_error(cli("--task", "qnli", env=env), "cannot download qnli_train", "--data-dir/--train-file")


# --- pairs in exports --------------------------------------------------------------------------------------

def test_export_encodes_pairs_as_the_run_and_pipeline_agrees(tiny, tmp_path, qnli_cut, tiny_llama_folder):
    """Own pair files (JSONL, --label-words zero-shot), exported: the export's tokenizer encodes (a, b) exactly as
    train_cls.tokenize did, and pipeline("text-classification") with text/text_pair gives the run's predictions
    and probabilities."""
    from transformers import AutoTokenizer, pipeline
    pairs = rows(QNLI / "dev.tsv", 60)
    for name, part in (("train.jsonl", pairs[:40]), ("test.jsonl", pairs[40:])):
        (tmp_path / name).write_text("".join(json.dumps({"premise": q, "hypothesis": s, "label": label}) + "\n"
                                             for _, q, s, label in part))
    export = tmp_path / "export"
    rc, info, run = tiny("--train-file", str(tmp_path / "train.jsonl"), "--eval-file", str(tmp_path / "test.jsonl"),
                         "--text-column", "premise,hypothesis", "--zero-shot", "--label-words", "yes,no",
                         "--export", str(export))
    assert rc == 0 and info["task"] == "custom" and info["text_columns"] == ["premise", "hypothesis"]
    assert "zero_shot" in info["metrics"]
    texts = [(q, s) for _, q, s, _ in pairs[40:]]

    lm, tokenizer = model.load_backbone(str(tiny_llama_folder), torch.device("cpu"), torch.float32)
    seqs = train_cls.tokenize(tokenizer, texts, 256)
    newline = tokenizer("\n", add_special_tokens=False)["input_ids"]
    a, b = (tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts[0])
    assert seqs[0] == a + newline + b  # first, the separator, second
    exported = AutoTokenizer.from_pretrained(export)
    assert [exported(q, s)["input_ids"] for q, s in texts] == seqs
    head = torch.nn.Linear(lm.config.hidden_size, 2, bias=False)
    head.load_state_dict(load_file(run / "head.safetensors"))
    with torch.no_grad():
        probs = torch.stack([head(lm.model(torch.tensor([s])).last_hidden_state[0, -1]) for s in seqs]).softmax(-1)

    classify = pipeline("text-classification", model=str(export), device="cpu")
    out = [classify({"text": q, "text_pair": s}, top_k=None) for q, s in texts]
    names = info["label_names"]
    got = torch.tensor([[next(r["score"] for r in o if r["label"] == n) for n in names] for o in out])
    assert got.argmax(-1).tolist() == probs.argmax(-1).tolist()
    assert torch.allclose(got, probs, atol=1e-4)


# --- the bundled QNLI-style sample (data/make_pairs.py) ----------------------------------------------------

def test_sentence_splitter_keeps_abbreviations_and_initials():
    from data.make_pairs import sentences
    text = 'Dr. Smith went to the U.S. in 1990. He met J. R. R. Tolkien there!  "Why?" he asked. (It rained.) End'
    assert [text[a:b] for a, b in sentences(text)] == [
        "Dr. Smith went to the U.S. in 1990.", "He met J. R. R. Tolkien there!", '"Why?" he asked.', "(It rained.)",
        "End"]


def squad_article(title: str, n: int) -> dict:
    """A SQuAD 2.0 article: each paragraph three sentences, an answerable question on the second, one unanswerable."""
    paragraphs = []
    for i in range(n):
        context = f"{title} opened in {1900 + i}. Its mayor was Ann {title}{i}. The river is wide."
        start = context.index(f"Ann {title}{i}")
        paragraphs.append({"context": context, "qas": [
            {"id": f"{title}{i}a", "question": f"Who was the mayor of {title} ({i})?", "is_impossible": False,
             "answers": [{"text": f"Ann {title}{i}", "answer_start": start}]},
            {"id": f"{title}{i}b", "question": "Who built it?", "is_impossible": True, "answers": []}]})
    return {"title": title, "paragraphs": paragraphs}


def test_make_pairs_labels_by_answer_span_and_holds_out_articles(tmp_path):
    from data import make_pairs
    squad = tmp_path / "dev-v2.0.json"
    squad.write_text(json.dumps({"data": [squad_article(t, 12) for t in ("Alba", "Brno", "Cork", "Doha")]}))
    flags = [str(squad), "--train-rows", "16", "--dev-rows", "8", "--dev-articles", "0.25"]
    assert make_pairs.main([*flags, "--out", str(tmp_path / "a")]) == 0
    assert make_pairs.main([*flags, "--out", str(tmp_path / "b")]) == 0
    splits = {}
    for name, n in (("train.tsv", 16), ("dev.tsv", 8)):
        text = (tmp_path / "a" / name).read_text()
        assert text == (tmp_path / "b" / name).read_text()  # seeded
        data = train_cls.read_labelled(tmp_path / "a" / name, ("question", "sentence"))
        assert len(data.texts) == n and data.labels.count("entailment") == n // 2
        for (question, sentence), label in zip(data.texts, data.labels):
            assert ("Its mayor was Ann" in sentence) == (label == "entailment"), (question, sentence)
        splits[name] = {q.split(" of ")[1].split(" ")[0] for q, _ in data.texts}  # the articles' titles
    assert len(splits["dev.tsv"]) == 1 and not splits["dev.tsv"] & splits["train.tsv"]


def test_bundled_pair_sample():
    for name, n in (("train.tsv", 1000), ("dev.tsv", 500)):
        assert (QNLI / name).read_text().split("\n", 1)[0] == "index\tquestion\tsentence\tlabel"
        data = train_cls.read_labelled(QNLI / name, ("question", "sentence"))
        assert len(data.texts) == n and data.labels.count("entailment") == n // 2


# --- what users compare against: GLUE's label ids, lm-eval-harness's prompts, long pairs ----------------------

# lm-evaluation-harness's GLUE templates as its task files write them (Jinja {{column}}; MNLI's doc_to_text is a
# function that strips the hypothesis and ends it with a period), and each task's answer choices in label-id order
HARNESS = {
    "sst2": ("{{sentence}}\nQuestion: Is this sentence positive or negative?\nAnswer:", ["negative", "positive"]),
    "cola": ("{{sentence}}\nQuestion: Does this sentence make sense?\nAnswer:", ["no", "yes"]),
    "mrpc": ("Sentence 1: {{sentence1}}\nSentence 2: {{sentence2}}\nQuestion: Do both sentences mean the same "
             "thing?\nAnswer:", ["no", "yes"]),
    "qqp": ("Question 1: {{question1}}\nQuestion 2: {{question2}}\nQuestion: Do both questions ask the same "
            "thing?\nAnswer:", ["no", "yes"]),
    "qnli": ("{{question}}\n{{sentence}}\nQuestion: Does this response answer the question?\nAnswer:", ["yes", "no"]),
    "rte": ("{{sentence1}}\nQuestion: {{sentence2}} True or False?\nAnswer:", ["True", "False"]),
    "mnli": ("{}\nQuestion: {} True, False or Neither?\nAnswer:", ["True", "Neither", "False"]),
}
# one row per task as nyu-mll/glue holds it (column names there), texts with the spacing GLUE's files have
GLUE_ROWS = {
    "sst2": {"sentence": "hide new secretions from the parental units "},
    "cola": {"sentence": "Our friends won't buy this analysis, let alone the next one we propose."},
    "mrpc": {"sentence1": "Amrozi accused his brother , whom he called \" the witness \" , of deliberately "
                          "distorting his evidence .",
             "sentence2": "Referring to him as only \" the witness \" , Amrozi accused his brother of deliberately "
                          "distorting his evidence ."},
    "qqp": {"question1": "How is the life of a math student? Could you describe your own experiences?",
            "question2": "Which level of prepration is enough for the exam jlpt5?"},
    "qnli": {"question": "What came into force after the new constitution was herald?",
             "sentence": "As of that day, the new constitution heralding the Second Republic came into force."},
    "rte": {"sentence1": "No Weapons of Mass Destruction Found in Iraq Yet.",
            "sentence2": "Weapons of Mass Destruction Found in Iraq."},
    "mnli": {"premise": "The new rights are nice enough", "hypothesis": "Everyone really likes the newest benefits "},
}


def harness_text(name: str, row: dict) -> str:
    template, _ = HARNESS[name]
    if name == "mnli":
        hypothesis = row["hypothesis"].strip()
        return template.format(row["premise"], hypothesis + ("" if hypothesis.endswith(".") else "."))
    for column, value in row.items():
        template = template.replace("{{" + column + "}}", value)
    return template


@pytest.mark.parametrize("name", sorted(HARNESS))
def test_zero_shot_prompts_are_the_harness_texts(name):
    task = glue.TASKS[name]
    row = list(GLUE_ROWS[name].values())
    assert task.prompt.fill(*row) == harness_text(name, GLUE_ROWS[name])
    assert [w.strip() for w in task.words] == HARNESS[name][1]  # label-id order is the harness's choice order
    if name == "mnli":  # a hypothesis that ends with a period gets no second one
        assert task.prompt.fill("P", " H. ") == "P\nQuestion: H. True, False or Neither?\nAnswer:"


def test_label_ids_are_glue_hub_ids():
    """nyu-mll/glue's ClassLabel names, in id order."""
    hub = {"sst2": ["negative", "positive"], "cola": ["unacceptable", "acceptable"],
           "mrpc": ["not_equivalent", "equivalent"], "qqp": ["not_duplicate", "duplicate"],
           "qnli": ["entailment", "not_entailment"], "rte": ["entailment", "not_entailment"],
           "mnli": ["entailment", "neutral", "contradiction"]}
    assert {name: list(task.names) for name, task in glue.TASKS.items()} == hub


def test_long_pairs_keep_both_texts(smollm2_tokenizer, capsys):
    """A first text longer than --max-length cuts as transformers' longest_first: the separator and the second
    text survive; short pairs are untouched; the cut pairs are counted."""
    tokenizer = model.load_tokenizer(smollm2_tokenizer.name_or_path)
    long, short = ("The river is wide and the bridge is old. " * 20, "Is the bridge old?"), ("A cat.", "A dog.")
    seqs = train_cls.tokenize(tokenizer, [long, short], 24, "test")
    assert "truncated to 24 tokens: 1 test pairs" in capsys.readouterr().out
    second = tokenizer(long[1], add_special_tokens=False)["input_ids"]
    newline = tokenizer("\n", add_special_tokens=False)["input_ids"]
    assert len(seqs[0]) == 24 and seqs[0][-len(second) - len(newline):] == newline + second
    assert seqs[1] == tokenizer(*short)["input_ids"]
    assert seqs == tokenizer([long[0], short[0]], [long[1], short[1]], truncation=True, max_length=24)["input_ids"]


def mrpc_run(tiny, tmp_path, monkeypatch, fetched: bool):
    """A tiny MRPC run from its fetched MSR files (stand-ins) or from a GLUE-layout --data-dir."""
    header = "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n"
    pairs = rows(QNLI / "train.tsv", 80)
    text = header + "".join(f"{i % 2}\t{i}\t{i + 1}\t{q}\t{s}\n" for i, (_, q, s, _) in enumerate(pairs))
    if not fetched:
        (tmp_path / "mrpc").mkdir()
        for name in ("train.tsv", "dev.tsv"):
            (tmp_path / "mrpc" / name).write_text(text)
        return tiny("--task", "mrpc", "--data-dir", str(tmp_path / "mrpc"), name="glue")
    files = {}
    for name in ("mrpc_train", "mrpc_test"):
        files[name] = tmp_path / f"{name}.tsv"
        files[name].write_text(text)
    monkeypatch.setattr(train_cls, "fetch_file", lambda name: files[name])
    return tiny("--task", "mrpc", name="msr")


def test_mrpc_run_says_which_test_set_it_scored(tiny, tmp_path, monkeypatch):
    assert mrpc_run(tiny, tmp_path, monkeypatch, fetched=True)[1]["test_sets"] == {"test": "msr_test"}
    assert mrpc_run(tiny, tmp_path, monkeypatch, fetched=False)[1]["test_sets"] == {"test": "glue_dev"}
    # --data-dir wins over --eval-file in load_data, and so in what the run says it scored
    both = tiny("--task", "mrpc", "--data-dir", str(tmp_path / "mrpc"), "--eval-file", str(tmp_path / "mrpc_test.tsv"),
                name="both")
    assert both[1]["test_sets"] == {"test": "glue_dev"} and both[1]["split"]["test"] == 80


def test_a_run_with_the_old_mnli_ids_keeps_its_own_order(tiny, tmp_path):
    """Runs made before MNLI took GLUE's ids numbered its labels sorted (contradiction 0, entailment 1, neutral 2).
    Such a run (made here by reordering a new run's head rows and records) predicts with its own recorded order,
    exactly as the new run does, and --resume refuses it in one line, never training it under the new order."""
    import predict
    from safetensors.torch import save_file
    pairs = rows(QNLI / "train.tsv", 150)
    (tmp_path / "mnli").mkdir()
    for name, part, offset in (("train.tsv", pairs[:90], 0), ("dev_matched.tsv", pairs[90:120], 1),
                               ("dev_mismatched.tsv", pairs[120:], 2)):
        (tmp_path / "mnli" / name).write_text(mnli_file(part, offset))
    flags = ["--task", "mnli", "--data-dir", str(tmp_path / "mnli")]
    rc, info, new = tiny(*flags, name="new")
    assert rc == 0 and info["labels"] == ["entailment", "neutral", "contradiction"]
    old = tmp_path / "runs" / "old"
    shutil.copytree(new, old)
    order = [info["labels"].index(n) for n in sorted(info["labels"])]  # the old ids' rows in the new head
    head = load_file(new / "head.safetensors")
    save_file({"weight": head["weight"][order].contiguous()}, old / "head.safetensors")
    for name in ("metrics.json", "config.json"):
        record = json.loads((old / name).read_text())
        record.pop("labels")
        if name == "metrics.json":
            record["labels"] = record["label_names"] = sorted(info["labels"])
        (old / name).write_text(json.dumps(record))

    def predicted(run):
        out = tmp_path / f"{run.name}.jsonl"
        assert predict.main([str(run), "--text", "The cat sat.", "--text-pair", "A cat sat.", "--text", "Rain.",
                             "--text-pair", "It is dry.", "--dtype", "fp32", "--out", str(out)]) == 0
        return [json.loads(line) for line in out.read_text().splitlines()]
    for a, b in zip(predicted(new), predicted(old), strict=True):
        assert a["label"] == b["label"]
        assert a["probabilities"] == pytest.approx(b["probabilities"], abs=1e-6)
    out = run_script("train_cls.py", "--model", json.loads((old / "config.json").read_text())["model"], *flags,
                     "--dtype", "fp32", "--epochs", "3", "--runs-dir", str(tmp_path / "runs"), "--run-name", "old",
                     "--resume")
    assert_one_line_error(out, "another order", "--overwrite")
