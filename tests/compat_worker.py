"""One side of tests/test_compat.py, run by an interpreter of one transformers version (argv: export|load OUT [BASE]).

export: the exports a run makes (cls single and pairs, merged LoRA, QA) of a tiny random Llama 3-style BASE, and
        what `predict.py --dtype fp32` says of each (the run's numbers), into OUT.
load:   each export in OUT read by plain transformers as a user would (pipeline with truncation=True for
        classification; AutoModelForQuestionAnswering on the project's window for QA), into OUT/loaded.json.
"""
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SINGLE = ["a gripping, funny film", "dull",
          "a gripping, funny film whose cast never lets the long second act drag, and a score that lifts it"]
PAIRS = [("Where was the film shot?", "The film was shot in Paris in 1998 by a small crew."),
         ("Who wrote it?", "Nobody remembers the weather that day."),
         ("Where was the film shot, and when, and by whom, and for how much money, and why there of all places?",
          "In Paris.")]
QUESTIONS = [("Where was the film shot?", "The film was shot in Paris in 1998 by a small crew."),
             ("Who directed it?", "It was directed by Ada Lovelace, who also wrote the score.")]
MAX_LENGTH = {"cls": 8, "pairs": 16, "lora": 8}  # shorter than the long sentence and pairs: the cut matters
NAMES = ["negative", "positive"]


def qa_examples():
    from data.squad_json import Example
    return [Example(str(i), "", q, c, [], []) for i, (q, c) in enumerate(QUESTIONS)]


def export(out: Path, base: str) -> None:
    import transformers

    import model
    import predict
    import train_cls
    from modes import LoRA
    from data.squad import make_windows
    from train_qa import WINDOW_FLAGS, parse_args as qa_args
    for name in ("cls", "pairs", "lora", "qa"):
        torch.manual_seed(1)
        lm, tok = model.load_backbone(base, torch.device("cpu"), torch.float32)
        if name == "lora":  # adapters that change the logits: B is random, not zero
            LoRA(2, 4.0, 0.0, ["q_proj", "v_proj"]).prepare(lm.model)
            for p in lm.model.parameters():
                if p.requires_grad:
                    torch.nn.init.normal_(p, std=0.5)
        if name == "qa":
            head = model.qa_head(lm.config.hidden_size, init_std=1.0)
            windows = vars(qa_args([]))
            settings = {"task": "squad_v2", "model": base, "dtype": "fp32", "threshold": 0.25,
                        **{k: windows[k] for k in WINDOW_FLAGS}}
            model.export(out / name, base, "qa", head, tok, settings, backbone=lm.model)
            with torch.no_grad():  # the run's logits on the project's windows: what the loader must reproduce
                qa_logits = [head(lm.model(input_ids=torch.tensor([w.input_ids])).last_hidden_state)[0].T.tolist()
                             for w in make_windows(qa_examples(), tok)]
            argv = [a for q, c in QUESTIONS for a in ("--question", q, "--context", c)]
        else:
            head = model.cls_head(lm.config.hidden_size, 2, init_std=1.0)
            column = "question,sentence" if name == "pairs" else "sentence"
            if name == "pairs":
                train_cls.pair_template(tok)  # as training's tokenize leaves the tokenizer it exports
            settings = {"task": "sst2", "model": base, "dtype": "fp32", "max_length": MAX_LENGTH[name],
                        "pooling": "last", "text_column": column, "label_names": NAMES}
            model.export(out / name, base, "cls", head, tok, settings, NAMES, lm.model)
            argv = [a for q, s in PAIRS for a in ("--text", q, "--text-pair", s)] if name == "pairs" else \
                [a for t in SINGLE for a in ("--text", t)]
        assert predict.main([str(out / name), *argv, "--dtype", "fp32", "--device", "cpu",
                             "--out", str(out / f"{name}.predict.jsonl")]) == 0
    (out / "exported.json").write_text(json.dumps({"transformers": transformers.__version__, "qa_logits": qa_logits,
                                                   "inv_freq": lm.model.rotary_emb.inv_freq.tolist()}))


def load(out: Path) -> None:
    import transformers
    from transformers import AutoModelForQuestionAnswering, AutoTokenizer, pipeline

    from data.squad import make_windows, postprocess, predictions
    result = {"transformers": transformers.__version__}
    for name in ("cls", "pairs", "lora"):
        classify = pipeline("text-classification", model=str(out / name), dtype=torch.float32, device="cpu")
        inputs = [{"text": q, "text_pair": s} for q, s in PAIRS] if name == "pairs" else SINGLE
        scores = [classify(x, truncation=True, top_k=None) for x in inputs]
        result[name] = {"model_max_length": classify.tokenizer.model_max_length,  # and the rope as this version reads it:
                        "inv_freq": classify.model.base_model.rotary_emb.inv_freq.tolist(),
                        "probabilities": [{s["label"]: s["score"] for s in row} for row in scores]}
    tok = AutoTokenizer.from_pretrained(out / "qa")
    qa = AutoModelForQuestionAnswering.from_pretrained(out / "qa", dtype=torch.float32).eval()
    settings = json.loads((out / "qa" / "llama_heads.json").read_text())
    examples = qa_examples()
    windows = make_windows(examples, tok)  # the project's default window, as train_qa writes it
    with torch.no_grad():
        outs = [qa(input_ids=torch.tensor([w.input_ids])) for w in windows]
    starts, ends = [o.start_logits[0].numpy() for o in outs], [o.end_logits[0].numpy() for o in outs]
    span, diff, _ = postprocess(examples, windows, starts, ends)
    answers, na_prob = predictions(span, diff, settings["threshold"])
    result["qa"] = {"start_logits": [s.tolist() for s in starts], "end_logits": [e.tolist() for e in ends],
                    "answers": [answers[ex.id] for ex in examples],
                    "no_answer_probability": [na_prob[ex.id] for ex in examples]}
    (out / "loaded.json").write_text(json.dumps(result))


if __name__ == "__main__":
    what, folder = sys.argv[1], Path(sys.argv[2])
    export(folder, sys.argv[3]) if what == "export" else load(folder)
