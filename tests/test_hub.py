"""hub.py: model card, push with a stub HfApi (no network), failure handling, retry CLI."""
import fnmatch
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

import hub

ROOT = Path(__file__).resolve().parents[1]
INFO = {
    "task": "sst2", "base_model": "HuggingFaceTB/SmolLM2-135M-Instruct", "license": "apache-2.0",
    "command": "python train_cls.py --epochs 3 --lr 0.001 --push-to-hub me/sst2-head",
    "split": {"train": 800, "validation": 100, "test": 100, "seed": 0, "stratify_by": "label"},
    "metrics": {"before": {"accuracy": 0.5, "f1": 0.3333}, "zero_shot": {"accuracy": 0.71234, "f1": 0.7},
                "after": {"accuracy": 0.8875, "precision": 0.9, "recall": 0.875, "f1": 0.8873}},
    "params": {"backbone": 134515008, "head": 1730, "total": 134516738, "trainable": 1730},
}


class StubApi:
    """Records what a real HfApi would have been asked; optionally fails like the Hub."""
    def __init__(self, error: Exception | None = None):
        self.error, self.calls = error, {}

    def create_repo(self, repo_id, token=None, private=None, exist_ok=False):
        if self.error:
            raise self.error
        self.calls["create_repo"] = dict(repo_id=repo_id, private=private, exist_ok=exist_ok)
        return f"https://huggingface.co/{repo_id}"

    def upload_folder(self, repo_id, folder_path, commit_message, allow_patterns, ignore_patterns, token=None):
        files = [p.relative_to(folder_path).as_posix() for p in Path(folder_path).rglob("*") if p.is_file()]
        self.calls["uploaded"] = sorted(f for f in files if any(fnmatch.fnmatch(f, p) for p in allow_patterns)
                                        and not any(fnmatch.fnmatch(f, p) for p in ignore_patterns))
        self.calls["message"] = commit_message


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
    card = hub.model_card({"task": "squad_v2", "base_model": "/tmp/local/llama", "full_export": True,
                           "repo_id": "me/qa", "metrics": {"before": {"exact": 0.0, "HasAns_total": 50},
                                                           "zero_shot": None, "after": {"exact": 51.2}}})
    assert "library_name: transformers" in card and "- question-answering" in card and "rajpurkar/squad_v2" in card
    assert "base_model:" not in card  # a local path is not a Hub id
    assert "zero-shot" not in card and "| before (untrained head) | 0.0000 | 50 |" in card
    assert 'AutoModelForQuestionAnswering.from_pretrained("me/qa")' in card
    assert "## Parameters" not in card and "## Command" not in card and "license" not in card
    assert hub.model_card({}).startswith("---\n")  # nothing known: still a card


def test_push_head_only(run_dir):
    api = StubApi()
    url = hub.push_folder(run_dir, "me/sst2-head", private=True, token="hf_x", card_info=INFO, api=api)
    assert url == "https://huggingface.co/me/sst2-head"
    assert api.calls["create_repo"] == dict(repo_id="me/sst2-head", private=True, exist_ok=True)
    assert api.calls["uploaded"] == ["README.md", "config.json", "head.safetensors", "log.jsonl", "metrics.json"]
    assert "sst2" in api.calls["message"]
    assert (run_dir / "README.md").read_text() == hub.model_card({**INFO, "full_export": False,
                                                                  "repo_id": "me/sst2-head"})
    assert json.loads((run_dir / "card.json").read_text())["task"] == "sst2"


def test_push_full_export(export_dir):
    api = StubApi()
    hub.push_folder(export_dir, "me/sst2-full", token="hf_x", card_info=INFO, api=api)
    assert api.calls["create_repo"]["private"] is False
    assert api.calls["uploaded"] == ["README.md", "config.json", "generation_config.json", "model.safetensors",
                                     "special_tokens_map.json", "tokenizer.json", "tokenizer_config.json"]
    assert "AutoModelForSequenceClassification" in (export_dir / "README.md").read_text()


def test_retry_reuses_card_json(run_dir):
    hub.push_folder(run_dir, "me/a", token="hf_x", card_info=INFO, api=StubApi())
    first = (run_dir / "README.md").read_text()
    hub.push_folder(run_dir, "me/a", token="hf_x", api=StubApi())  # no card_info: read back card.json
    assert (run_dir / "README.md").read_text() == first


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
    assert why in msg and "\n" not in msg
    assert msg.endswith(f"retry with: python -m hub push {run_dir} me/sst2-head --private")
    after = hashes(run_dir)
    assert {p: h for p, h in after.items() if p.name not in ("README.md", "card.json")} == before


def test_no_token(run_dir, monkeypatch):
    monkeypatch.setattr(hub, "get_token", lambda: None)
    with pytest.raises(hub.PushError, match="not logged in: run `hf auth login`.* or set HF_TOKEN"):
        hub.push_folder(run_dir, "me/x", api=StubApi())


def test_nothing_to_push(tmp_path):
    with pytest.raises(hub.PushError, match="nothing to push"):
        hub.push_folder(make(tmp_path, ["ckpt.pt"]), "me/x", token="hf_x", api=StubApi())


@pytest.mark.parametrize("token, why", [(None, "not logged in"), ("hf_fake", "Hub unreachable")])
def test_cli_offline(run_dir, tmp_path, token, why):
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update(HOME=str(tmp_path), HF_HUB_OFFLINE="1", **({"HF_TOKEN": token} if token else {}))
    before = hashes(run_dir)
    r = subprocess.run([sys.executable, "-m", "hub", "push", str(run_dir), "user/repo"], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2, r.stderr
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr and why in r.stderr
    assert f"python -m hub push {run_dir} user/repo" in r.stderr
    assert {p: h for p, h in hashes(run_dir).items() if p.name != "README.md"} == before


def test_bad_card_json_is_a_push_error(run_dir):
    (run_dir / "card.json").write_text("{not json")
    with pytest.raises(hub.PushError, match="JSONDecodeError.*retry with: python -m hub push"):
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
            "threshold": -0.5, "label_names": None if qa else ["negative", "positive"], "full_export": kind == "full",
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
