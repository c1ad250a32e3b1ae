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
    "task": "sst2", "base_model": "HuggingFaceTB/SmolLM2-135M-Instruct", "license": "apache-2.0",
    "command": "python train_cls.py --epochs 3 --lr 0.001 --push-to-hub me/sst2-head",
    "split": {"train": 800, "validation": 100, "test": 100, "seed": 0, "stratify_by": "label"},
    "metrics": {"before": {"accuracy": 0.5, "f1": 0.3333}, "zero_shot": {"accuracy": 0.71234, "f1": 0.7},
                "after": {"accuracy": 0.8875, "precision": 0.9, "recall": 0.875, "f1": 0.8873}},
    "params": {"backbone": 134515008, "head": 1730, "total": 134516738, "trainable": 1730},
}


def make(folder: Path, names: list[str]) -> Path:
    for name in names:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(os.urandom(64))
    return folder


@pytest.fixture
def run_dir(tmp_path):  # a run folder with everything a run may leave, wanted or not
    return make(tmp_path / "sst2-run", ["config.json", "head.safetensors", "metrics.json", "log.jsonl",
                                        "ckpt.pt", "optimizer.pt", "features/train.pt", "features/meta.json"])


@pytest.fixture
def export_dir(tmp_path):
    return make(tmp_path / "export", ["config.json", "model.safetensors", "generation_config.json",
                                      "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"])


def retry(folder: Path, repo_id: str, *flags: str) -> str:
    """The command a failed push prints: this interpreter, hub.py and the folder, by absolute path."""
    return shlex.join([sys.executable, str(ROOT / "hub.py"), "push", str(folder.absolute()), repo_id, *flags])


def hashes(folder: Path) -> dict:
    return {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*") if p.is_file()}


def test_card_content():
    card = hub.model_card({**INFO, "repo_id": "me/sst2-head"})
    front, body = card.split("---\n")[1], card.split("---\n", 2)[2]
    assert card.startswith("---\n")
    for line in ["base_model: HuggingFaceTB/SmolLM2-135M-Instruct", "license: apache-2.0", "- llama-heads",
                 "- text-classification", "datasets:", "- nyu-mll/glue"]:
        assert line in front.splitlines()
    assert "library_name" not in front  # head only: not loadable by transformers alone
    assert INFO["command"] in body and "frozen" in body
    assert "|  | accuracy | f1 | precision | recall |" in body
    assert "| before (untrained head) | 0.5000 | 0.3333 | – | – |" in body
    assert "| zero-shot | 0.7123 | 0.7000 | – | – |" in body
    assert "| after (trained head) | 0.8875 | 0.8873 | 0.9000 | 0.8750 |" in body
    assert "| backbone | 134,515,008 |" in body and "| trainable | 1,730 |" in body
    assert "- train: 800" in body and "- stratify_by: label" in body
    assert 'hf_hub_download("me/sst2-head", "head.safetensors")' in body


def test_card_full_export_qa_and_missing_parts():
    card = hub.model_card({"task": "squad_v2", "base_model": "/tmp/local/llama", "kind": "full",
                           "repo_id": "me/qa", "metrics": {"before": {"exact": 0.0, "HasAns_total": 50},
                                                           "zero_shot": None, "after": {"exact": 51.2}}})
    assert "library_name: transformers" in card and "- question-answering" in card and "rajpurkar/squad_v2" in card
    assert "base_model:" not in card  # a local path is not a Hub id
    assert "zero-shot" not in card and "| before (untrained head) | 0.0000 | 50 |" in card
    assert 'AutoModelForQuestionAnswering.from_pretrained("me/qa")' in card
    assert "## Parameters" not in card and "## Command" not in card and "license" not in card
    assert hub.model_card({}).startswith("---\n")  # nothing known: still a card


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
    api, before = StubApi(), hashes(folder)
    hub.push_folder(folder, "me/peft", token="hf_x", api=api)  # no card.json: the card still says PEFT
    assert api.calls["uploaded"] == ["README.md", "adapter_config.json", "adapter_model.safetensors",
                                     "llama_heads.json", "tokenizer.json", "tokenizer_config.json"]
    assert 'PeftModel.from_pretrained(model, "me/peft")' in api.card() and "adapters" in api.calls["message"]
    assert "with the tokenizer" in api.card() and "metrics and log" not in api.card()  # what it holds: no run files
    assert "trained were LoRA adapters" in api.card()
    assert "only the head was trained" not in api.card()  # adapters: the backbone did train
    assert hashes(folder) == before


def test_a_lora_run_folder_card_says_it_holds_the_run():
    card = hub.model_card({**INFO, "mode": "lora", "trained": "LoRA adapters", "repo_id": "me/lora"})
    assert "PEFT's format" in card and "the run's config, metrics and log" in card
    assert 'PeftModel.from_pretrained(model, "me/lora")' in card


def test_retry_reuses_card_json(run_dir):
    first, again = StubApi(), StubApi()
    hub.push_folder(run_dir, "me/a", token="hf_x", card_info=INFO, api=first)
    hub.save_card_info(run_dir, INFO)  # as publish does
    hub.push_folder(run_dir, "me/a", token="hf_x", api=again)  # no card_info: read back card.json
    assert again.card() == first.card() and "card.json" not in again.calls["uploaded"]


def test_publish_saves_the_card_source_where_a_retry_finds_it(run_dir, export_dir, capsys):
    run = SimpleNamespace(path=run_dir, write_metrics=lambda info: None)
    assert hub.publish(run, INFO, None, export_dir) == 0
    for folder in (run_dir, export_dir):
        assert json.loads((folder / "card.json").read_text()) == INFO
        assert not (folder / "README.md").exists()


def test_publish_failure_says_failed_once(run_dir, monkeypatch, capsys):
    monkeypatch.setattr(hub, "HfApi", lambda: StubApi(ConnectionError("offline")))
    monkeypatch.setattr(hub, "get_token", lambda: "hf_x")
    run = SimpleNamespace(path=run_dir, write_metrics=lambda info: None)
    assert hub.publish(run, INFO, hub.Push("me/x"), None) == 1
    out = capsys.readouterr().out.splitlines()[-1]
    assert out == f"error: push to me/x failed: Hub unreachable (no network, or HF_HUB_OFFLINE=1); local files " \
                  f"kept, retry with: {retry(run_dir, 'me/x')}"


@pytest.mark.parametrize("card_json", [True, False])
def test_own_readme_is_never_overwritten(run_dir, capsys, card_json):
    """A folder's own README.md stays on disk, pushed or not; with a card source (card.json) the repo gets the
    generated card, and a line says so; without one, theirs is the card."""
    (run_dir / "README.md").write_text("MY OWN NOTES\n")
    if card_json:
        hub.save_card_info(run_dir, INFO)
    before, api = hashes(run_dir), StubApi()
    hub.push_folder(run_dir, "me/a", token="hf_x", api=api)
    with pytest.raises(hub.PushError):
        hub.push_folder(run_dir, "me/a", token="hf_x", api=StubApi(ConnectionError("offline")))
    assert hashes(run_dir) == before
    notes = capsys.readouterr().out.splitlines()
    if card_json:
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
    ("ckpt-only", "me/x", "FOLDER {} holds no head.safetensors, .*: nothing to push; give a run folder"),
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


@pytest.mark.parametrize("task", ["sst2", "qnli", "squad_v2"])
@pytest.mark.parametrize("kind", ["head", "full", "peft"])
def test_every_card_snippet_runs_and_gives_the_projects_logits(tmp_path, monkeypatch, capsys, tiny_llama_folder,
                                                               task, kind):
    """The card's Python, executed against local folders standing in for the Hub: the base model's folder, a repo
    folder holding head.safetensors (hf_hub_download patched to read it), an --export folder as the full repo, or a
    LoRA run's folder (its adapters in PEFT's format, read by peft itself)."""
    import huggingface_hub
    import torch
    from safetensors.torch import save_file

    import lora
    import model
    import train_cls
    from modes import LoRA
    torch.manual_seed(3)
    lm, tok = model.load_backbone(str(tiny_llama_folder), torch.device("cpu"), torch.float32)
    qa = task == "squad_v2"
    head = model.qa_head(32, init_std=1.0) if qa else model.cls_head(32, 2, init_std=1.0)
    sample = [hub.SAMPLE_PAIR if task == "qnli" else hub.SAMPLE_TEXT]
    ids = None if qa else train_cls.tokenize(tok, sample, 10**6)  # the run's encoding (a pair's template too)
    repo = tmp_path / "repo"
    repo.mkdir()
    save_file(head.state_dict(), repo / "head.safetensors")
    if kind == "full":
        model.export(tmp_path / "export", str(tiny_llama_folder), "qa" if qa else "cls", head, tok, {},
                     None if qa else ["negative", "positive"])
    if kind == "peft":  # adapters that change the logits: B is random, not zero
        mode = LoRA(2, 4.0, 0.0, ["q_proj", "v_proj"])
        mode.prepare(lm.model)
        for m in lm.model.modules():
            if isinstance(m, lora.LoRALinear):
                torch.nn.init.normal_(m.lora_b.weight, std=0.5)
        lora.write_peft(repo, mode.peft(lm.model, head, "qa" if qa else "cls", str(tiny_llama_folder)))
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", lambda repo_id, filename, **kw: str(repo / filename))
    info = {"task": task, "base_model": str(tiny_llama_folder), "mode": "lora" if kind == "peft" else "head",
            "threshold": -0.5, "label_names": None if qa else ["negative", "positive"], "kind": kind,
            "text_columns": ["question", "sentence"] if task == "qnli" else None,
            "repo_id": {"full": str(tmp_path / "export"), "peft": str(repo), "head": "me/repo"}[kind]}
    code = snippets(hub.model_card(info))
    assert len(code) == 1
    scope = {}
    exec(compile(code[0], "card", "exec"), scope)
    printed = capsys.readouterr().out.strip()
    with torch.no_grad():
        if not qa:
            assert scope["inputs"]["input_ids"].tolist() == ids
            hidden = lm.model(input_ids=torch.tensor(ids)).last_hidden_state
            torch.testing.assert_close(scope["logits"], head(model.pool(hidden, torch.ones(1, len(ids[0])))),
                                       atol=1e-4, rtol=0)
            assert set(eval(printed)) == {"negative", "positive"}
        else:
            from data.squad import make_windows
            from data.squad_json import Example
            q, c = hub.SAMPLE_QA
            (w,) = make_windows([Example("q", "", q, c, [], [])], tok)
            assert scope["ids"] == w.input_ids  # the project's window
            logits = head(lm.model(input_ids=torch.tensor([w.input_ids])).last_hidden_state)[0]
            torch.testing.assert_close(scope["out"].start_logits[0], logits[:, 0], atol=1e-4, rtol=0)
            torch.testing.assert_close(scope["out"].end_logits[0], logits[:, 1], atol=1e-4, rtol=0)
            assert abs(scope["null"] - logits[w.null_index].sum().item()) < 1e-4
            from data.squad import postprocess, predictions  # the project's n-best search and threshold
            span, diff, _ = postprocess([Example("q", "", q, c, [], [])], [w], [logits[:, 0].numpy()],
                                        [logits[:, 1].numpy()])
            assert scope["answer"] == predictions(span, diff, -0.5)[0]["q"]
    if kind == "peft":  # the adapters mattered: the base model alone gives other logits
        plain, _ = model.load_backbone(str(tiny_llama_folder), torch.device("cpu"), torch.float32)
        ids = torch.tensor(tok([hub.SAMPLE_TEXT])["input_ids"])
        assert not torch.allclose(plain.model(input_ids=ids).last_hidden_state,
                                  lm.model(input_ids=ids).last_hidden_state, atol=1e-3)
