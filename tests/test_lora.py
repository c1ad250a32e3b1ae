"""lora.py and the backbone-training modes: parameter counts, the identity at init, what a step changes,
gradient accumulation, merged exports, resume, flags, and the real SmolLM2 in its compute dtype."""
import json
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

import hub
import lora
import loop
import model
import modes
import train_cls
import train_qa
from batching import pad_batch
from files import write_safetensors
from flags import mode as mode_of, train_args
from helpers import crash_in_epoch, data_dir_cut
from rundir import RunDir, RunError

ROOT = Path(__file__).resolve().parents[1]
LLAMA_1B = str(ROOT / "bench" / "llama-3.2-1b")
SAMPLES = ROOT / "data" / "samples"
SENTENCES = ["a gorgeous , witty , seductive movie .", "the plot is nothing but boilerplate", "dull",
             "it 's a charming and often affecting journey .", "an utterly incompetent conclusion", "fine"]
LABELS = torch.tensor([1, 0, 0, 1, 0, 1])
CPU = torch.device("cpu")


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny matmuls gain nothing from threads; on a busy machine OpenMP's waits cost them ~10x."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def setup(folder, *flags, dtype=torch.float32):
    """(args, lm, tokenizer, head) as train_cls builds them: seeded head, backbone prepared by the flags."""
    args = train_cls.parse_args(["--model", str(folder), *flags])
    lm, tok = model.load_backbone(str(folder), CPU, dtype)
    torch.manual_seed(0)
    head = model.cls_head(lm.config.hidden_size, 2)
    mode_of(args).prepare(lm.model)
    return args, lm, tok, head


def logits(lm, tok, head, texts=SENTENCES) -> torch.Tensor:
    seqs = train_cls.tokenize(tok, texts, 256)
    ids, mask = pad_batch(seqs, tok.pad_token_id, CPU)
    return head(model.pool(lm.model(input_ids=ids, attention_mask=mask).last_hidden_state, mask).float())


def train(args, lm, tok, head, batches: list[list[int]], run_dir: Path) -> None:
    """loop.fit for one epoch over these batches of SENTENCES, end to end through the backbone."""
    def loss(b):
        return F.cross_entropy(logits(lm, tok, head, [SENTENCES[i] for i in b]), LABELS[b])
    run_dir.mkdir(parents=True, exist_ok=True)
    loop.fit(head, lm.model, lambda epoch: batches, loss, lambda: {}, train_args(args, "accuracy"), RunDir(run_dir),
             CPU, amp=False)


def params(lm, head) -> dict[str, torch.Tensor]:
    """Every parameter, by the module path fit and adapters.safetensors use."""
    parts = torch.nn.ModuleDict({"backbone": lm.model, "head": head})
    return {n: p.detach().clone() for n, p in parts.named_parameters()}


# --- parameter counts --------------------------------------------------------------------------------------

def test_llama_3_2_1b_counts_per_mode_from_the_config(capsys):
    r, layers, hidden, kv = 8, 16, 2048, 512
    per_layer = r * ((hidden + hidden) + (hidden + kv) + (hidden + kv) + (hidden + hidden))  # q, k, v, o
    adapters = layers * per_layer
    assert adapters == 1_703_936
    assert train_cls.main(["--model", LLAMA_1B, "--count-params-only", "--lora-rank", "8"]) == 0
    assert json.loads(capsys.readouterr().out) == {"backbone": 1_235_814_400, "adapters": adapters, "head": 4_096,
                                                   "total": 1_235_814_400 + adapters + 4_096,
                                                   "trainable": adapters + 4_096}

    block = 2 * hidden * hidden + 2 * hidden * kv + 3 * hidden * 8192 + 2 * hidden  # attention, MLP, two norms
    assert train_qa.main(["--model", LLAMA_1B, "--count-params-only", "--unfreeze-last", "2"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report == {"backbone": 1_235_814_400, "head": 4_098, "total": 1_235_818_498,
                      "trainable": 2 * block + hidden + 4_098}  # + the final norm


def test_adapters_add_rank_times_in_plus_out_per_target(tiny_llama_folder):
    targets = "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj"
    _, lm, _, head = setup(tiny_llama_folder, "--lora-rank", "3", "--lora-targets", targets)
    shapes = {"q_proj": (32, 32), "k_proj": (32, 16), "v_proj": (32, 16), "o_proj": (32, 32),
              "gate_proj": (32, 64), "up_proj": (32, 64), "down_proj": (64, 32)}  # (in, out) of the tiny Llama
    want = 2 * sum(3 * (i + o) for i, o in shapes.values())
    report = model.param_report(lm.model, head)
    assert report["adapters"] == want and report["trainable"] == want + 64
    assert report["backbone"] == model.n_params(model.meta_backbone(str(tiny_llama_folder)))
    assert all(p.dtype == torch.float32 for n, p in lm.model.named_parameters() if lora.is_adapter(n))


# --- the identity at init, and what a step changes ---------------------------------------------------------

def test_adapted_model_starts_as_the_base(tiny_llama_folder):
    _, base, tok, head = setup(tiny_llama_folder)
    _, adapted, _, _ = setup(tiny_llama_folder, "--lora-rank", "4", "--lora-dropout", "0.1")
    adapted.eval()
    with torch.no_grad():
        assert torch.equal(logits(adapted, tok, head), logits(base, tok, head))


@pytest.mark.parametrize("flags, trains", [
    (["--lora-rank", "4"], lambda n: lora.is_adapter(n) or n.startswith("head.")),
    (["--unfreeze-last", "1"], lambda n: n.startswith(("backbone.layers.1.", "backbone.norm.", "head."))),
], ids=["lora", "unfreeze-last-1"])
def test_a_step_changes_only_what_trains(tmp_path, tiny_llama_folder, flags, trains):
    args, lm, tok, head = setup(tiny_llama_folder, *flags, "--epochs", "1", "--ema", "0")
    before = params(lm, head)
    train(args, lm, tok, head, [[0, 1, 2], [3, 4, 5], [0, 3]], tmp_path)  # 3 steps: A moves once B is non-zero
    changed = {n for n, p in params(lm, head).items() if not torch.equal(p, before[n])}
    assert changed == {n for n in before if trains(n)}


def test_grad_accum_gives_the_update_of_the_whole_batch(tmp_path, tiny_llama_folder):
    """Two optimizer steps over micro-batches of unequal size: their losses are weighted by size."""
    def run(batches, *flags):
        args, lm, tok, head = setup(tiny_llama_folder, "--lora-rank", "4", "--epochs", "1", *flags)
        train(args, lm, tok, head, batches, tmp_path / str(batches))
        return params(lm, head)

    whole = run([[0, 1, 2, 3, 4], [5, 1, 3]])
    accumulated = run([[0, 1, 2], [3, 4], [5], [1, 3]], "--grad-accum", "2")
    for n, p in whole.items():
        torch.testing.assert_close(accumulated[n], p, atol=1e-6, rtol=0, msg=n)
    other = run([[0, 1, 2], [3, 4, 5, 1, 3]])  # other steps: the check has teeth
    assert max((other[n] - p).abs().max() for n, p in whole.items()) > 1e-4


# --- end to end: artifacts, merged exports, resume ---------------------------------------------------------

@pytest.fixture
def sst2(tmp_path, monkeypatch):
    monkeypatch.setenv("LLAMA_HEADS_CACHE", str(tmp_path / "cache"))
    return data_dir_cut(tmp_path / "sst2", "sst2", 80, 40)


def merge_flag(flags: list[str]) -> list[str]:
    """What --export takes besides its folder: --merge for LoRA runs."""
    return ["--merge"] if "--lora-rank" in flags else []


def adapted(folder, run: Path, flags):
    """Our model rebuilt from a run folder: the base, prepared by the flags, with the run's trained weights."""
    args, lm, tok, head = setup(folder, *flags)
    modes.load_trained(lm.model, head, RunDir(run).load_trained("cls"), run)
    return args, lm.eval(), tok, head


@pytest.mark.parametrize("flags", [["--lora-rank", "4"], ["--unfreeze-last", "1", "--backbone-lr", "1e-3"]],
                         ids=["lora", "unfreeze-last-1"])
def test_cls_cli_adapters_and_merged_export(tmp_path, sst2, tiny_llama_folder, capsys, flags):
    from transformers import AutoModelForSequenceClassification
    run, export = tmp_path / "runs" / "run", tmp_path / "export"
    assert train_cls.main(["--model", str(tiny_llama_folder), "--data-dir", str(sst2), "--dtype", "fp32", "--epochs",
                           "1", "--runs-dir", str(tmp_path / "runs"), "--run-name", "run", *flags,
                           "--export", str(export), *merge_flag(flags)]) == 0
    out, features = capsys.readouterr().out, tmp_path / "cache" / "features"
    if flags[0] == "--lora-rank":  # adapters change every block: nothing to cache
        assert "feature cache off" in out and not features.exists()
    else:  # the frozen trunk below the trained block is cached: one file per split
        assert "cached on disk: the states below the top 1 blocks" in out and len(list(features.iterdir())) == 2
    trained = RunDir(run).load_trained("cls")
    lora_files = {"adapter_config.json", "adapter_model.safetensors"}
    # one copy of what trained: PEFT's files for LoRA, adapters.safetensors for top blocks; pushed with the head
    own = lora_files if flags[0] == "--lora-rank" else {"adapters.safetensors"}
    files = {p.name for p in run.iterdir()}
    assert own <= files and not ((lora_files | {"adapters.safetensors"}) - own) & files
    assert "head.weight" in trained and own <= set(hub.HEAD_FILES)
    if flags[0] == "--lora-rank":
        assert "backbone.layers.0.self_attn.q_proj.lora_a.weight" in trained
        assert any(t.abs().max() > 0 for n, t in trained.items() if ".lora_b." in n)  # trained: B moved off zero
    info = json.loads((run / "metrics.json").read_text())
    assert info["params"]["trainable"] == sum(t.numel() for t in trained.values())

    _, lm, tok, head = adapted(tiny_llama_folder, run, flags)
    merged = AutoModelForSequenceClassification.from_pretrained(export, dtype=torch.float32).eval()
    seqs = train_cls.tokenize(tok, SENTENCES, 256)
    ids, mask = pad_batch(seqs, tok.pad_token_id, CPU)
    with torch.no_grad():
        ours, theirs = logits(lm, tok, head), merged(input_ids=ids, attention_mask=mask).logits
        base = AutoModelForSequenceClassification.from_pretrained(tiny_llama_folder, dtype=torch.float32)
        base.score = merged.score
        unmerged = base.eval()(input_ids=ids, attention_mask=mask).logits
    torch.testing.assert_close(theirs, ours, atol=1e-5, rtol=0)
    assert (unmerged - ours).abs().max() > 1e-4  # the exported backbone is the trained one, not the base


def qa_cli(folder, tmp_path, *flags, name="qa"):
    return train_qa.main(["--model", str(folder), "--train-file", str(SAMPLES / "squad_train.json"),
                          "--eval-file", str(SAMPLES / "squad_test.json"), "--max-train-examples", "30",
                          "--max-eval-examples", "10", "--epochs", "1", "--dtype", "fp32", "--runs-dir",
                          str(tmp_path / "runs"), "--run-name", name, *flags])


@pytest.mark.parametrize("flags", [["--lora-rank", "4"], ["--unfreeze-last", "1", "--backbone-lr", "1e-3"]],
                         ids=["lora", "unfreeze-last-1"])
def test_qa_cli_export_of_a_bf16_checkpoint_gives_our_logits(tmp_path, monkeypatch, tiny_llama_bf16_folder, flags):
    """The run trains in fp32 on a bf16 checkpoint; the export keeps fp32, so the trained updates survive."""
    from transformers import AutoModelForQuestionAnswering
    monkeypatch.setenv("LLAMA_HEADS_CACHE", str(tmp_path / "cache"))
    run, export = tmp_path / "runs" / "qa", tmp_path / "export"
    assert qa_cli(tiny_llama_bf16_folder, tmp_path, *flags, "--export", str(export), *merge_flag(flags)) == 0
    lm, tok = model.load_backbone(str(tiny_llama_bf16_folder), CPU, torch.float32)
    head = model.qa_head(lm.config.hidden_size)
    mode_of(train_qa.parse_args(flags)).prepare(lm.model)
    modes.load_trained(lm.model, head, RunDir(run).load_trained("qa"), run)
    seqs = train_cls.tokenize(tok, SENTENCES, 256)
    ids, mask = pad_batch(seqs, tok.pad_token_id, CPU)
    merged = AutoModelForQuestionAnswering.from_pretrained(export, dtype="auto").eval()
    assert merged.dtype == model.EXPORT_DTYPE  # recorded in the export's config
    with torch.no_grad():
        ours = head(lm.model.eval()(input_ids=ids, attention_mask=mask).last_hidden_state)
        out = merged(input_ids=ids, attention_mask=mask)
    real = mask.bool()
    torch.testing.assert_close(out.start_logits[real], ours[..., 0][real], atol=1e-5, rtol=0)
    torch.testing.assert_close(out.end_logits[real], ours[..., 1][real], atol=1e-5, rtol=0)

    assert train_qa.main(["--eval-run", str(run)]) == 0  # re-scored with its adapters: the same test numbers
    rescored = json.loads((run / "eval" / "test_data" / "metrics.json").read_text())
    assert rescored == json.loads((run / "metrics.json").read_text())["scores"]["after"]


def test_evaluation_runs_without_lora_dropout(tmp_path, monkeypatch, tiny_llama_folder):
    """--lora-dropout 0.5: --eval-run (twice) and --resume of the finished run predict what the run did."""
    monkeypatch.setenv("LLAMA_HEADS_CACHE", str(tmp_path / "cache"))
    flags, run = ["--lora-rank", "4", "--lora-dropout", "0.5", "--backbone-lr", "1e-2"], tmp_path / "runs" / "qa"

    def outputs(folder):
        return [json.loads((folder / f).read_text()) for f in ("preds.json", "na_prob.json")]
    assert qa_cli(tiny_llama_folder, tmp_path, *flags) == 0
    own = outputs(run)
    trained = RunDir(run).load_trained("qa")
    assert max(t.abs().max() for n, t in trained.items() if ".lora_b." in n) > 1e-3  # dropout would matter
    for _ in range(2):
        assert train_qa.main(["--eval-run", str(run)]) == 0
        assert outputs(run / "eval" / "test_data") == own
    # a LoRA run from before 2026-11-30 kept its adapters in adapters.safetensors only: still read
    old = tmp_path / "runs" / "old"
    shutil.copytree(run, old)
    write_safetensors(old / "adapters.safetensors", trained)
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        (old / name).unlink()
    assert train_qa.main(["--eval-run", str(old)]) == 0 and outputs(old / "eval" / "test_data") == own
    assert qa_cli(tiny_llama_folder, tmp_path, *flags, "--resume") == 0
    assert outputs(run) == own


@pytest.mark.parametrize("flags", [[], ["--unfreeze-last", "1", "--backbone-lr", "1e-3"], ["--lora-rank", "4"]],
                         ids=["head", "unfreeze-last-1", "lora"])
def test_cls_export_of_a_bf16_checkpoint_gives_our_logits(tmp_path, sst2, tiny_llama_bf16_folder, flags):
    """Every training mode: the export (fp32, recorded) reproduces the run's logits on a bf16 base checkpoint."""
    from transformers import AutoModelForSequenceClassification
    run, export = tmp_path / "runs" / "run", tmp_path / "export"
    assert train_cls.main(["--model", str(tiny_llama_bf16_folder), "--data-dir", str(sst2), "--dtype", "fp32",
                           "--epochs", "1", "--runs-dir", str(tmp_path / "runs"), "--run-name", "run", *flags,
                           "--export", str(export), *merge_flag(flags)]) == 0
    if flags:
        _, lm, tok, head = adapted(tiny_llama_bf16_folder, run, flags)
    else:
        _, lm, tok, head = setup(tiny_llama_bf16_folder)
        head.load_state_dict(load_file(run / "head.safetensors"))
    exported = AutoModelForSequenceClassification.from_pretrained(export, dtype="auto").eval()
    assert exported.dtype == model.EXPORT_DTYPE
    seqs = train_cls.tokenize(tok, SENTENCES, 256)
    ids, mask = pad_batch(seqs, tok.pad_token_id, CPU)
    with torch.no_grad():
        torch.testing.assert_close(exported(input_ids=ids, attention_mask=mask).logits, logits(lm, tok, head),
                                   atol=1e-5, rtol=0)


def test_lora_crash_then_resume_matches_an_uninterrupted_run(tmp_path, sst2, tiny_llama_folder):
    def run(name, *flags):
        return train_cls.main(["--model", str(tiny_llama_folder), "--data-dir", str(sst2), "--dtype", "fp32",
                               "--epochs", "2", "--lora-rank", "4", "--runs-dir", str(tmp_path), "--run-name", name,
                               *flags])
    run("straight")
    with crash_in_epoch(2):
        run("crashed")
    assert run("crashed", "--resume") == 0
    straight, resumed = (RunDir(tmp_path / n).load_trained("cls") for n in ("straight", "crashed"))
    assert straight.keys() == resumed.keys() and all(torch.equal(resumed[k], v) for k, v in straight.items())
    with pytest.raises(RunError, match="--lora-rank was 4, now 2"):
        train_cls.main(["--model", str(tiny_llama_folder), "--data-dir", str(sst2), "--dtype", "fp32", "--epochs",
                        "3", "--lora-rank", "2", "--runs-dir", str(tmp_path), "--run-name", "crashed", "--resume"])


# --- flags -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("flags, words", [
    (["--lora-rank", "8", "--unfreeze-last", "2"], "not allowed with argument"),
    (["--grad-accum", "0"], "--grad-accum 0: must be at least 1"),
    (["--pooling", "mean", "--export", "out"], "--pooling mean cannot be exported"),
], ids=["lora-and-unfreeze", "grad-accum-0", "export-mean-pooling"])  # --merge/--peft: tests/test_flags.py
def test_contradicting_flags_are_refused(capsys, flags, words):
    with pytest.raises(SystemExit) as e:
        train_cls.parse_args(flags)
    assert e.value.code == 2 and words in capsys.readouterr().err


def test_defaults_depend_on_the_mode():
    lora_args, unfrozen = train_qa.parse_args(["--lora-rank", "8"]), train_qa.parse_args(["--unfreeze-last", "2"])
    assert (lora_args.lora_alpha, lora_args.backbone_lr, unfrozen.backbone_lr) == (16.0, 1e-3, 1e-5)


@pytest.mark.parametrize("flags, words", [(["--lora-rank", "2", "--lora-targets", "q_proj,qkv"], "named qkv"),
                                          (["--unfreeze-last", "3"], "2 decoder blocks")])
def test_flags_that_do_not_fit_the_model(tiny_llama_folder, flags, words):
    with pytest.raises(modes.TuningError, match=words):
        setup(tiny_llama_folder, *flags)


# --- the real model, in its compute dtype ------------------------------------------------------------------

@pytest.mark.parametrize("flags", [["--lora-rank", "8", "--grad-checkpoint"], ["--unfreeze-last", "1"]],
                         ids=["lora-checkpointed", "unfreeze-last-1"])
def test_smollm2_trains_in_its_compute_dtype(tmp_path, flags):
    """bf16 where the CPU runs it (fp32 elsewhere): frozen weights in the compute dtype, trained ones in fp32."""
    dtype = model.pick_dtype(CPU)
    args, lm, tok, head = setup("smollm2-135m", *flags, "--epochs", "1", dtype=dtype)
    with torch.no_grad():
        start = logits(lm.eval(), tok, head)
    trained = {n: p for n, p in lm.model.named_parameters() if p.requires_grad}
    assert trained and all(p.dtype == torch.float32 for p in trained.values())
    assert lm.model.embed_tokens.weight.dtype == dtype
    before = {n: p.detach().clone() for n, p in trained.items()}
    train(args, lm, tok, head, [[0, 1, 2], [3, 4, 5]], tmp_path)
    assert all(not torch.equal(p, before[n]) for n, p in trained.items() if ".lora_a." not in n)
    with torch.no_grad():
        after = logits(lm.eval(), tok, head)
    assert torch.isfinite(after).all() and not torch.equal(after, start)


def test_unfrozen_top_on_cached_trunk_trains_like_full_passes(tmp_path, monkeypatch, tiny_llama_folder):
    """--unfreeze-last K caches the states below the top K blocks and runs only the top each step; the run must
    equal one that runs the whole backbone every step (--cache-features never), and --eval-run must agree."""
    monkeypatch.setenv("LLAMA_HEADS_CACHE", str(tmp_path / "cache"))
    result = {}
    for cache in ("auto", "never"):
        assert train_qa.main(["--model", str(tiny_llama_folder), "--train-file", str(SAMPLES / "squad_train.json"),
                              "--eval-file", str(SAMPLES / "squad_test.json"), "--max-train-examples", "30",
                              "--max-eval-examples", "12", "--epochs", "2", "--dtype", "fp32", "--unfreeze-last", "1",
                              "--backbone-lr", "1e-3", "--cache-features", cache, "--runs-dir", str(tmp_path / "runs"),
                              "--run-name", cache]) == 0
        result[cache] = json.loads((tmp_path / "runs" / cache / "metrics.json").read_text())
    assert len(list((tmp_path / "cache" / "features").iterdir())) == 3  # trunk states of train, validation, test
    for a, b in zip(result["auto"]["epochs"], result["never"]["epochs"]):
        assert a["train_loss"] == pytest.approx(b["train_loss"], abs=1e-5)
        assert a["val_loss"] == pytest.approx(b["val_loss"], abs=1e-5)
    for stage in ("before", "after"):
        assert result["auto"]["metrics"][stage]["f1"] == pytest.approx(result["never"]["metrics"][stage]["f1"])
    assert train_qa.main(["--eval-run", str(tmp_path / "runs" / "auto")]) == 0
    rescored = json.loads((tmp_path / "runs" / "auto" / "eval" / "test_data" / "metrics.json").read_text())
    assert rescored == result["auto"]["scores"]["after"]


@pytest.mark.parametrize("k", [1, 2])
def test_trunk_then_top_is_the_whole_backbone(tiny_llama_folder, k):
    lm, tok = model.load_backbone(str(tiny_llama_folder), CPU, torch.float32)
    seqs = train_cls.tokenize(tok, SENTENCES, 256)
    ids, _ = pad_batch(seqs, tok.pad_token_id, CPU)
    with torch.no_grad():
        whole = lm.model(input_ids=ids).last_hidden_state
        split = model.top(lm.model, model.Trunk(lm.model, k)(ids).last_hidden_state, k)
    torch.testing.assert_close(split, whole, atol=1e-6, rtol=0)
