"""train_cls.py end to end: artifacts, feature cache, determinism, resume, bad input, push, and the real SmolLM2."""
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import features
import lrgrid
import hub
import model
from helpers import StubApi, assert_one_line_error, crash_in_epoch, cut, data_dir_cut, log_rows, run_script
import train_cls

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "samples" / "sst2"
ROW_KEYS = ["epoch", "train_loss", "val_loss", "accuracy", "precision", "recall", "f1"]
METRIC_KEYS = {"loss", "accuracy", "precision", "recall", "f1"}


@pytest.fixture(scope="module")
def sst2_cut(tmp_path_factory):
    return data_dir_cut(tmp_path_factory.mktemp("sst2-cut"), "sst2", 200, 100)


@pytest.fixture(scope="module")
def tiny_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")  # features of the tiny model, shared by this file's tiny runs


@pytest.fixture
def tiny(tmp_path, monkeypatch, tiny_llama_folder, sst2_cut, tiny_cache):
    """run(*flags, name=...) -> (exit code, run folder): the tiny Llama, 2 epochs on the 200-row cut."""
    monkeypatch.setenv("LLAMA_HEADS_CACHE", str(tiny_cache))

    def run(*flags, name="run"):
        rc = train_cls.main(["--model", str(tiny_llama_folder), "--data-dir", str(sst2_cut), "--dtype", "fp32",
                             "--epochs", "2", "--runs-dir", str(tmp_path / "runs"), "--run-name", name, *flags])
        return rc, tmp_path / "runs" / name
    return run


def metrics(run):
    return json.loads((run / "metrics.json").read_text())


def log(run):
    return log_rows(run)


def epochs(run):
    return log_rows(run, steps=False)


def head(run):
    return load_file(run / "head.safetensors")["weight"]


# --- a tiny run --------------------------------------------------------------------------------------------

def test_artifacts_feature_cache_and_determinism(tiny, tmp_path, monkeypatch, tiny_llama_folder):
    cache = tmp_path / "cache"
    monkeypatch.setenv("LLAMA_HEADS_CACHE", str(cache))  # a fresh cache: this run computes the features
    rc, run = tiny()
    assert rc == 0
    assert {"config.json", "head.safetensors", "metrics.json", "log.jsonl", "card.json", "ckpt.pt"} <= \
        {p.name for p in run.iterdir()}
    assert head(run).shape == (2, 32)
    info = metrics(run)
    assert set(info["metrics"]) == {"before", "after"}
    assert all(set(m) == METRIC_KEYS for m in info["metrics"].values())
    backbone = model.n_params(model.meta_backbone(str(tiny_llama_folder)))  # loaded weights counted as the config says
    assert info["params"] == {"backbone": backbone, "head": 64, "total": backbone + 64, "trainable": 64}
    assert sum(map(sum, info["confusion"])) == 100 and len(info["confusion"]) == 2
    assert info["split"] == {"train": 160, "validation": 40, "test": 100, "seed": 1, "stratify_by": "label",
                             "max_train_examples": None, "max_eval_examples": None}
    rows = epochs(run)
    assert [list(r) for r in rows] == [ROW_KEYS] * 2 and [r["epoch"] for r in rows] == [1, 2]
    assert rows == info["epochs"]
    assert [r["step"] for r in log(run) if "step" in r] == [10, 20]  # 10 steps an epoch, a row every 10
    assert set(info["environment"]) == {"python", "torch", "transformers", "device"}
    assert info["environment"]["torch"] == torch.__version__ and info["environment"]["device"].startswith("cpu")
    assert info["selection"]["rule"] == "best" and info["selection"]["metric"] == "accuracy"
    card = json.loads((run / "card.json").read_text())  # the card's source: metrics, flags, framework versions
    assert {k: card[k] for k in info} == info and card["hyperparameters"]["epochs"] == 2
    assert "runs_dir" not in card["hyperparameters"] and set(card["versions"]) == set(hub.FRAMEWORKS)
    assert json.loads((run / "config.json").read_text())["epochs"] == 2
    assert len(list((cache / "features").glob("*.safetensors"))) == 2  # train and test

    def no_backbone(*args, **kwargs):
        raise AssertionError("the backbone ran although its features are cached")
    monkeypatch.setattr(features, "backbone_passes", no_backbone)
    rc, again = tiny(name="again")
    assert rc == 0
    assert metrics(again)["metrics"] == info["metrics"] and log(again) == log(run)  # same seed, same numbers
    assert head(again).equal(head(run))


def test_resume_with_more_epochs(tiny, capsys):
    _, run = tiny("--epochs", "1", name="grow")
    first = epochs(run)
    rc, run = tiny("--epochs", "3", "--resume", name="grow")
    assert rc == 0 and "resumed from" in capsys.readouterr().out
    rows = epochs(run)
    assert [r["epoch"] for r in rows] == [1, 2, 3] and rows[0] == first[0]


def test_crash_then_resume_matches_an_uninterrupted_run(tiny):
    _, straight = tiny("--epochs", "3", "--log-every", "3", name="straight")
    with crash_in_epoch(2):
        tiny("--epochs", "3", "--log-every", "3", name="crashed")
    rc, resumed = tiny("--epochs", "3", "--log-every", "3", "--resume", name="crashed")
    assert rc == 0
    assert log(resumed) == log(straight)  # the step rows of epoch 1 kept, those of the crashed epoch 2 not twice
    assert [r.get("step") for r in log(resumed)] == [3, 6, 9, None, 12, 15, 18, None, 21, 24, 27, 30, None]
    for split, m in metrics(straight)["metrics"].items():
        assert metrics(resumed)["metrics"][split] == pytest.approx(m, abs=1e-6)
    assert head(resumed).equal(head(straight))


def test_resume_of_a_checkpoint_written_on_another_device(tiny, monkeypatch):
    """A GPU run resumed on this CPU: every tensor of its ckpt.pt says cuda:1, as a rank-1 GPU run's would."""
    _, straight = tiny("--epochs", "3", name="straight")
    with crash_in_epoch(2):
        tiny("--epochs", "3", name="gpu")
    ckpt = straight.parent / "gpu" / "ckpt.pt"
    state = torch.load(ckpt, weights_only=False)
    with monkeypatch.context() as m:
        m.setattr(torch.serialization, "location_tag", lambda storage: "cuda:1")
        torch.save(state, ckpt)
    with pytest.raises(RuntimeError, match="CUDA"):  # what loading it without map_location does here
        torch.load(ckpt, weights_only=False)
    rc, resumed = tiny("--epochs", "3", "--resume", name="gpu")
    assert rc == 0 and log(resumed) == log(straight) and head(resumed).equal(head(straight))


def test_resume_of_a_finished_run_changes_nothing(tiny):
    _, run = tiny(name="done")
    done, weight = metrics(run)["metrics"], head(run)
    assert tiny("--resume", name="done")[0] == 0
    assert metrics(run)["metrics"] == done and head(run).equal(weight)  # the averaged head, not the raw one


def test_the_lr_grid_equals_a_one_head_run_at_the_rate_it_keeps(tiny, capsys):
    rc, grid = tiny(name="grid")
    assert rc == 0 and "learning rate grid (validation loss / accuracy" in capsys.readouterr().out
    info = metrics(grid)
    losses = [g["val_loss"] for g in info["lr_grid"]]
    assert [g["lr"] for g in info["lr_grid"]] == list(lrgrid.GRID)
    assert info["lr"] in lrgrid.GRID and min(losses) == losses[lrgrid.GRID.index(info["lr"])]
    rc, one = tiny("--lr", repr(info["lr"]), name="one")
    assert rc == 0 and "lr_grid" not in metrics(one) and metrics(one)["lr"] == info["lr"]
    torch.testing.assert_close(head(grid), head(one), rtol=1e-4, atol=1e-6)
    assert metrics(one)["selection"] == info["selection"]
    assert metrics(one)["metrics"]["after"] == pytest.approx(info["metrics"]["after"], rel=1e-4)


def test_sample_caps_and_tensorboard(tiny, sst2_cut):
    """--max-train-examples / --max-eval-examples: stratified, seeded samples, recorded; TensorBoard gets the same
    step and epoch rows as log.jsonl."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    rc, run = tiny("--max-train-examples", "50", "--max-eval-examples", "30", "--report-to", "tensorboard",
                   "--log-every", "2")
    assert rc == 0
    info = metrics(run)
    assert (info["split"]["train"] + info["split"]["validation"], info["split"]["test"]) == (50, 30)
    assert (info["split"]["max_train_examples"], info["split"]["max_eval_examples"]) == (50, 30)
    assert json.loads((run / "config.json").read_text())["max_train_examples"] == 50
    labels = [line.split("\t")[-1] for line in (sst2_cut / "dev.tsv").read_text().splitlines()[1:]]
    positives = sum(info["confusion"][1])  # the confusion matrix's rows are the sampled test labels
    assert abs(positives - 30 * labels.count("1") / len(labels)) < 1
    steps = [r["step"] for r in log(run) if "step" in r]
    assert steps == [2, 4, 6]  # 40 training rows: 3 steps of 16 an epoch
    events = EventAccumulator(str(run / "tensorboard")).Reload()
    assert [e.step for e in events.Scalars("train/loss")] == steps
    assert [e.value for e in events.Scalars("epoch/accuracy")] == pytest.approx([r["accuracy"] for r in
                                                                                  info["epochs"]])


# --- push --------------------------------------------------------------------------------------------------

@pytest.fixture
def hub_stub(monkeypatch):
    def install(error=None):
        stub = StubApi(error)
        monkeypatch.setattr(hub, "HfApi", lambda: stub)
        monkeypatch.setattr(hub, "get_token", lambda: "hf_stub")
        monkeypatch.setattr(hub, "hub_base", lambda base: "me/tiny-llama")  # the tiny folder stands in for a Hub id
        return stub
    return install


def test_push_uploads_the_head_only(tiny, hub_stub, capsys):
    stub = hub_stub()
    rc, run = tiny("--push-to-hub", "me/sst2-tiny")
    assert rc == 0 and "pushed to https://huggingface.co/me/sst2-tiny" in capsys.readouterr().out
    assert stub.calls["create_repo"]["repo_id"] == "me/sst2-tiny"
    assert set(stub.calls["uploaded"]) == {"README.md", "config.json", "head.safetensors", "log.jsonl",
                                           "metrics.json"}
    assert "me/sst2-tiny" in stub.card() and not (run / "README.md").exists()  # the card goes up, not into the run


def test_a_push_of_a_model_no_one_else_can_load_is_refused_before_training(tiny, capsys):
    with pytest.raises(SystemExit) as e:
        tiny("--push-to-hub", "me/sst2-tiny")
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 1 and "is a local folder or name, which no one else can load" in err[0]


def test_failed_push_keeps_artifacts_and_says_how_to_retry(tiny, hub_stub, capsys):
    hub_stub(ConnectionError("offline"))
    rc, run = tiny("--push-to-hub", "me/sst2-tiny")
    out = capsys.readouterr().out
    assert rc == 1
    assert "error: push to me/sst2-tiny failed" in out and f"hub.py push {run.resolve()} me/sst2-tiny" in out
    assert {"config.json", "head.safetensors", "metrics.json", "log.jsonl", "card.json"} <= \
        {p.name for p in run.iterdir()}


# --- bad input: exit 2, one line on stderr -----------------------------------------------------------------

def cli(*flags, env=None):
    return run_script("train_cls.py", *flags, env=env)


def bad_data(tmp_path, train, dev, header="sentence\tlabel\n"):
    (tmp_path / "train.tsv").write_text(header + train)
    (tmp_path / "dev.tsv").write_text("sentence\tlabel\n" + dev)
    return ["--model", "unused", "--data-dir", str(tmp_path)]


@pytest.mark.parametrize("train, dev, file, words", [
    ("a\t0\nb\t1\n" * 3, "c\t2\n", "dev.tsv", ["unknown label", "['2']", "['0', '1']"]),
    ("a\t0\nb\tyes\n", "c\t1\n", "train.tsv", ["mixed label values", "use either numbers or names"]),
    ("a\t0\nb\t1\tc\n", "c\t1\n", "train.tsv", ["expected 2 columns"]),
    ("a\t0\nb\t1\n", "c\t1\n", "train.tsv", ["too few", "--val-fraction"]),
], ids=["unknown-eval-label", "mixed-labels", "extra-field", "too-few-rows"])
def test_bad_input_exits_2_with_one_line(tmp_path, train, dev, file, words):
    assert_one_line_error(cli(*bad_data(tmp_path, train, dev)), str(tmp_path / file), *words)


def test_missing_column_exits_2(tmp_path):
    flags = bad_data(tmp_path, "a\t0\nb\t1\n", "c\t1\n", header="text\tlabel\n")
    assert_one_line_error(cli(*flags), str(tmp_path / "train.tsv"), "missing column(s) ['sentence']",
                          "--text-column/--label-column")


def test_offline_default_names_the_flags(tmp_path):
    # an empty cache and a proxy that refuses connections: offline, even on a machine with a network
    env = {"LLAMA_HEADS_CACHE": str(tmp_path), "https_proxy": "http://127.0.0.1:9", "no_proxy": ""}
    assert_one_line_error(cli(env=env), "cannot download sst2_train", "--data-dir")


# --- the real model ----------------------------------------------------------------------------------------

def test_smollm2_learns_sst2(tmp_path):
    """All 2,000 sample training rows (their features are cached by `make demo` too); the first 400 dev rows,
    since the zero-shot pass is never cached. Measured: before 0.490, zero-shot 0.588, after 0.808."""
    rc = train_cls.main(["--model", "smollm2-135m", "--train-file", str(SAMPLE / "train.tsv"),
                         "--eval-file", str(cut(SAMPLE / "dev.tsv", tmp_path / "dev.tsv", 400)),
                         "--zero-shot", "--runs-dir", str(tmp_path), "--run-name", "smollm2"])
    assert rc == 0
    m = metrics(tmp_path / "smollm2")["metrics"]
    assert m["after"]["accuracy"] >= 0.75
    assert m["after"]["accuracy"] >= m["before"]["accuracy"] + 0.2
    assert m["zero_shot"]["accuracy"] >= 0.55


def test_zero_shot_cuts_the_text_not_the_prompt(tiny_llama_folder, capsys):
    """--max-length cuts what a zero-shot prompt holds of a text; the prompt's question and "Answer:" stay whole,
    so a long text scores as its cut text would in a full prompt."""
    lm, tokenizer = model.load_backbone(str(tiny_llama_folder), torch.device("cpu"), torch.float32)
    text = "an utterly long sentence that goes on and on about a film nobody should ever watch again"
    (short,) = train_cls.cut_texts(tokenizer, [text], 5)
    assert text.startswith(short) and len(tokenizer(short, add_special_tokens=False)["input_ids"]) == 5
    prompt, words = train_cls.zero_shot_setup(train_cls.glue.task("sst2"), ["0", "1"], None, False)
    cut = train_cls.zero_shot(lm, tokenizer, [text], prompt, words, 5, 8192)
    assert "zero-shot: 1 texts cut to 5 tokens" in capsys.readouterr().out
    assert torch.equal(cut, train_cls.zero_shot(lm, tokenizer, [short], prompt, words, 512, 8192))
    assert not torch.equal(cut, train_cls.zero_shot(lm, tokenizer, [text], prompt, words, 512, 8192))


def test_an_export_records_the_compute_dtype_and_plain_file_modes(tiny, tmp_path):
    """--dtype auto is resolved on the training machine: the export says what the run computed in (another
    machine would resolve "auto" otherwise); its weights get the mode every other file gets (not 0600)."""
    rc, _ = tiny("--dtype", "auto", "--epochs", "1", "--export", str(tmp_path / "out"))
    assert rc == 0
    recorded = json.loads((tmp_path / "out" / "llama_heads.json").read_text())
    assert recorded["dtype"] == model.dtype_name(model.pick_dtype(torch.device("cpu"))) != "auto"
    modes = {f.name: f.stat().st_mode & 0o777 for f in (tmp_path / "out").iterdir()}
    assert len(set(modes.values())) == 1, modes
