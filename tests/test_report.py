"""report.py on tiny synthetic run folders: its tables must show the numbers of metrics.json."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import report

ROOT = Path(__file__).resolve().parents[1]

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def squad_scores(f1: float) -> dict:
    """A metrics.squad result with distinct, non-round numbers (percentages, fractions, counts, thresholds)."""
    return {"squad_v2": {"exact": f1 - 3.25, "f1": f1, "total": 10, "HasAns_exact": 41.5, "HasAns_f1": f1 - 7.125,
                         "HasAns_total": 4, "NoAns_exact": 62.5, "NoAns_f1": 64.875, "NoAns_total": 6,
                         "best_exact": 53.25, "best_exact_thresh": -0.53125, "best_f1": f1 + 1.5,
                         "best_f1_thresh": 1.21875},
            "bleu": {"bleu": 0.123456, "precisions": [0.5, 0.25, 0.1, 0.05]},
            "rouge": {"rouge1": 0.23456, "rouge2": 0.13579, "rougeL": 0.21212, "rougeLsum": 0.22222},
            "meteor": {"meteor": 0.31415}, "n_answerable_scored": 4}


def cls_scores(acc: float) -> dict:
    return {"loss": 1 - acc, "accuracy": acc, "precision": acc + 0.01234, "recall": acc - 0.05678, "f1": acc + 0.00011}


STEPS = [{"step": k, "epoch": k / 4, "loss": 0.9 - k / 40, "lr": 1e-3 * k, "grad_norm": 0.5 + k / 100,
          "examples_per_s": 1000.0 + k} for k in range(1, 13)]


def write_run(folder, task: str, recorded: bool = True) -> dict:
    """runs/<name>/metrics.json with the schema train_cls.py / train_qa.py write; `recorded`: with what runs record
    since 2026-12-03 (a classification run's label counts and per-example predictions, per-step log rows, the
    epoch selection and learning-rate grid, the environment)."""
    run = {"task": task, "base_model": "tiny-llama", "resolved_model": "/models/tiny-llama",
           "command": f"python train.py --run-name {folder.name}",
           "split": {"train": 80, "validation": 20, "test": 10, "seed": 7, "stratify_by": "label"},
           "timing": {"features_s": 2.5, "train_s": 1.25, "tokens": 5000}}
    if task == "squad_v2":
        scores = {stage: squad_scores(f1) for stage, f1 in (("before", 21.5), ("zero_shot", 33.375), ("after", 55.25))}
        flat = {k: "squad_v2" for k in ("exact", "f1", "HasAns_f1", "NoAns_f1", "best_f1")}
        flat |= {"bleu": "bleu", "rougeL": "rouge", "meteor": "meteor"}
        run |= {"threshold": -1.23456, "scores": scores,
                "metrics": {stage: {k: s[group][k] for k, group in flat.items()} for stage, s in scores.items()},
                "params": {"backbone": 1000, "head": 66, "total": 1066, "trainable": 66},
                "epochs": [{"epoch": e, "train_loss": 5.0 / e, "val_loss": 4.9 / e, "exact": 40.0 + e,
                            "f1": 45.125 + e, "HasAns_f1": 30.0 + e, "NoAns_f1": 60.0 - e} for e in (1, 2)]}
    else:
        run |= {"labels": ["negative", "positive"], "confusion": [[4, 1], [2, 3]],
                "metrics": {"before": cls_scores(0.48321), "zero_shot": cls_scores(0.61111),
                            "after": cls_scores(0.79876)},
                "params": {"backbone": 1000, "head": 64, "total": 1064, "trainable": 64},
                "epochs": [{"epoch": e, "train_loss": 0.7 / e, "val_loss": 0.65 / e, **cls_scores(0.6 + e / 30)}
                           for e in (1, 2, 3)]}
    folder.mkdir(parents=True)
    log = run["epochs"]
    if recorded:
        run |= {"selection": {"rule": "best", "metric": "accuracy", "epoch": 2, "stopped": "patience"},
                "lr_grid": [{"lr": 0.001, "score": 0.61234, "val_loss": 0.6012}, {"lr": 0.01, "score": 0.65432,
                                                                              "val_loss": 0.6345}],
                "environment": {"python": "3.11.2", "torch": "2.13.0", "transformers": "4.56.1", "device": "cpu"}}
        log = [*STEPS[:4], log[0], *STEPS[4:8], log[1], *STEPS[8:], *log[2:]]
        if task != "squad_v2":
            run["label_counts"] = {"train": [30, 50], "validation": [8, 12], "test": [5, 5]}
            preds = [("awful", "negative", "positive", 0.75), ("great | fun", "positive", "positive", 0.95),
                     ("dull", "negative", "negative", 0.6), ("fine", "positive", "negative", 0.875)]
            (folder / "test_preds.jsonl").write_text("".join(
                json.dumps({"index": i, "text": t, "label": y, "predicted": p, "probability": q}) + "\n"
                for i, (t, y, p, q) in enumerate(preds)))
    (folder / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in log))
    (folder / "metrics.json").write_text(json.dumps(run))
    return run


def tables(markdown: str) -> dict[tuple[str, str], list[dict[str, str]]]:
    """Markdown tables as rows of {header: cell}, keyed by their (## run, ### section) headings."""
    found, h2, h3 = {}, "", ""
    for line in markdown.splitlines():
        if line.startswith("## "):
            h2 = line[3:].split()[0]
        elif line.startswith("### "):
            h3 = line[4:]
        elif line.startswith("|") and not line.startswith("|---"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            if (h2, h3) not in found:
                found[h2, h3], header = [], cells
            else:
                found[h2, h3].append(dict(zip(header, cells)))
    return found


def matches(cell: str, value) -> bool:
    """Same number at the precision the cell was printed with (4 decimals for fractions, 2 for percentages)."""
    if isinstance(value, int):
        return int(cell.replace(",", "")) == value
    decimals = len(cell.split(".")[1])
    return decimals in (2, 4) and abs(float(cell) - value) <= 0.5 * 10 ** -decimals + 1e-12


def make_runs(tmp_path, recorded: bool = True) -> dict[str, dict]:
    return {task: write_run(tmp_path / "runs" / name, task, recorded)
            for task, name in (("sst2", "cls"), ("squad_v2", "qa"))}


def build(tmp_path, *args) -> str:
    out = tmp_path / "out" / "REPORT.md"
    assert report.main([*map(str, args), "-o", str(out), "--runs-dir", str(tmp_path / "runs")]) == 0
    return out.read_text()


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """One report from both runs (drawing figures takes a second, so the tests share it)."""
    tmp_path = tmp_path_factory.mktemp("report")
    runs = make_runs(tmp_path)
    return tmp_path, runs, build(tmp_path, tmp_path / "runs" / "cls", tmp_path / "runs" / "qa")


def test_tables_show_the_metrics_json_numbers(built):
    _, runs, text = built
    found = tables(text)
    stage_header = {"before (untrained head)": "before", "zero-shot": "zero_shot", "after": "after"}
    for name, run in (("cls", runs["sst2"]), ("qa", runs["squad_v2"])):
        epochs = found[name, "Per-epoch (validation)"]
        assert len(epochs) == len(run["epochs"])
        for shown, row in zip(epochs, run["epochs"]):
            assert shown.keys() == row.keys() and all(matches(shown[k], v) for k, v in row.items()), shown
        params = {r["part"]: r["parameters"] for r in found[name, "Parameters"]}
        assert all(matches(params[k], v) for k, v in run["params"].items())
        stages = found[name, "Test set: before / zero-shot / after"]
        for shown in stages:
            for header, stage in stage_header.items():
                if name == "cls":
                    value = run["metrics"][stage][shown["metric"]]
                else:
                    label, group, key = next(r for r in report.QA_ROWS if r[0] == shown["metric"])
                    value = run["scores"][stage][group][key] if group else run["scores"][stage][key]
                assert matches(shown[header], value), (name, shown["metric"], header)
    qa_metrics = {r["metric"] for r in found["qa", "Test set: before / zero-shot / after"]}
    assert {"EM", "F1", "HasAns_exact", "NoAns_f1", "best_f1_thresh", "BLEU", "ROUGE-Lsum", "METEOR"} <= qa_metrics
    confusion = found["cls", "Confusion matrix (test set, after; rows = true, columns = predicted)"]
    assert [[int(r[label]) for label in runs["sst2"]["labels"]] for r in confusion] == runs["sst2"]["confusion"]


def test_comparison_table_baselines_and_warnings(built):
    """One row per run, test set and headline metric with metrics.json's numbers; the baselines computed by hand:
    SST-2's test set holds 5 negative and 5 positive sentences, the training set's majority is positive (50 of 80),
    so always-positive scores accuracy 0.5 and F1 2/3; the QA test set has 6 unanswerable questions of 10."""
    _, runs, text = built
    rows = tables(text)["Comparison", ""]
    ours = [r for r in rows if not r["run"].startswith("↳")]
    assert [(r["run"], r["metric"]) for r in ours] == [("`cls`", "accuracy"), ("`cls`", "f1"), ("`qa`", "exact"),
                                                       ("`qa`", "f1")]
    stage = {"before": "before", "zero-shot": "zero_shot", "after": "after"}
    for r in ours:
        run = runs["squad_v2" if r["run"] == "`qa`" else "sst2"]
        assert r["model"] == "`tiny-llama`" and r["trained params"] == str(run["params"]["trainable"])
        assert r["test set"] == "test" and r["task"] == run["task"]
        assert r["wall time (features + training)"] == "3.8 s"  # 2.5 s features + 1.25 s training
        for header, key in stage.items():
            assert matches(r[header], run["metrics"][key][r["metric"]]), (r, header)
    base = {(r["task"], r["metric"]): r for r in rows if r["run"].startswith("↳")}
    assert base["sst2", "accuracy"]["run"] == "↳ baseline: always `positive` (the training labels' majority)"
    assert base["sst2", "accuracy"]["after"] == "0.5000" and base["sst2", "f1"]["after"] == "0.6667"
    assert base["squad_v2", "exact"]["run"] == "↳ baseline: always no answer"
    assert base["squad_v2", "exact"]["after"] == base["squad_v2", "f1"]["after"] == "60.00"
    assert all(r["before"] == r["zero-shot"] == "–" for r in base.values())
    # the QA run's after (EM 52.00, F1 55.25) is below always-no-answer's 60.00: a warning, here and in its section;
    # the classification run beats its baseline and its untrained head: none
    warning = ("> **⚠ Warning:** `qa`, test: after does not beat the baseline, always no answer: exact 52.00 ≤ 60.00, "
               "f1 55.25 ≤ 60.00.")
    assert text.count(warning) == 2 and text.count("⚠") == 2


def test_per_class_scores_errors_steps_selection_and_environment(built):
    _, runs, text = built
    found = tables(text)
    per_class = {r["class"]: r for r in found["cls", "Per-class scores (test set, after)"]}
    # confusion [[4, 1], [2, 3]]: negative precision 4/6 recall 4/5, positive precision 3/4 recall 3/5
    assert per_class["negative"] == {"class": "negative", "precision": "0.6667", "recall": "0.8000", "F1": "0.7273",
                                     "support": "5"}
    assert per_class["positive"] == {"class": "positive", "precision": "0.7500", "recall": "0.6000", "F1": "0.6667",
                                     "support": "5"}
    assert per_class["macro average"]["F1"] == "0.6970" and per_class["macro average"]["support"] == "10"
    errors = found["cls", "Most confident errors (test set, after)"]
    assert errors == [{"row": "3", "text": "fine", "true": "positive", "predicted": "negative", "confidence": "0.8750"},
                      {"row": "0", "text": "awful", "true": "negative", "predicted": "positive",
                       "confidence": "0.7500"}]
    assert "2 of 2 errors (of 4 examples), the most confident first" in text
    assert "log.jsonl: 12 step rows (steps 1–12); training loss first 0.8750, lowest 0.6000, last 0.6000; median " \
           "1,007.0 examples/s." in text
    assert "- selection: rule best, metric accuracy, epoch 2, stopped patience" in text
    assert found["cls", "Training curve and model selection"] == [
        {"lr": "0.001", "validation loss": "0.6012", "validation score": "0.6123"},
        {"lr": "0.01", "validation loss": "0.6345", "validation score": "0.6543"}]
    assert found["cls", "Per-epoch (validation)"] and len(found["cls", "Per-epoch (validation)"]) == 3  # no step rows
    env = {r["run"]: r for r in found["Environment", ""]}
    assert env["`cls`"] == {"run": "`cls`", "python": "3.11.2", "torch": "2.13.0", "transformers": "4.56.1",
                            "device": "cpu"}
    # the QA run stored no predictions here: said so, not made up
    assert "_not recorded: the run folder has no preds.json / test_data.json._" in text


def test_an_older_run_says_what_it_did_not_record(tmp_path):
    """A run from before label counts, per-example predictions, step rows, selection and versions were recorded: the
    report still builds; the baseline is the test labels' majority (a tie: the first label), and the rest says
    "not recorded"."""
    make_runs(tmp_path, recorded=False)
    text = build(tmp_path, tmp_path / "runs" / "cls", tmp_path / "runs" / "qa")
    base = {r["metric"]: r for r in tables(text)["Comparison", ""] if r["run"].startswith("↳") and r["task"] == "sst2"}
    assert base["accuracy"]["run"] == ("↳ baseline: always `negative` (the test labels' majority: the run recorded no "
                                       "training label counts)")
    assert base["accuracy"]["after"] == "0.5000" and base["f1"]["after"] == "0.0000"
    assert text.count("Per-step loss: not recorded") == 2 and text.count("- selection: not recorded") == 2
    assert "_not recorded: the run folder has no per-example predictions (test_preds.jsonl)" in text
    assert all(r["python"] == r["device"] == "not recorded" for r in tables(text)["Environment", ""])


def test_a_grid_from_before_the_loss_ranking_says_its_rule(tmp_path):
    """A run whose lr_grid has no val_loss kept the head with the best score: the report says so, with dashes."""
    make_runs(tmp_path)
    path = tmp_path / "runs" / "cls" / "metrics.json"
    run = json.loads(path.read_text())
    run["lr_grid"] = [{"lr": g["lr"], "score": g["score"]} for g in run["lr_grid"]]
    path.write_text(json.dumps(run))
    text = build(tmp_path, tmp_path / "runs" / "cls")
    assert "- learning-rate grid (each head at its kept epoch; the best score was kept):" in text
    assert tables(text)["cls", "Training curve and model selection"] == [
        {"lr": "0.001", "validation loss": "–", "validation score": "0.6123"},
        {"lr": "0.01", "validation loss": "–", "validation score": "0.6543"}]
    assert "the lowest validation loss is kept" not in text


def test_text_sections(built):
    text = built[2]
    assert "hidden × num_labels, no bias = 32 × 2 = 64" in text and "`LlamaForSequenceClassification.score`" in text
    assert "hidden × 2 + 2 bias = 32 × 2 + 2 = 66" in text and "`LlamaForQuestionAnswering.qa_outputs`" in text
    assert "5,000 tokens (2,000 tokens/s)" in text and "`python train.py --run-name qa`" in text
    assert "No-answer threshold (chosen on validation): -1.2346" in text


def test_figures_are_linked_pngs(built):
    pytest.importorskip("matplotlib")
    tmp_path, _, text = built
    links = [line[line.index("](") + 2:-1] for line in text.splitlines() if line.startswith("![")]
    assert [link.split("-", 1)[1] for link in links] == [
        "epochs.png", "steps.png", "stages.png", "confusion.png", "epochs.png", "steps.png", "stages.png",
        "hasans-noans.png"] and all(link.startswith("REPORT_files/") for link in links)
    for link in links:
        assert (tmp_path / "out" / link).read_bytes().startswith(PNG_MAGIC), link
    assert "pip install -r requirements-report.txt" not in text


def test_without_matplotlib_writes_a_note(tmp_path, monkeypatch):
    make_runs(tmp_path)
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes `import matplotlib` raise ImportError
    text = build(tmp_path, tmp_path / "runs" / "cls", tmp_path / "runs" / "qa")
    assert text.count("pip install -r requirements-report.txt") == 2 and "![" not in text
    assert not (tmp_path / "out" / "REPORT_files").exists()


def test_default_picks_latest_run_of_each_task(tmp_path, monkeypatch):
    monkeypatch.setattr(report, "pyplot", lambda: None)  # tables suffice here
    make_runs(tmp_path)
    write_run(tmp_path / "runs" / "cls-old", "sst2")
    write_run(tmp_path / "runs" / "cls-new", "sst2")
    run = write_run(tmp_path / "runs" / "qnli-run", "sst2")
    (tmp_path / "runs" / "qnli-run" / "metrics.json").write_text(json.dumps(run | {"task": "qnli"}))
    (tmp_path / "runs" / "not-a-run").mkdir()  # e.g. a run still in progress: skipped
    for age, name in enumerate(("cls-new", "qa", "cls-old", "cls", "qnli-run")):
        os.utime(tmp_path / "runs" / name / "metrics.json", (1e9 - age, 1e9 - age))
    sections = [line[3:].split()[0] for line in build(tmp_path).splitlines() if line.startswith("## ")]
    assert sections == ["Comparison", "Environment", "qnli-run", "cls-new", "qa"]


@pytest.mark.parametrize("case", ["missing", "invalid", "no-runs"])
def test_errors_exit_2_with_one_line(tmp_path, capsys, case):
    if case == "missing":
        (tmp_path / "empty").mkdir()
        args, expected = [str(tmp_path / "empty")], str(tmp_path / "empty" / "metrics.json")
    elif case == "invalid":
        (tmp_path / "runs" / "broken").mkdir(parents=True)
        (tmp_path / "runs" / "broken" / "metrics.json").write_text("{not json")
        args, expected = [], str(tmp_path / "runs" / "broken" / "metrics.json")
    else:
        args, expected = [], "make demo"
    assert report.main(args + ["-o", str(tmp_path / "R.md"), "--runs-dir", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and expected in err
    assert not (tmp_path / "R.md").exists()


QUESTION = {"data": [{"title": "t", "paragraphs": [{"context": "c", "qas": [{"id": "q1", "question": "why?",
                                                                              "answers": []}]}]}]}


@pytest.mark.parametrize("name, files, expected", [
    ("cls", {"test_preds.jsonl": '{"index": 0, "text": "a"\n'}, "/test_preds.jsonl: invalid JSON lines"),
    ("cls", {"test_preds.jsonl": '{"index": 0, "text": "a"}\n'},
     "/test_preds.jsonl: a row without its index, text, label, predicted or probability"),
    ("cls", {"log.jsonl": "[1, 2]\n"}, "/log.jsonl: a row is not a JSON object"),
    ("qa", {"test_data.json": json.dumps(QUESTION), "preds.json": "{}", "na_prob.json": "{}"},
     ": test_data.json, preds.json and na_prob.json do not read together (KeyError: 'q1')"),
], ids=["preds-json", "preds-keys", "log", "qa-preds"])
def test_a_damaged_prediction_or_log_file_is_one_line_naming_it(tmp_path, capsys, name, files, expected):
    make_runs(tmp_path)
    for file, content in files.items():
        (tmp_path / "runs" / name / file).write_text(content)
    assert report.main([str(tmp_path / "runs" / name), "-o", str(tmp_path / "R.md")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{tmp_path / 'runs' / name}{expected}" in err, err
    assert not (tmp_path / "R.md").exists()


def test_glue_task_run_shows_its_task_and_every_test_set(tmp_path):
    """A GLUE task's run (train_cls.py --task mnli): the task, its text columns and metrics, and a table for the
    mismatched test set beside the test set's."""
    run = write_run(tmp_path / "runs" / "mnli-run", "sst2")
    run |= {"task": "mnli", "text_columns": ["sentence1", "sentence2"], "task_metrics": ["accuracy"],
            "labels": ["contradiction", "entailment", "neutral"], "confusion": [[1, 0, 0], [0, 1, 0], [0, 0, 1]],
            "more_tests": {"test_mismatched": {"before": cls_scores(0.31234), "after": cls_scores(0.55556)}}}
    (tmp_path / "runs" / "mnli-run" / "metrics.json").write_text(json.dumps(run))
    text = build(tmp_path, tmp_path / "runs" / "mnli-run")
    assert "## mnli-run (mnli)" in text
    assert "- task: mnli, texts from column(s) sentence1, sentence2, GLUE metric(s): accuracy" in text
    mismatched = tables(text)["mnli-run", "Test set test_mismatched: before / zero-shot / after"]
    accuracy = next(r for r in mismatched if r["metric"] == "accuracy")
    assert accuracy == {"metric": "accuracy", "before (untrained head)": "0.3123", "after": "0.5556"}


def test_confusion_matrix_shows_label_names():
    """SST-2's 0/1 read as negative/positive (runs from before names were recorded); recorded names win."""
    assert report.label_names({"labels": ["0", "1"]}) == ["negative", "positive"]
    assert report.label_names({"labels": ["0", "1"], "label_names": ["bad", "good"]}) == ["bad", "good"]
    assert report.label_names({"labels": ["a", "b", "c"]}) == ["a", "b", "c"]


@pytest.mark.parametrize("broken", [
    {"task": "sst2", "metrics": {}, "epochs": [], "params": {}, "split": {}, "timing": {}},
    {"task": "sst2", "base_model": "m", "metrics": {"after": {"accuracy": "x"}}, "epochs": [{"epoch": 1}],
     "params": {"backbone": 1}, "split": {}, "timing": {}},
], ids=["no-entries", "wrong-types"])
def test_a_malformed_run_is_one_line(tmp_path, broken):
    (tmp_path / "runs" / "a").mkdir(parents=True)
    (tmp_path / "runs" / "a" / "metrics.json").write_text(json.dumps(broken))
    out = subprocess.run([sys.executable, "report.py", "--runs-dir", str(tmp_path / "runs"), "-o",
                          str(tmp_path / "R.md")], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "Traceback" not in out.stderr, out.stderr
    assert "metrics.json: missing or malformed entry" in out.stderr and not (tmp_path / "R.md").exists()


# --- runs of the tiny random Llama: what train_cls.py / train_qa.py store, and the report's numbers from it ------

@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory, tiny_llama_folder):
    """A classification run (200-row SST-2 cut, 100 test sentences) and a QA run (60 / 30 questions), 2 epochs each,
    and the report on both."""
    import train_cls
    import train_qa
    from helpers import data_dir_cut
    tmp = tmp_path_factory.mktemp("tiny-runs")
    common = ["--model", str(tiny_llama_folder), "--dtype", "fp32", "--epochs", "2", "--runs-dir", str(tmp / "runs")]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LLAMA_HEADS_CACHE", str(tmp / "cache"))
        assert train_cls.main([*common, "--data-dir", str(data_dir_cut(tmp / "sst2", "sst2", 200, 100)),
                               "--run-name", "cls"]) == 0
        assert train_qa.main([*common, "--train-file", str(ROOT / "data" / "samples" / "squad_train.json"),
                              "--eval-file", str(ROOT / "data" / "samples" / "squad_test.json"),
                              "--max-train-examples", "60", "--max-eval-examples", "30", "--run-name", "qa"]) == 0
    return tmp, build(tmp, tmp / "runs" / "cls", tmp / "runs" / "qa")


def test_a_classification_run_stores_its_test_predictions(tiny_runs):
    tmp, _ = tiny_runs
    info = json.loads((tmp / "runs" / "cls" / "metrics.json").read_text())
    rows = [json.loads(line) for line in (tmp / "runs" / "cls" / "test_preds.jsonl").read_text().splitlines()]
    dev = [line.split("\t") for line in (tmp / "sst2" / "dev.tsv").read_text().splitlines()[1:]]
    assert [r["index"] for r in rows] == list(range(100)) and [r["text"] for r in rows] == [t for t, _ in dev]
    names = info["label_names"]
    assert [r["label"] for r in rows] == [names[info["labels"].index(y)] for _, y in dev]
    assert all(0.5 <= r["probability"] <= 1 for r in rows)  # the larger of two
    counted = [[sum(r["label"] == t and r["predicted"] == p for r in rows) for p in names] for t in names]
    assert counted == info["confusion"]
    assert sum(r["label"] == r["predicted"] for r in rows) / 100 == info["metrics"]["after"]["accuracy"]
    assert info["label_counts"]["test"] == [sum(r["label"] == n for r in rows) for n in names]
    assert sum(info["label_counts"]["train"]) == info["split"]["train"]


def test_the_report_of_real_runs_equals_their_files(tiny_runs):
    """The comparison, the baselines, per-class scores, the no-answer decisions and the errors of two real runs,
    checked against metrics.json and the stored predictions, computed here another way."""
    from metrics.squad import load_dataset, score
    tmp, text = tiny_runs
    found = tables(text)
    cls, qa = (json.loads((tmp / "runs" / name / "metrics.json").read_text()) for name in ("cls", "qa"))
    rows = [json.loads(line) for line in (tmp / "runs" / "cls" / "test_preds.jsonl").read_text().splitlines()]
    comparison = {(r["run"] if r["run"].startswith("`") else r["task"] + " baseline", r["metric"]): r
                  for r in found["Comparison", ""]}
    for (run, metric), r in comparison.items():
        if run.startswith("`"):
            after = (cls if run == "`cls`" else qa)["metrics"]["after"][metric]
            assert matches(r["after"], after), (run, metric)
    # always the training set's majority label: its share of the test set, and the F1 of the positive class
    names, train = cls["label_names"], cls["label_counts"]["train"]
    majority = names[train.index(max(train))]
    share = sum(r["label"] == majority for r in rows) / len(rows)
    assert matches(comparison["sst2 baseline", "accuracy"]["after"], share)
    assert matches(comparison["sst2 baseline", "f1"]["after"], 2 * share / (1 + share) if majority == names[1] else 0.0)
    assert f"always `{majority}` (the training labels' majority)" in comparison["sst2 baseline", "accuracy"]["run"]
    # always no answer, scored by metrics.squad
    data = load_dataset(tmp / "runs" / "qa" / "test_data.json")
    abstain = score(data, {q["id"]: "" for a in data for p in a["paragraphs"] for q in p["qas"]})["squad_v2"]
    for metric in ("exact", "f1"):
        assert matches(comparison["squad_v2 baseline", metric]["after"], abstain[metric])
    # the warnings say exactly where after does not beat the baseline
    for run, name, info, task in (("`cls`", "cls", cls, "sst2"), ("`qa`", "qa", qa, "squad_v2")):
        percent = task == "squad_v2"
        worse = [m for (r, m), row in comparison.items() if r == f"{task} baseline"
                 and info["metrics"]["after"][m] <= float(row["after"]) + (0.005 if percent else 0.00005)]
        assert (f"`{name}`, test: after does not beat the baseline" in text) == bool(worse), (name, worse)
    # per class: the positive class's scores are the run's precision, recall and F1
    positive = next(r for r in found["cls", "Per-class scores (test set, after)"] if r["class"] == names[1])
    for header, key in (("precision", "precision"), ("recall", "recall"), ("F1", "f1")):
        assert matches(positive[header], cls["metrics"]["after"][key])
    # the no-answer decisions: abstaining on an unanswerable question is the NoAns exact match
    s = qa["scores"]["after"]["squad_v2"]
    decisions = {r["true \\ predicted"]: r for r in found["qa", "No-answer decision (test set, after; rows = true, "
                                                              "columns = predicted)"]}
    assert int(decisions["no answer"]["no answer"]) == round(s["NoAns_exact"] * s["NoAns_total"] / 100)
    assert int(decisions["has answer"]["answered"]) + int(decisions["has answer"]["no answer"]) == s["HasAns_total"]
    # the errors: the most confident wrong predictions, in order
    wrong = sorted((r for r in rows if r["label"] != r["predicted"]), key=lambda r: -r["probability"])[:10]
    shown = found["cls", "Most confident errors (test set, after)"]
    assert [(int(r["row"]), r["true"], r["predicted"]) for r in shown] == \
        [(r["index"], r["label"], r["predicted"]) for r in wrong]
    assert all(matches(r["confidence"], w["probability"]) for r, w in zip(shown, wrong))
    n_wrong = round(s["total"] * (1 - s["exact"] / 100))  # a question scores exact 0 or 1
    assert f"{min(10, n_wrong)} of {n_wrong} errors (of {s['total']} examples)" in text
    assert len(found["qa", "Most confident errors (test set, after)"]) == min(10, n_wrong)
