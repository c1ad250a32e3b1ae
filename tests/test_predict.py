"""predict.py: from a run folder (head, LoRA, top blocks), an export and a folder laid out as a pushed repo, the
run's own test predictions; input formats; human/JSON output; the one-line errors a user can cause."""
import itertools
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import flags
import hub
import predict
import sources
import train_cls
import train_qa
from data.labelled import read_labelled
from helpers import assert_one_line_error, data_dir_cut

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "data" / "samples"
MODES = {"head": [], "top": ["--unfreeze-last", "1", "--backbone-lr", "1e-3"], "lora": ["--lora-rank", "4"]}
OUTS = itertools.count()
QA_DATA = ["--train-file", str(SAMPLES / "squad_train.json"), "--eval-file", str(SAMPLES / "squad_test.json"),
           "--max-train-examples", "30", "--max-eval-examples", "12"]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LLAMA_HEADS_CACHE", str(tmp_path_factory.mktemp("cache")))
        yield


@pytest.fixture(scope="module")
def sst2(tmp_path_factory):
    return data_dir_cut(tmp_path_factory.mktemp("sst2"), "sst2", 60, 24)


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    """A cut of the bundled QNLI-style sample: (question, sentence) pairs."""
    return data_dir_cut(tmp_path_factory.mktemp("qnli"), "qnli_squad", 60, 24)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_llama_folder, sst2, pairs, cache):
    """Tiny fp32 runs: cls in every mode (the head-only one exported), QA head-only (exported) and LoRA."""
    out = tmp_path_factory.mktemp("runs")

    def train(script, name, data, *more):
        assert script.main(["--model", str(tiny_llama_folder), *data, "--epochs", "2", "--dtype", "fp32",
                            "--runs-dir", str(out), "--run-name", name, *more]) == 0
        return out / name
    cls_data = ["--data-dir", str(sst2)]
    made = {f"cls-{m}": train(train_cls, f"cls-{m}", cls_data, *f,
                              *(["--export", str(out / "cls-peft"), "--peft"] if m == "lora" else []))
            for m, f in MODES.items() if m != "head"}
    made["cls-head"] = train(train_cls, "cls-head", cls_data, "--export", str(out / "cls-export"))
    made["qa-head"] = train(train_qa, "qa-head", QA_DATA, "--export", str(out / "qa-export"))
    made["pair"] = train(train_cls, "pair", ["--task", "qnli", "--data-dir", str(pairs)], "--export",
                         str(out / "pair-export"))
    made["qa-lora"] = train(train_qa, "qa-lora", QA_DATA, *MODES["lora"], "--export", str(out / "qa-peft"), "--peft")
    for name in ("cls-export", "cls-peft", "qa-export", "qa-peft", "pair-export"):
        made[name] = out / name
    return made


def rows_of(tmp_path, *argv) -> list[dict]:
    out = tmp_path / f"out-{next(OUTS)}.jsonl"  # a new file each time: --out replaces one only with --overwrite
    assert predict.main([*map(str, argv), "--dtype", "fp32", "--out", str(out)]) == 0
    return [json.loads(line) for line in out.read_text().splitlines()]


def confusion(rows, gold, names) -> list[list[int]]:
    m = [[0] * len(names) for _ in names]
    for r, g in zip(rows, gold, strict=True):
        m[g][names.index(r["label"])] += 1
    return m


@pytest.mark.parametrize("name", ["cls-head", "cls-top", "cls-lora"])
def test_run_folder_reproduces_the_runs_test_predictions(tmp_path, runs, sst2, name):
    info = json.loads((runs[name] / "metrics.json").read_text())
    assert info["label_names"] == ["negative", "positive"]
    rows = rows_of(tmp_path, runs[name], "--file", sst2 / "dev.tsv")
    gold = [int(y) for y in read_labelled(sst2 / "dev.tsv").labels]
    assert confusion(rows, gold, info["label_names"]) == info["confusion"]
    assert all(abs(sum(r["probabilities"].values()) - 1) < 1e-5 for r in rows)
    # the run's probabilities themselves: the rebuilt run (tests/test_modes.py) on the same sentences
    from test_modes import rebuilt
    lm, tok, head, _ = rebuilt(json.loads((runs[name] / "config.json").read_text())["model"], "cls", MODES[name[4:]],
                               runs[name])
    import model
    from batching import pad_batch
    texts = [r["text"] for r in rows]
    ids, mask = pad_batch([tok(t)["input_ids"] for t in texts], tok.pad_token_id, torch.device("cpu"))
    with torch.no_grad():
        probs = head(model.pool(lm.model(input_ids=ids).last_hidden_state, mask)).softmax(-1)
    ours = torch.tensor([[r["probabilities"][n] for n in info["label_names"]] for r in rows])
    torch.testing.assert_close(ours, probs, atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", ["qa-head", "qa-lora"])
def test_qa_run_reproduces_preds_and_na_prob_exactly(tmp_path, runs, name):
    rows = rows_of(tmp_path, runs[name], "--file", runs[name] / "test_data.json")
    preds = json.loads((runs[name] / "preds.json").read_text())
    na_prob = json.loads((runs[name] / "na_prob.json").read_text())
    assert {r["id"]: r["answer"] for r in rows} == preds
    assert {r["id"]: r["no_answer_probability"] for r in rows} == na_prob
    contexts = {ex["id"]: ex["context"] for ex in squad_contexts(runs[name] / "test_data.json")}
    for r in rows:  # offsets point at the answer in its context
        assert (r["start"] is None) == (r["answer"] == "")
        if r["answer"]:
            assert contexts[r["id"]][r["start"]:r["end"]] == r["answer"]


def squad_contexts(path: Path) -> list[dict]:
    return [{"id": q["id"], "context": par["context"]} for art in json.loads(path.read_text())["data"]
            for par in art["paragraphs"] for q in par["qas"]]


def test_export_gives_the_runs_predictions(tmp_path, runs, sst2):
    run_rows = rows_of(tmp_path, runs["cls-head"], "--file", sst2 / "dev.tsv")
    export_rows = rows_of(tmp_path, runs["cls-export"], "--file", sst2 / "dev.tsv")
    assert [r["label"] for r in export_rows] == [r["label"] for r in run_rows]  # names from the export's id2label
    for a, b in zip(run_rows, export_rows):
        assert all(abs(a["probabilities"][k] - b["probabilities"][k]) < 1e-5 for k in a["probabilities"])
    config = json.loads((runs["cls-export"] / "config.json").read_text())
    assert config["id2label"] == {"0": "negative", "1": "positive"}
    # the export records the run's threshold and windows: no flag needed to get the run's answers
    qa_run = rows_of(tmp_path, runs["qa-head"], "--file", runs["qa-head"] / "test_data.json")
    qa_export = rows_of(tmp_path, runs["qa-export"], "--file", runs["qa-head"] / "test_data.json")
    assert [r["answer"] for r in qa_export] == [r["answer"] for r in qa_run]
    assert all(abs(a["no_answer_probability"] - b["no_answer_probability"]) < 1e-4 for a, b in zip(qa_run, qa_export))
    recorded = json.loads((runs["qa-export"] / "llama_heads.json").read_text())
    assert recorded["threshold"] == json.loads((runs["qa-head"] / "metrics.json").read_text())["threshold"]
    assert recorded["max_length"] == 384 and recorded["doc_stride"] == 128


def test_a_peft_export_gives_the_runs_predictions(tmp_path, runs, sst2):
    """`--export DIR --peft`: PEFT's two files, the tokenizer and the settings; predict.py reads them without peft."""
    assert {"adapter_config.json", "adapter_model.safetensors", "llama_heads.json"} <= \
        {f.name for f in runs["qa-peft"].iterdir()}
    run = rows_of(tmp_path, runs["qa-lora"], "--file", runs["qa-lora"] / "test_data.json")
    peft = rows_of(tmp_path, runs["qa-peft"], "--file", runs["qa-lora"] / "test_data.json")
    assert run == peft
    dev = sst2 / "dev.tsv"
    assert rows_of(tmp_path, runs["cls-lora"], "--file", dev) == rows_of(tmp_path, runs["cls-peft"], "--file", dev)


def test_sentence_pairs_from_a_run_and_its_export(tmp_path, runs, pairs):
    info = json.loads((runs["pair"] / "metrics.json").read_text())
    assert info["task"] == "qnli" and info["label_names"] == ["entailment", "not_entailment"]
    rows = rows_of(tmp_path, runs["pair"], "--file", pairs / "dev.tsv")
    gold = read_labelled(pairs / "dev.tsv", ("question", "sentence"))
    assert [(r["text"], r["text_pair"]) for r in rows] == gold.texts
    assert confusion(rows, [info["labels"].index(y) for y in gold.labels], info["label_names"]) == info["confusion"]
    exported = rows_of(tmp_path, runs["pair-export"], "--file", pairs / "dev.tsv")
    assert [r["label"] for r in exported] == [r["label"] for r in rows]
    (a, b), (c, d) = gold.texts[:2]
    by_flag = rows_of(tmp_path, runs["pair"], "--text", a, "--text-pair", b, "--text", c, "--text-pair", d)
    (tmp_path / "pairs.txt").write_text(f"{a}\t{b}\n{c}\t{d}\n")
    assert by_flag == rows_of(tmp_path, runs["pair"], "--file", tmp_path / "pairs.txt")
    for one, among_all in zip(by_flag, rows):  # other batches: the same up to float rounding
        assert one["label"] == among_all["label"] and one["text_pair"] == among_all["text_pair"]
        assert all(abs(one["probabilities"][k] - among_all["probabilities"][k]) < 1e-5 for k in one["probabilities"])


def test_a_pushed_repo_is_fetched_and_read(tmp_path, runs, sst2, monkeypatch):
    """A folder holding what a head push uploads (hub.HEAD_FILES) stands in for the Hub repo."""
    repo = tmp_path / "hub-snapshot"
    repo.mkdir()
    for f in hub.HEAD_FILES:
        if (runs["cls-lora"] / f).exists():
            shutil.copy(runs["cls-lora"] / f, repo / f)
    asked = {}

    def fake_download(repo_id, allow_patterns=None, **kw):
        asked["repo_id"] = repo_id
        return str(repo)
    monkeypatch.setattr("huggingface_hub.snapshot_download", fake_download)
    pushed = rows_of(tmp_path, "me/sst2-lora", "--file", sst2 / "dev.tsv")
    assert asked["repo_id"] == "me/sst2-lora"
    assert pushed == rows_of(tmp_path, runs["cls-lora"], "--file", sst2 / "dev.tsv")


def test_input_formats_and_output(tmp_path, runs, capsys, monkeypatch):
    lines = ["a gorgeous , witty , seductive movie .", "dull"]
    (tmp_path / "s.txt").write_text("\n".join(lines) + "\n\n")
    (tmp_path / "s.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in lines))
    by_text = rows_of(tmp_path, runs["cls-head"], "--text", lines[0], "--text", lines[1])
    assert [r["text"] for r in by_text] == lines and set(by_text[0]["probabilities"]) == {"negative", "positive"}
    assert rows_of(tmp_path, runs["cls-head"], "--file", tmp_path / "s.txt") == by_text
    assert rows_of(tmp_path, runs["cls-head"], "--file", tmp_path / "s.jsonl") == by_text
    monkeypatch.setattr("sys.stdout.isatty", lambda: True)
    assert predict.main([str(runs["cls-head"]), "--text", "dull", "--dtype", "fp32"]) == 0
    line = capsys.readouterr().out.strip()
    assert line.endswith("  dull") and line.split()[0] in ("negative", "positive")
    ctx = "The film was shot in Paris in 1998 by a small crew."
    (tmp_path / "q.jsonl").write_text(json.dumps({"id": "q1", "question": "Where?", "context": ctx}) + "\n")
    a = rows_of(tmp_path, runs["qa-head"], "--question", "Where?", "--context", ctx)
    b = rows_of(tmp_path, runs["qa-head"], "--file", tmp_path / "q.jsonl")
    assert a[0]["answer"] == b[0]["answer"] and b[0]["id"] == "q1"
    assert 0 <= a[0]["no_answer_probability"] <= 1
    if a[0]["answer"]:
        assert ctx[a[0]["start"]:a[0]["end"]] == a[0]["answer"]


def test_piped_output_is_json_lines(runs):
    out = subprocess.run([sys.executable, str(ROOT / "predict.py"), str(runs["cls-head"]), "--dtype", "fp32"],
                         input="dull\nfine\n", capture_output=True, text=True, cwd=ROOT,
                         env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert out.returncode == 0, out.stderr
    assert [json.loads(line)["text"] for line in out.stdout.splitlines()] == ["dull", "fine"]


def errors(tmp_path, runs):
    corrupt = tmp_path / "corrupt"
    shutil.copytree(runs["cls-head"], corrupt)
    (corrupt / "head.safetensors").write_bytes(b"\0" * 10)
    other = tmp_path / "other"
    shutil.copytree(runs["cls-head"], other)
    info = json.loads((other / "metrics.json").read_text())
    (other / "metrics.json").write_text(json.dumps({**{k: v for k, v in info.items() if k != "labels"},
                                                    "task": "summarization"}))
    causal, renamed = tmp_path / "causal", tmp_path / "renamed"
    for folder in (causal, renamed):
        shutil.copytree(runs["qa-peft"], folder)
    config = json.loads((causal / "adapter_config.json").read_text())
    (causal / "adapter_config.json").write_text(json.dumps({**config, "task_type": "CAUSAL_LM"}))
    from safetensors.torch import load_file, save_file
    tensors = load_file(renamed / "adapter_model.safetensors")
    save_file({k.replace("transformer", "decoder"): t for k, t in tensors.items()}, renamed / "adapter_model.safetensors")
    (tmp_path / "halves.txt").write_text("a question without its sentence\n")
    return {
        "pair-without-second": ([str(runs["pair"]), "--text", "x"], "pass --text FIRST --text-pair SECOND"),
        "pair-line-without-tab": ([str(runs["pair"]), "--file", str(tmp_path / "halves.txt")],
                                  "needs two tab-separated texts"),
        "second-to-single": ([str(runs["cls-head"]), "--text", "x", "--text-pair", "y"], "without --text-pair"),
        "peft-of-another-task": ([str(causal), "--text", "x"], "task type 'CAUSAL_LM'"),
        "peft-of-another-layout": ([str(renamed), "--question", "q", "--context", "c"], "not a PEFT export"),
        "missing": ([str(tmp_path / "nope"), "--text", "x"], "no such folder"),
        "not-a-run": ([str(tmp_path), "--text", "x"], "neither a run folder"),
        "other-task": ([str(other), "--text", "x"], "a run of task 'summarization'"),
        "question-to-cls": ([str(runs["cls-head"]), "--question", "q", "--context", "c"], "classifies sentences"),
        "text-to-qa": ([str(runs["qa-head"]), "--text", "x"], "answers questions"),
        "corrupt-head": ([str(corrupt), "--text", "x"], "head.safetensors does not load"),
    }


def test_user_errors_are_one_line_exit_2(tmp_path, runs, capsys):
    for name, (argv, words) in errors(tmp_path, runs).items():
        with pytest.raises(SystemExit) as e:
            flags.run(lambda: predict.main(argv))
        err = capsys.readouterr().err
        assert e.value.code == 2 and err.count("\n") == 1 and words in err, (name, err)


def test_a_repo_id_offline_is_one_line(tmp_path):
    out = subprocess.run([sys.executable, str(ROOT / "predict.py"), "nobody-here/no-such-repo", "--text", "x"],
                         capture_output=True, text=True, cwd=tmp_path, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert out.returncode == 2 and out.stderr.count("\n") == 1, out.stderr
    assert "no Hub repo to fetch" in out.stderr and "run folder" in out.stderr


def test_one_off_inputs_leave_no_feature_cache(tmp_path, runs, monkeypatch):
    monkeypatch.setenv("LLAMA_HEADS_CACHE", str(tmp_path / "cache"))
    rows_of(tmp_path, runs["cls-head"], "--text", "a one-off sentence")
    rows_of(tmp_path, runs["qa-head"], "--question", "Who?", "--context", "Nobody was there.")
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").rglob("*.safetensors"))
    (tmp_path / "s.txt").write_text("a sentence from a file\n")
    rows_of(tmp_path, runs["cls-head"], "--file", tmp_path / "s.txt")
    assert any((tmp_path / "cache").rglob("*.safetensors"))  # a file's features are kept for the next call


def edited(tmp_path, source: Path, name: str, change) -> Path:
    """A copy of the folder `source` whose JSON file `name` holds change(its object)."""
    copy = tmp_path / f"{source.name}-edited"
    shutil.copytree(source, copy)
    (copy / name).write_text(json.dumps(change(json.loads((copy / name).read_text()))))
    return copy


def written(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def linked(link: Path, target: Path) -> Path:
    link.symlink_to(target)
    return link


LATIN1 = "caf\u00e9 cr\u00e8me\n".encode("latin-1")
QA = ["--question", "Who?", "--context", "Ada did."]
# name: (the command line, given a work folder and the runs; words of its one-line error); all refused before the
# model loads
REFUSALS = {
    "txt-not-utf8-cls": (lambda t, r: [r["cls-head"], "--file", written(t / "latin1.txt", LATIN1)],
                         ["latin1.txt: not UTF-8"]),
    "txt-not-utf8-qa": (lambda t, r: [r["qa-head"], "--file", written(t / "latin1.txt", LATIN1)],
                        ["latin1.txt: not UTF-8"]),
    "jsonl-not-utf8-qa": (lambda t, r: [r["qa-head"], "--file", written(t / "q.jsonl", LATIN1)],
                          ["q.jsonl: not UTF-8"]),
    "empty-text": (lambda t, r: [r["cls-head"], "--text", "fine", "--text", ""], ["--text '': empty"]),
    "blank-text-pair": (lambda t, r: [r["pair"], "--text", "Who?", "--text-pair", " "], ["--text-pair ' ': empty"]),
    "empty-context": (lambda t, r: [r["qa-head"], "--question", "Who?", "--context", ""], ["--context '': empty"]),
    "empty-context-in-a-file": (lambda t, r: [r["qa-head"], "--file", written(t / "q.jsonl", json.dumps(
        {"question": "Who?", "context": " "}).encode())], ["q.jsonl: line 1: its `context` is empty"]),
    "pair-line-numbers-count-blank-lines": (lambda t, r: [r["pair"], "--file", written(t / "p.txt", b"a\tb\n\nc\n")],
                                            ["p.txt: line 3 needs two tab-separated texts"]),
    "out-is-a-folder": (lambda t, r: [r["cls-head"], "--text", "x", "--out", t], ["is a folder"]),
    "out-unwritable": (lambda t, r: [r["cls-head"], "--text", "x", "--out", "/proc/nope.jsonl"],
                       ["cannot write in /proc"]),
    "out-under-a-file": (lambda t, r: [r["cls-head"], "--text", "x", "--out", written(t / "old.txt", b"") / "x.jsonl"],
                         ["old.txt is a file, not a folder"]),
    "out-exists": (lambda t, r: [r["cls-head"], "--text", "x", "--out", written(t / "old.jsonl", b"kept")],
                   ["old.jsonl: exists; pass --overwrite"]),
    "source-is-a-file": (lambda t, r: [written(t / "s.txt", b"x\n"), "--text", "x"],
                         ["s.txt: is a file, not a folder", "--file"]),
    "file-is-a-folder": (lambda t, r: [r["cls-head"], "--file", t], ["--file", "is a folder"]),
    "out-is-the-input": (lambda t, r: [r["cls-head"], "--file", written(t / "s.txt", b"x\n"), "--out", t / "s.txt",
                                       "--overwrite"], ["--out", "is --file", "write the predictions elsewhere"]),
    "out-links-to-the-input": (lambda t, r: [r["cls-head"], "--file", written(t / "s.txt", b"x\n"), "--out",
                                             linked(t / "link.jsonl", t / "s.txt"), "--overwrite"], ["is --file"]),
    "out-in-the-source": (lambda t, r: [r["cls-head"], "--text", "x", "--out", r["cls-head"] / "new.jsonl"],
                          ["is the SOURCE"]),
    "qa-key-twice": (lambda t, r: [r["qa-head"], "--file", written(t / "q.jsonl", b'{"question": "a", "question": "b", '
                                                                  b'"context": "c"}\n')],
                     ["q.jsonl: line 1 names the key 'question' twice"]),
    "overwrite-without-out": (lambda t, r: [r["cls-head"], "--text", "x", "--overwrite"], ["without --out"]),
    "threshold-nan": (lambda t, r: [r["qa-head"], *QA, "--threshold", "nan"], ["--threshold nan: must be a finite"]),
    "threshold-inf": (lambda t, r: [r["qa-head"], *QA, "--threshold=-inf"], ["--threshold -inf: must be a finite"]),
    "device": (lambda t, r: [r["cls-head"], "--text", "x", "--device", "banana"], ["--device banana: not a device"]),
    "threshold-to-cls": (lambda t, r: [r["cls-head"], "--text", "x", "--threshold", "0.5"], ["classifies sentences"]),
    **{f"config-{key}-{value}": (lambda t, r, k=key, v=value: [
        edited(t, r["cls-head"], "config.json", lambda c: {**c, k: v}), "--text", "x"],
        ["config.json", words, "the run folder is damaged"]) for key, value, words in (
        ("max_length", "x", "--max-length: invalid int value: 'x'"),
        ("max_length", "256", "max_length '256': expected a JSON integer"),
        ("max_length", 0, "--max-length 0: must be at least 1"),
        ("max_tokens", -5, "--max-tokens -5: must be at least 1"),
        ("pooling", "banana", "--pooling: invalid choice: 'banana'"),
        ("dtype", "float64", "--dtype: invalid choice: 'float64'"),
        ("text_column", 5, "text_column 5: expected a JSON string"),
        ("model", None, "model None: expected a JSON string"))},
    "config-not-an-object": (lambda t, r: [edited(t, r["cls-head"], "config.json", lambda c: [1, 2]), "--text", "x"],
                             ["config.json", "a JSON list, not an object", "the run folder is damaged"]),
    "config-qa-windows": (lambda t, r: [edited(t, r["qa-head"], "config.json", lambda c: {**c, "doc_stride": 1000}),
                                        *QA], ["config.json", "--doc-stride 1000: must be under"]),
    "metrics-threshold": (lambda t, r: [edited(t, r["qa-head"], "metrics.json", lambda m: {**m, "threshold": "x"}),
                                        *QA], ["metrics.json: threshold 'x': expected a finite number"]),
    "export-settings": (lambda t, r: [edited(t, r["cls-export"], "llama_heads.json", lambda c: {**c, "dtype": "x"}),
                                      "--text", "x"], ["llama_heads.json", "--dtype: invalid choice", "push it again"]),
}


def refused(capsys, *argv) -> subprocess.CompletedProcess:
    """predict.py's exit code and output on argv, run in-process as its entry point (flags.run) runs it."""
    with pytest.raises(SystemExit) as e:
        flags.run(lambda: predict.main([*map(str, argv), "--dtype", "fp32"]))
    said = capsys.readouterr()
    return subprocess.CompletedProcess(argv, e.value.code, said.out, said.err)


@pytest.mark.parametrize("case", REFUSALS)
def test_bad_input_is_one_line_before_the_model_loads(tmp_path, runs, capsys, monkeypatch, case):
    argv, words = REFUSALS[case]
    for loads in (sources.RunDir, "restore"), (sources.model, "load_tokenizer"):
        monkeypatch.setattr(*loads, lambda *a, **k: pytest.fail("the model loads before the input is refused"))
    assert_one_line_error(refused(capsys, *argv(tmp_path, runs)), *words)


def test_non_utf8_stdin_is_one_line(runs):
    out = subprocess.run([sys.executable, str(ROOT / "predict.py"), str(runs["cls-head"]), "--dtype", "fp32"],
                         input=LATIN1, capture_output=True, cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    out.stderr = out.stderr.decode()
    assert_one_line_error(out, "stdin: not UTF-8")


def test_out_replaces_a_file_only_with_overwrite(tmp_path, runs, capsys):
    old = written(tmp_path / "preds.jsonl", b"earlier predictions\n")
    assert_one_line_error(refused(capsys, runs["cls-head"], "--text", "dull", "--out", old), "--overwrite")
    assert old.read_bytes() == b"earlier predictions\n"
    assert predict.main([str(runs["cls-head"]), "--text", "dull", "--dtype", "fp32", "--out", str(old),
                         "--overwrite"]) == 0
    assert json.loads(old.read_text())["text"] == "dull"


def test_a_damaged_export_is_named_as_given(tmp_path, runs, capsys, monkeypatch):
    """Truncated weights: the source predict.py was given is named, not a --model flag it does not have."""
    shutil.copytree(runs["cls-export"], tmp_path / "exp")
    weights = tmp_path / "exp" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    monkeypatch.chdir(tmp_path)
    out = refused(capsys, "exp", "--text", "x")
    assert_one_line_error(out, "error: exp: cannot load it (", "export or push it again")
    assert "--model" not in out.stderr


def test_what_changes_an_input_is_said_on_stderr(tmp_path, runs, capsys):
    """A text cut to the run's max_length, and blank lines skipped, each get one line on stderr; the JSON lines
    carry each input's text."""
    long = "a gripping , funny film " * 80  # over max_length (256) tokens
    lines = written(tmp_path / "s.txt", f"dull\n\n  \n{long}\n".encode())
    rows = rows_of(tmp_path, runs["cls-head"], "--file", lines)
    assert [r["text"] for r in rows] == ["dull", long]
    err = capsys.readouterr().err
    assert "truncated to 256 tokens: 1 input sentences" in err and f"{lines}: skipped 2 blank line(s)" in err


@pytest.mark.parametrize("kind", ["merged", "peft"])
def test_predict_shows_exactly_the_label_names_the_run_recorded(tmp_path, tiny_llama_folder, capsys, kind):
    """Numeric labels stay "0"/"1", as the run, the export's id2label and pipeline say them: no task's names put in
    their place."""
    import model
    from modes import LoRA
    lm, tok = model.load_backbone(str(tiny_llama_folder), torch.device("cpu"), torch.float32)
    head, mode = model.cls_head(32, 2), LoRA(2, 4.0, 0.0, ["q_proj"])
    mode.prepare(lm.model)
    settings = {"task": "custom", "model": str(tiny_llama_folder), "dtype": "fp32", "max_length": 64}
    adapter = mode.peft(lm.model, head, "cls", str(tiny_llama_folder)) if kind == "peft" else None
    model.export(tmp_path / "out", str(tiny_llama_folder), "cls", head, tok, settings, ["0", "1"], lm.model, adapter)
    assert predict.main([str(tmp_path / "out"), "--text", "dull", "--jsonl", "--device", "cpu"]) == 0
    row = json.loads(capsys.readouterr().out)
    assert set(row["probabilities"]) == {"0", "1"} and row["label"] in ("0", "1")


def test_closed_stdin_is_one_line(runs):
    out = subprocess.run([sys.executable, str(ROOT / "predict.py"), str(runs["cls-head"]), "--dtype", "fp32"],
                         capture_output=True, text=True, cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1"},
                         preexec_fn=lambda: os.close(0))
    assert_one_line_error(out, "stdin: cannot read it (closed)", "--text")


def test_a_failed_out_keeps_the_predictions(tmp_path, runs, capsys, mounts):
    """--out on a full disk: one line naming the file and the cause, no temp file left, and the predictions on
    stdout instead."""
    disk = mounts.full(tmp_path / "disk")
    out = disk / "preds.jsonl"
    argv = [str(runs["cls-head"]), "--text", "dull " * 2000, "--text", "fine", "--dtype", "fp32", "--out", str(out)]
    with pytest.raises(SystemExit) as e:
        flags.run(lambda: predict.main(argv))
    said = capsys.readouterr()
    last = said.err.strip().splitlines()[-1]  # after the loaders' notes (a text cut to max_length)
    assert e.value.code == 2 and last.startswith("error: ") and "Traceback" not in said.err
    assert f"cannot write {out} (No space left on device)" in last and "went to stdout instead" in last
    assert [json.loads(line)["text"] for line in said.out.splitlines()][1] == "fine"
    assert [p.name for p in disk.iterdir()] == [".filler"]


def test_a_question_says_nothing_is_cached(runs, capsys):
    predict.main([str(runs["qa-head"]), *QA, "--dtype", "fp32", "--jsonl"])
    err = capsys.readouterr().err
    assert "kept in memory only" in err and "cached on disk" not in err
