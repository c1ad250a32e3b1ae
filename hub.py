"""Model card + push of a run folder (head only) or an --export folder (full model) to the Hugging Face Hub.

Retry a failed push with:  python hub.py push FOLDER REPO_ID [--private]   (from the repo folder: python -m hub ...)
"""
import argparse
import json
import os
import re
import shlex
import sys
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path

from huggingface_hub import CommitOperationAdd, HfApi, get_token
from huggingface_hub.errors import HfHubHTTPError, HFValidationError, HTTPError, LocalTokenNotFoundError
from huggingface_hub.utils import validate_repo_id

from data import glue
from data.fetch import write_atomic
from rundir import strict_json
from tables import fmt, markdown

CARD_INFO = "card.json"  # the card's source, in the run (and export) folder, so a retry makes the same card
HEAD_FILES = ["config.json", "head.safetensors", "adapters.safetensors", "metrics.json", "log.jsonl",
              "adapter_config.json", "adapter_model.safetensors"]  # the last two: a LoRA run's, in PEFT's format
FULL_FILES = ["*.json", "*.safetensors", "*.txt", "*.model", "*.jinja"]  # weights (merged or PEFT) + tokenizer
# what push_folder uploads from each kind of folder (folder_kind), besides the README.md it makes
KINDS = {"full": ("full model", FULL_FILES), "head": ("head", HEAD_FILES), "peft": ("adapters", FULL_FILES)}
CLASSIFY = dict(tag="text-classification", auto="AutoModelForSequenceClassification", script="train_cls.py")
TASKS = {
    "sst2": dict(name="SST-2 sentiment classification", dataset="nyu-mll/glue", **CLASSIFY),
    **{name: dict(name=f"GLUE {name.upper()} classification", dataset="nyu-mll/glue", **CLASSIFY)
       for name in glue.TASKS if name != "sst2"},
    glue.CUSTOM: dict(name="Text classification", dataset=None, **CLASSIFY),
    "squad_v2": dict(name="SQuAD v2 extractive question answering", tag="question-answering",
                     dataset="rajpurkar/squad_v2", auto="AutoModelForQuestionAnswering", script="train_qa.py"),
}
ROWS = {"before": "before (untrained head)", "zero_shot": "zero-shot", "after": "after (trained head)"}
HUB_ID = re.compile(r"[\w.-]+(/[\w.-]+)?")  # a local path is no valid `base_model` for the Hub


class PushError(RuntimeError):
    pass


def model_card(info: dict) -> str:
    """README.md for the Hub. Every key is optional:
    task: "sst2" | "squad_v2"          base_model: hub id (or local path)     command: the exact command line
    split: {train, validation, test, seed, stratify_by}                      license: str
    metrics: {"before": {name: value}, "zero_shot": {...} | None, "after": {...}}
    params: {backbone, head, total, trainable}
    kind: what the repo holds, folder_kind's word ("head" when absent); repo_id: both filled in by push_folder
    """
    task = TASKS.get(info.get("task"), dict(name=info.get("task") or "Task", tag=None, dataset=None,
                                            auto="AutoModel", script="the training script"))
    base, kind, repo = info.get("base_model"), info.get("kind", "head"), info.get("repo_id") or "user/repo"
    full, mode = kind == "full", "lora" if kind == "peft" else run_mode(info)
    lora_run = kind == "head" and mode == "lora"  # a LoRA run's folder holds its adapters in PEFT's format...
    loads_as = "peft" if lora_run else kind  # ...so it loads as a --peft export does: PeftModel on the base model
    yaml = ["---"] + ([f"base_model: {base}"] if base and HUB_ID.fullmatch(base) else [])
    yaml += ["library_name: transformers"] if full else []
    yaml += [f"license: {info['license']}"] if info.get("license") else []
    yaml += ["tags:", "- llama-heads"] + ([f"- {task['tag']}"] if task["tag"] else [])
    yaml += ["datasets:", f"- {task['dataset']}"] if task["dataset"] else []
    yaml += [f"pipeline_tag: {task['tag']}"] if full and task["tag"] else []
    out = yaml + ["---", "", f"# {task['name']} head on {base or 'a frozen Llama'}", "",
                  (f"A head for {task['name']}, trained on top of a frozen `{base or 'Llama'}`: only the head was "
                   "trained, the backbone weights are the base model's, unchanged. "
                   if mode == "head" else
                   f"A model for {task['name']} fine-tuned from `{base or 'Llama'}`: trained were "
                   f"{info.get('trained', 'LoRA adapters' if mode == 'lora' else 'backbone weights')}; every other "
                   "weight is the base model's. ")
                  + ("This repo holds the full transformers checkpoint (backbone + head)." if full else
                     "This repo holds the LoRA adapters and the head in PEFT's format (`adapter_config.json`, "
                     "`adapter_model.safetensors`, the head in `modules_to_save`), with "
                     + ("the run's config, metrics and log" if lora_run else "the tokenizer and `llama_heads.json`")
                     + "; the backbone comes from the base model." if loads_as == "peft" else
                     "This repo holds only the head (`head.safetensors`, a few KB) and the run's config, "
                     "metrics and log; the backbone comes from the base model.")]
    if split := info.get("split"):
        out += ["", "## Data", ""] + [f"- {k}: {fmt(v)}" for k, v in split.items() if v is not None]
    if info.get("command"):
        out += ["", "## Command", "", "```bash", info["command"], "```"]
    rows = {k: (info.get("metrics") or {}).get(k) for k in ROWS}
    rows = {k: {m: v for m, v in r.items() if isinstance(v, (int, float))} for k, r in rows.items() if r}
    if names := list(dict.fromkeys(m for r in rows.values() for m in r)):  # union, in order of appearance
        out += ["", "## Metrics", ""] + markdown([""] + names, [[ROWS[k]] + [fmt(r.get(m)) for m in names]
                                                                for k, r in rows.items()])
    if params := info.get("params"):
        out += ["", "## Parameters", ""] + markdown(["", "count"], [[k, fmt(v)] for k, v in params.items()])
    if names := info.get("label_names"):
        out += ["", "## Labels", ""] + [f"- {i}: {n}" for i, n in enumerate(names)]
    out += ["", "## How to load", ""]
    if loads_as != "head" or mode == "head":
        out += ["```python"] + load_snippet(info.get("task"), repo, base or "BASE_MODEL", loads_as,
                                            info.get("label_names"), info.get("threshold", 0.0),
                                            len(info.get("text_columns") or [None]) == 2) + ["```", ""]
    else:
        out += [f"This run also trained {info.get('trained', 'backbone weights')} (in `adapters.safetensors`, keyed "
                "by module path): load it with this project's `predict.py` (below), or push the `--export` "
                "checkpoint (`--push-full`) for plain transformers.", ""]
    sample = "--question \"...\" --context \"...\"" if info.get("task") == "squad_v2" else "--text \"...\""
    out += ["Or with this project's `predict.py` (one JSON line per input):", "", "```bash",
            f"python predict.py {repo} {sample}", "```"]
    return "\n".join(out + [""])


SAMPLE_TEXT = "a gripping, funny film"
SAMPLE_QA = ("Where was the film shot?", "The film was shot in Paris in 1998 by a small crew.")
SAMPLE_PAIR = SAMPLE_QA  # a question and the sentence that answers it, as in QNLI
# snippet lines: token ids without specials, and the BOS the tokenizer puts first (Llama 3) or not (SmolLM2)
ENCODE_WITH_BOS = ["def encode(text):", '    return tokenizer(text, add_special_tokens=False)["input_ids"]',
                   "bos = [tokenizer.bos_token_id] if tokenizer(\"a\")[\"input_ids\"][0] == tokenizer.bos_token_id "
                   "else []"]


def load_snippet(task: str | None, repo: str, base: str, kind: str, names: list[str] | None,
                 threshold: float | None = 0.0, pairs: bool = False) -> list[str]:
    """Python that loads the result and runs it once, as the project does, with transformers + safetensors +
    huggingface_hub alone (kind "head": head.safetensors on the base model; "full": the export), or with peft
    ("peft": the adapters and head on the base model). The classification head pools the last token
    (LlamaForSequenceClassification does too); the QA head reads its no-answer score at the window's trailing token,
    which has seen question and context (position 0, where transformers reads it, has seen nothing in a causal
    model), and the span is the project's n-best search. A pair of texts is encoded as the project does:
    [BOS] first "\\n" second. tests/test_hub.py runs every snippet."""
    qa = task == "squad_v2"
    auto = TASKS["squad_v2" if qa else "sst2"]["auto"]
    lines = ["import torch"]
    lines += {"head": ["from huggingface_hub import hf_hub_download", "from safetensors.torch import load_file"],
              "peft": ["from peft import PeftModel  # pip install peft"], "full": []}[kind]
    lines += [f"from transformers import {'AutoConfig, AutoModel, ' if qa and kind != 'full' else ''}AutoTokenizer, "
              f"{auto}", ""]
    lines += [f'tokenizer = AutoTokenizer.from_pretrained("{repo if kind == "full" else base}")',
              "if tokenizer.pad_token is None:  # Llama 3 has none; the project pads with this reserved token",
              '    pad = "<|finetune_right_pad_id|>"',
              "    tokenizer.pad_token = pad if pad in tokenizer.get_vocab() else tokenizer.eos_token"]
    head = "qa_outputs" if qa else "score"
    if kind == "full":
        lines += [f'model = {auto}.from_pretrained("{repo}")']
    elif qa:  # LlamaForQuestionAnswering.from_pretrained on a plain Llama checkpoint would leave its backbone random
        lines += [f'model = {auto}.from_config(AutoConfig.from_pretrained("{base}"))',
                  f'model.base_model.load_state_dict(AutoModel.from_pretrained("{base}").state_dict())']
    else:
        labels = names or ["0", "1"]
        lines += [f'model = {auto}.from_pretrained("{base}", num_labels={len(labels)}, '
                  f'id2label={dict(enumerate(labels))!r})']
    if kind == "head":
        lines += [f'model.{head}.load_state_dict(load_file(hf_hub_download("{repo}", "head.safetensors")))']
    if kind == "peft":
        lines += [f'model = PeftModel.from_pretrained(model, "{repo}")  # the adapters, and the head ({head})']
    lines += ["model.eval()"]
    if not qa:
        if not pairs:
            encode = [f'inputs = tokenizer(["{SAMPLE_TEXT}"], return_tensors="pt", padding=True)']
        elif kind == "full":  # the export's tokenizer encodes pairs as the run did (pipeline's text_pair works too)
            encode = [f"text, text_pair = {SAMPLE_PAIR!r}",
                      'inputs = tokenizer([text], [text_pair], return_tensors="pt")']
        else:
            encode = [f"text, text_pair = {SAMPLE_PAIR!r}", "# the project's pair: [BOS] text \\n text_pair",
                      *ENCODE_WITH_BOS,
                      'inputs = {"input_ids": torch.tensor([bos + encode(text) + encode("\\n") + encode(text_pair)])}']
        return lines + ["model.config.pad_token_id = tokenizer.pad_token_id  # pooling: the last non-pad token",
                        ""] + encode + [
                        "with torch.no_grad():", "    logits = model(**inputs).logits",
                        "print({model.config.id2label[i]: round(p, 3) for i, p in enumerate(logits.softmax(-1)[0]"
                        ".tolist())})"]
    return lines + [
        "", f'question, context = {SAMPLE_QA[0]!r}, {SAMPLE_QA[1]!r}',
        "# the project's window: [BOS] Question: {question}\\nContext:\\n {context} [EOS, the null token]",
        *ENCODE_WITH_BOS,
        'prefix = bos + encode("Question:") + encode(" " + question.strip()) + encode("\\nContext:\\n")',
        "ctx = tokenizer(context, add_special_tokens=False, return_offsets_mapping=True)",
        'ids = prefix + ctx["input_ids"] + [tokenizer.eos_token_id]  # one window: contexts up to ~300 tokens',
        "with torch.no_grad():", "    out = model(input_ids=torch.tensor([ids]))",
        "start, end = out.start_logits[0, len(prefix):-1], out.end_logits[0, len(prefix):-1]  # context tokens",
        "null = (out.start_logits[0, -1] + out.end_logits[0, -1]).item()  # no-answer score: the trailing token",
        "# the best span among the 20 top start and end tokens: start <= end, at most 30 tokens",
        'best, span = -float("inf"), None',
        "for s in start.topk(min(20, len(start))).indices.tolist():",
        "    for e in end.topk(min(20, len(end))).indices.tolist():",
        "        if s <= e < s + 30 and (start[s] + end[e]).item() > best:",
        "            best, span = (start[s] + end[e]).item(), (s, e)",
        "# answer unless the null score beats the span's by more than the run's threshold (chosen on validation)",
        "a, b = (ctx[\"offset_mapping\"][span[0]][0], ctx[\"offset_mapping\"][span[1]][1]) if span else (0, 0)",
        f'answer = context[a:b].strip() if span'  # a threshold of None: SQuAD v1, every question answered
        f'{"" if threshold is None else f" and null - best <= {threshold!r}"} else ""',
        "print(repr(answer))"]


def run_mode(info: dict) -> str:
    """The training mode a run recorded ("head", "top", "lora"); runs from before it was recorded said it in words."""
    return info.get("mode") or ("head" if info.get("trained", "the head") == "the head" else "trained")


@dataclass
class Push:
    repo_id: str
    private: bool = False
    full: bool = False  # the --export folder instead of the run folder


def publish(run, info: dict, push: Push | None, export: Path | None) -> int:
    """The run's metrics and card source, then the push if asked: the head (run folder) or the full export."""
    run.write_metrics(info)
    for folder in [run.path] + ([export] if export else []):  # both can be pushed later, each with this card
        save_card_info(folder, info)
    print(f"artifacts in {run.path}/" + (f"; full checkpoint in {export}/" if export else ""))
    if push is None:
        return 0
    try:
        print(f"pushed to {push_folder(export if push.full else run.path, push.repo_id, push.private, card_info=info)}")
    except PushError as e:
        print(f"error: {e}")
        return 1
    return 0


def save_card_info(folder: Path, info: dict) -> None:
    """A run that does not push can call this, so a later `python -m hub push` writes the same card."""
    write_atomic(folder / CARD_INFO, strict_json(info))


def retry_command(folder: Path, repo_id: str, private: bool = False) -> str:
    """Works from any directory, unlike `python -m hub`: this interpreter (its packages), hub.py and the folder by
    absolute path."""
    return shlex.join([sys.executable, os.path.abspath(__file__), "push", os.path.abspath(folder), repo_id]
                      + (["--private"] if private else []))


def check_repo_id(repo_id: str) -> None:
    """The Hub's own rule, checked before any work: PushError in one line."""
    try:
        validate_repo_id(repo_id)
    except HFValidationError as e:
        rule = str(e).partition(f": '{repo_id}'")[0]  # the rule, without its echo of the id and its API hints
        raise PushError(f"bad REPO_ID {repo_id!r}: {rule}; give it as user/repo") from None


def folder_kind(folder: Path) -> str | None:
    """What `folder` holds: "full" (a merged --export), "head" (a run folder; a LoRA run's adapters go with it),
    "peft" (a --peft export: adapters and head in PEFT's format), or None (nothing a repo could load)."""
    if any(folder.glob("model*.safetensors")):
        return "full"
    if (folder / "head.safetensors").exists():
        return "head"
    return "peft" if (folder / "adapter_model.safetensors").exists() else None


def why(e: Exception) -> str:
    status = getattr(getattr(e, "response", None), "status_code", None)
    if isinstance(e, LocalTokenNotFoundError):
        return "not logged in: run `hf auth login` (or `huggingface-cli login`) or set HF_TOKEN"
    if status in (401, 403):
        return f"unauthorised (HTTP {status}): the token is invalid or cannot write to this repo"
    # httpx's request errors (connect, timeout) carry no response; offline mode raises ConnectionError
    no_response = isinstance(e, HTTPError) and not isinstance(e, HfHubHTTPError)
    if no_response or isinstance(e, (ConnectionError, TimeoutError)):
        return "Hub unreachable (no network, or HF_HUB_OFFLINE=1)"
    return f"{type(e).__name__}: " + (str(e).strip().splitlines() or [""])[0]


def push_folder(folder: Path, repo_id: str, private: bool = False, token: str | None = None,
                card_info: dict | None = None, api=None) -> str:
    """Upload a run folder's small files (the head, a LoRA run's adapters) or an export folder (merged or PEFT) with
    its model card, in one commit. Writes nothing locally: the card goes up from memory, so the folder, a README.md
    of the user's own included, stays as it is. Bad input and any Hub failure: PushError, one line."""
    folder = Path(folder)
    if not folder.is_dir():
        raise PushError(f"FOLDER {folder}: no such folder; give a run folder (runs/NAME) or an --export folder")
    check_repo_id(repo_id)
    if (kind := folder_kind(folder)) is None:
        raise PushError(f"FOLDER {folder} holds no head.safetensors, model*.safetensors or adapter_model.safetensors:"
                        " nothing to push; give a run folder (runs/NAME) or an --export folder")
    what, patterns = KINDS[kind]
    try:  # local errors too (unreadable card.json or file) end as one-line PushErrors
        if card_info is None and (folder / CARD_INFO).exists():
            card_info = json.loads((folder / CARD_INFO).read_text())
        own = folder / "README.md"
        if card_info is None and own.is_file():  # no source to rebuild a card from: theirs is the card
            card = own.read_bytes()
        else:
            if own.exists():
                print(f"note: the repo gets the generated model card as README.md; {own} stays as it is, "
                      f"unpushed (to push it instead, remove {folder / CARD_INFO})")
            card = model_card({**(card_info or {}), "kind": kind, "repo_id": repo_id}).encode()
        names = sorted(p.name for p in folder.iterdir() if p.name not in (CARD_INFO, "README.md") and p.is_file()
                       and any(fnmatch(p.name, pattern) for pattern in patterns))
        operations = [CommitOperationAdd(name, str(folder / name)) for name in names]
        operations.append(CommitOperationAdd("README.md", card))
        if token is None and get_token() is None:  # fail fast: the Hub would answer a vague 401
            raise LocalTokenNotFoundError("no token")
        api = api or HfApi()
        url = api.create_repo(repo_id, token=token, private=private, exist_ok=True)
        api.create_commit(repo_id, operations, token=token,
                          commit_message=f"Upload {(card_info or {}).get('task', 'llama-heads')} {what}")
    except Exception as e:
        raise PushError(f"push to {repo_id} failed: {why(e)}; local files kept, retry with: "
                        f"{retry_command(folder, repo_id, private)}") from e
    return str(url)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="(re)push a run folder or an --export folder (merged or --peft)")
    sub = parser.add_subparsers(dest="cmd", required=True)
    push = sub.add_parser("push", help="upload FOLDER to REPO_ID (token: HF_TOKEN or `hf auth login`)")
    push.add_argument("folder", type=Path)
    push.add_argument("repo_id")
    push.add_argument("--private", action="store_true")
    args = parser.parse_args(argv)
    try:
        print(push_folder(args.folder, args.repo_id, private=args.private))
    except PushError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
