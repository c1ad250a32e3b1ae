"""Markdown report, with PNG figures, from training run folders: a table comparing the runs with a baseline per
test set, then each run's details.

    python report.py runs/demo-sst2 runs/demo-qnli runs/demo-squad -o REPORT.md
    python report.py -o REPORT.md        # the latest run of each task under runs/

The runs' scores are read from metrics.json, never recomputed; what the report derives (baselines, per-class
scores, the most confident errors) comes from the counts in metrics.json and the per-example predictions the run
stored (test_preds.jsonl; QA: preds.json, na_prob.json, test_data.json), the loss curve from log.jsonl. What an
older run did not record is said so. Figures need matplotlib (requirements-report.txt).
"""
import argparse
import io
import json
import sys
from dataclasses import dataclass
from pathlib import Path

from data.squad_json import SquadFormatError, read_questions
from files import write_atomic
from metrics.classification import per_label
from tables import fmt, markdown

STAGES = {"before": "before (untrained head)", "zero_shot": "zero-shot", "after": "after"}
# SQuAD v2 scores are percentages (0-100); everything else that is not a count is a fraction or a loss.
SQUAD_PERCENT = {"exact", "f1", "HasAns_exact", "HasAns_f1", "NoAns_exact", "NoAns_f1", "best_exact", "best_f1"}
QA_ROWS = [("EM", "squad_v2", "exact"), ("F1", "squad_v2", "f1")] + [
    (k, "squad_v2", k) for k in ("HasAns_exact", "HasAns_f1", "HasAns_total", "NoAns_exact", "NoAns_f1",
                                 "NoAns_total", "best_exact", "best_exact_thresh", "best_f1", "best_f1_thresh")] + [
    ("BLEU", "bleu", "bleu"), ("ROUGE-1", "rouge", "rouge1"), ("ROUGE-2", "rouge", "rouge2"),
    ("ROUGE-L", "rouge", "rougeL"), ("ROUGE-Lsum", "rouge", "rougeLsum"), ("METEOR", "meteor", "meteor"),
    ("answerable scored (BLEU/ROUGE/METEOR)", "", "n_answerable_scored")]  # "": a top-level key of the result
NO_FIGURES = "_Figures need `pip install -r requirements-report.txt` (matplotlib); this report has tables only._"
NOT_RECORDED = "not recorded"
ERRORS_SHOWN = 10
TEXT_CHARS = 160  # of a text in the errors table
COMPARISON = ["run", "task", "test set", "model", "mode", "trained params", "metric", "before", "zero-shot", "after",
              "wall time (features + training)"]
ENVIRONMENT = ("python", "torch", "transformers", "device")


class ReportError(Exception):
    pass


def is_qa(run: dict) -> bool:
    return run["task"] == "squad_v2"


def load_run(run_dir: Path) -> dict:
    path = run_dir / "metrics.json"
    if not path.is_file():
        raise ReportError(f"{path}: not found (is {run_dir} a run folder?)")
    try:
        run = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ReportError(f"{path}: invalid JSON ({e})") from None
    if not isinstance(run, dict) or not {"task", "metrics", "epochs", "params", "split", "timing"} <= run.keys():
        raise ReportError(f"{path}: not a run's metrics (needs task, metrics, epochs, params, split, timing)")
    run["dir"] = run_dir
    return run


def latest_runs(runs_dir: Path) -> list[dict]:
    """The newest run of each task, by mtime of metrics.json: classification tasks by name, then QA."""
    paths = sorted(runs_dir.glob("*/metrics.json"), key=lambda p: p.stat().st_mtime)
    latest = {run["task"]: run for run in map(load_run, (p.parent for p in paths))}  # later ones overwrite
    if not latest:
        raise ReportError(f"no runs found under {runs_dir}/ - run `make demo` first")
    return [latest[task] for task in sorted(latest, key=lambda t: (t == "squad_v2", t))]


def read_jsonl(path: Path) -> list[dict] | None:
    """The rows of a JSON-lines file the run wrote; None if it has none (an older run)."""
    if not path.is_file():
        return None
    try:
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ReportError(f"{path}: invalid JSON lines ({e}); the run folder is damaged") from None
    if not all(isinstance(r, dict) for r in rows):
        raise ReportError(f"{path}: a row is not a JSON object; the run folder is damaged")
    return rows


def step_rows(run: dict) -> list[dict]:
    """log.jsonl's per-step rows (those with a "step"), in step order; [] for runs that logged epochs only."""
    return sorted((r for r in read_jsonl(run["dir"] / "log.jsonl") or [] if "step" in r), key=lambda r: r["step"])


def epoch_rows(run: dict) -> list[dict]:
    return [r for r in run["epochs"] if "step" not in r]


@dataclass
class Example:
    """One test example as the error table shows it: its text, true and predicted answer, and the probability
    the run gave its prediction."""
    index: str
    text: str
    true: str
    predicted: str
    confidence: float
    correct: bool


def cls_examples(run: dict) -> list[Example] | None:
    path = run["dir"] / "test_preds.jsonl"
    if (rows := read_jsonl(path)) is None:
        return None
    try:
        return [Example(str(r["index"]), r["text"] if isinstance(r["text"], str) else " ‖ ".join(r["text"]),
                        r["label"], r["predicted"], float(r["probability"]), r["label"] == r["predicted"])
                for r in rows]
    except (KeyError, TypeError, ValueError) as e:
        raise ReportError(f"{path}: a row without its index, text, label, predicted or probability "
                          f"({type(e).__name__}: {e}); the run folder is damaged") from None


def qa_examples(run: dict) -> list[Example] | None:
    """Each test question with the run's answer ("" = no answer) and the probability of that decision: the no-answer
    probability where it abstained, one minus it where it answered. Right: an exact match with a gold answer, read as
    the official script reads them (blank answers dropped; "" the only right one where none is left)."""
    from metrics.squad import exact_match, normalize_answer  # here: it loads nltk, which only QA runs need
    folder = run["dir"]
    if not all((folder / name).is_file() for name in ("test_data.json", "preds.json", "na_prob.json")):
        return None
    try:
        questions = read_questions(folder / "test_data.json", warn=False)[0]
        preds, na_prob = (json.loads((folder / name).read_text()) for name in ("preds.json", "na_prob.json"))
        return [Example(q.id, q.question, " / ".join(dict.fromkeys(q.texts)), preds[q.id],
                        na_prob[q.id] if preds[q.id] == "" else 1 - na_prob[q.id],
                        any(exact_match(preds[q.id], gold)
                            for gold in [t for t in q.texts if normalize_answer(t)] or [""])) for q in questions]
    except (SquadFormatError, json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as e:
        raise ReportError(f"{folder}: test_data.json, preds.json and na_prob.json do not read together "
                          f"({type(e).__name__}: {e}); the run folder is damaged") from None


def test_examples(run: dict) -> list[Example] | None:
    return qa_examples(run) if is_qa(run) else cls_examples(run)


def stage_table(run: dict, metrics: dict) -> list[str]:
    """One test set's metrics (`metrics`: stage -> scores) by stage."""
    stages = [s for s in STAGES if s in metrics]
    header = ["metric"] + [STAGES[s] for s in stages]
    if is_qa(run) and "scores" in run:  # the full metrics.squad result, not just the flat summary
        return markdown(header, [[label] + [fmt(run["scores"][s].get(group, run["scores"][s]).get(key),
                                             key in SQUAD_PERCENT) for s in stages] for label, group, key in QA_ROWS])
    return markdown(header, [[k] + [fmt(metrics[s].get(k), is_qa(run) and k in SQUAD_PERCENT) for s in stages]
                          for k in metrics["after"]])


def test_sets(run: dict) -> dict[str, dict]:
    """Each test set's scores by stage: "test" (metrics.json's "metrics"), and any other (MNLI's mismatched)."""
    return {"test": run["metrics"], **run.get("more_tests", {})}


def headline(run: dict) -> list[str]:
    """The metrics the comparison shows: EM and F1 for QA; accuracy, F1 and the task's GLUE metrics (CoLA: mcc)."""
    return ["exact", "f1"] if is_qa(run) else list(dict.fromkeys(["accuracy", "f1", *run.get("task_metrics", [])]))


@dataclass
class Baseline:
    name: str  # what it predicts, and from what
    scores: dict[str, float]  # under the run's metric names


def baseline(run: dict, test: str) -> Baseline | None:
    """What a predictor that never reads the text scores on the test set: always no answer (QA), or always the
    training set's majority label, scored as the run scores its predictions. None where the run did not record the
    counts this needs."""
    if is_qa(run):
        s = run.get("scores", {}).get("after", {}).get("squad_v2", {})
        if test != "test" or not s.get("total"):
            return None
        share = 100 * s.get("NoAns_total", 0) / s["total"]  # "" is right exactly on the unanswerable questions
        return Baseline("always no answer", {"exact": share, "f1": share})
    counts = run.get("label_counts", {})
    # runs from before label counts were recorded: the test set's, from the confusion matrix's rows
    test_counts = counts.get(test) or ([sum(row) for row in run["confusion"]] if test == "test" else None)
    if not test_counts:
        return None
    import torch  # here, as train_cls: what the scores need, not the checks above
    from train_cls import scores
    train = counts.get("train")
    majority = max(range(len(test_counts)), key=(train or test_counts).__getitem__)  # the first of a tie
    y = torch.tensor([label for label, n in enumerate(test_counts) for _ in range(n)])
    constant = torch.nn.functional.one_hot(torch.full_like(y, majority), len(test_counts)).float()
    result = scores(constant, y, tuple(run.get("task_metrics", ())))
    del result["loss"]  # of one-hot logits: no property of the baseline
    source = "the training labels' majority" if train else \
        "the test labels' majority: the run recorded no training label counts"
    return Baseline(f"always `{label_names(run)[majority]}` ({source})", result)


def warnings(run: dict, test: str, stages: dict, base: Baseline | None) -> list[str]:
    """A visible line where "after" does not beat the baseline, or the untrained head, on a headline metric."""
    after, percent = stages.get("after", {}), is_qa(run)
    lines = []
    for what, other in ((f"the baseline, {base.name}" if base else "", base.scores if base else {}),
                        ("before (the untrained head)", stages.get("before", {}))):
        worse = [f"{k} {fmt(after[k], percent)} ≤ {fmt(other[k], percent)}" for k in headline(run)
                 if after.get(k) is not None and other.get(k) is not None and after[k] <= other[k]]
        if worse:
            lines.append(f"> **⚠ Warning:** `{run['dir'].name}`, {test}: after does not beat {what}: "
                         f"{', '.join(worse)}.")
    return lines


def paragraphs(lines: list[str]) -> list[str]:
    """Each line its own Markdown paragraph, after a blank line (adjacent quoted lines would run together)."""
    return [part for line in lines for part in ("", line)]


def wall_time(run: dict) -> str:
    t = run["timing"]
    return f"{t['features_s'] + t['train_s']:,.1f} s"


def comparison_rows(run: dict) -> tuple[list[list[str]], list[str]]:
    """The run's rows of the comparison table (per test set and headline metric: before / zero-shot / after, then
    the baseline's score in the after column), and its warnings."""
    rows, notes, percent = [], [], is_qa(run)
    for test, stages in test_sets(run).items():
        base = baseline(run, test)
        for k in headline(run):
            rows.append([f"`{run['dir'].name}`", run["task"], test, f"`{run['base_model']}`",
                         run.get("mode", NOT_RECORDED), f"{run['params']['trainable']:,}", k,
                         *[fmt(stages.get(s, {}).get(k), percent) for s in STAGES], wall_time(run)])
        for k in headline(run):
            rows.append([f"↳ baseline: {base.name if base else NOT_RECORDED}", run["task"], test, "–", "–", "0", k,
                         "–", "–", fmt(base.scores.get(k) if base else None, percent), "–"])
        notes += warnings(run, test, stages, base)
    return rows, notes


def comparison_lines(rows: list[list[str]], notes: list[str]) -> list[str]:
    """The comparison table, what its columns mean, and the warnings, each its own paragraph."""
    return markdown(COMPARISON, rows) + [
        "", "QA scores are percentages, the others fractions. A baseline never reads the text: its score is in the "
        "after column. Wall time: the backbone features plus training and evaluation (not model loading)."] + \
        paragraphs(notes)


def environment_lines(runs: list[dict]) -> list[str]:
    """Library versions and the device each run used, as the run recorded them."""
    rows = [[f"`{run['dir'].name}`", *[str(run.get("environment", {}).get(k, NOT_RECORDED)) for k in ENVIRONMENT]]
            for run in runs]
    return markdown(["run", *ENVIRONMENT], rows)


def per_class_lines(labels: list[str], counts: list[list[int]], note: str) -> list[str]:
    """Precision, recall, F1 and support of each class from a confusion matrix (rows: true, columns: predicted),
    and their unweighted (macro) mean."""
    y_true = [t for t, row in enumerate(counts) for p, n in enumerate(row) for _ in range(n)]
    y_pred = [p for row in counts for p, n in enumerate(row) for _ in range(n)]
    found = per_label(y_true, y_pred)
    empty = {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    scores = [found.get(i, empty) for i in range(len(labels))]
    rows = [[name] + [fmt(s[k]) for k in ("precision", "recall", "f1", "support")] for name, s in zip(labels, scores)]
    macro = [fmt(sum(s[k] for s in scores) / len(scores)) for k in ("precision", "recall", "f1")]
    return markdown(["class", "precision", "recall", "F1", "support"],
                    rows + [["macro average", *macro, fmt(len(y_true))]]) + ["", note]


def qa_decisions(examples: list[Example]) -> list[list[int]]:
    """The no-answer decision as a 2x2 confusion matrix: rows true (has answer, no answer), columns predicted."""
    counts = [[0, 0], [0, 0]]
    for ex in examples:
        counts[ex.true == ""][ex.predicted == ""] += 1
    return counts


QA_CLASSES = ["has answer", "no answer"]


def cell(text: str) -> str:
    """Text fit for a Markdown table cell: one line, no column breaks, at most TEXT_CHARS characters."""
    text = " ".join(text.split()).replace("|", "\\|")
    return text if len(text) <= TEXT_CHARS else text[:TEXT_CHARS - 1] + "…"


def errors_lines(run: dict, examples: list[Example] | None) -> list[str]:
    if examples is None:
        stored = "preds.json, na_prob.json and test_data.json" if is_qa(run) else "test_preds.jsonl"
        return [f"_{NOT_RECORDED}: the run folder has no per-example predictions ({stored}); runs made since they "
                "were stored have them._"]
    wrong = sorted((ex for ex in examples if not ex.correct), key=lambda ex: -ex.confidence)[:ERRORS_SHOWN]
    if not wrong:
        return ["_No errors on the test set._"]
    shown = (lambda a: a or "(no answer)") if is_qa(run) else (lambda a: a)
    rows = [[cell(ex.index), cell(ex.text), cell(shown(ex.true)), cell(shown(ex.predicted)), f"{ex.confidence:.4f}"]
            for ex in wrong]
    what = ("the probability of its decision (answer or no answer); wrong: no exact match with a gold answer"
            if is_qa(run) else "the probability of the predicted label")
    return [f"{len(wrong)} of {sum(not ex.correct for ex in examples):,} errors (of {len(examples):,} examples), the "
            f"most confident first; confidence: {what}.", ""] + markdown(
        ["id" if is_qa(run) else "row", "question" if is_qa(run) else "text", "true", "predicted", "confidence"], rows)


def steps_summary(steps: list[dict]) -> list[str]:
    if not steps:
        return [f"Per-step loss: {NOT_RECORDED} (this run logged epochs only); the loss curve shows the epochs."]
    losses = [r["loss"] for r in steps if r.get("loss") is not None]
    speeds = sorted(r["examples_per_s"] for r in steps if r.get("examples_per_s") is not None)
    return [f"log.jsonl: {len(steps):,} step rows (steps {steps[0]['step']:,}–{steps[-1]['step']:,}); training loss "
            f"first {fmt(losses[0] if losses else None)}, lowest {fmt(min(losses, default=None))}, last "
            f"{fmt(losses[-1] if losses else None)}"
            + (f"; median {speeds[len(speeds) // 2]:,.1f} examples/s." if speeds else ".")]


def selection_lines(run: dict) -> list[str]:
    sel, grid = run.get("selection"), run.get("lr_grid")
    lines = ["- selection: " + (", ".join(f"{k} {fmt(v)}" for k, v in sel.items()) if sel else
                                f"{NOT_RECORDED} (after = the last epoch)")]
    if not grid:
        return lines + [f"- learning-rate grid: {NOT_RECORDED}"]
    # a run from before the heads were ranked by loss kept the best score, and recorded no loss (dashes)
    rule = "the lowest validation loss is kept" if any("val_loss" in g for g in grid) else "the best score was kept"
    return lines + [f"- learning-rate grid (each head at its kept epoch; {rule}):", ""] + \
        markdown(["lr", "validation loss", "validation score"],
                 [[f"{g['lr']:g}", fmt(g.get("val_loss")), fmt(g["score"], is_qa(run))] for g in grid])


def param_lines(run: dict) -> list[str]:
    p = run["params"]
    lines = markdown(["part", "parameters"], [[k, f"{p[k]:,}"] for k in ("backbone", "head", "total", "trainable")])
    if is_qa(run):  # start and end logit per token, each with a bias
        hidden = (p["head"] - 2) // 2
        why = (f"QA head = hidden × 2 + 2 bias = {hidden:,} × 2 + 2 = {p['head']:,}, the same shape as "
               "`LlamaForQuestionAnswering.qa_outputs` (a start and an end logit per token).")
    else:  # one logit per label from the pooled hidden state, no bias
        n = len(run["labels"])
        hidden = p["head"] // n
        why = (f"Classification head = hidden × num_labels, no bias = {hidden:,} × {n} = {p['head']:,}, the same "
               "shape as `LlamaForSequenceClassification.score`.")
    share = 100 * p["trainable"] / p["total"]
    return lines + ["", f"{why} Hidden size {hidden:,} is derived from the head count. Trainable: "
                        f"{p['trainable']:,} of {p['total']:,} parameters ({share:.4f}%); "
                        + ("the backbone is frozen." if p["trainable"] == p["head"] else "the rest is frozen.")]


def timing_lines(run: dict) -> list[str]:
    t = run["timing"]
    if t["features_s"] > 0.5:
        features = (f"backbone features: {t['features_s']:.2f} s for {t['tokens']:,} tokens "
                    f"({t['tokens'] / t['features_s']:,.0f} tokens/s)")
    else:  # a cache hit takes milliseconds; tokens/s would be meaningless
        features = f"backbone features: from the cache ({t['features_s']:.2f} s; {t['tokens']:,} tokens)"
    return [f"- {features}", f"- head training: {t['train_s']:.2f} s"]


def pyplot():
    try:
        import matplotlib
        matplotlib.use("Agg")  # files only, no display
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def bars(ax, groups: list[str], series: dict[str, list[float]], percent: bool) -> None:
    """Grouped bars: one group per x label, one bar per series, values written on the bars."""
    width = 0.8 / len(series)
    for i, (name, values) in enumerate(series.items()):
        drawn = ax.bar([g + (i - (len(series) - 1) / 2) * width for g in range(len(groups))], values, width, label=name)
        ax.bar_label(drawn, fmt="%.2f" if percent else "%.4f", fontsize=7, rotation=90, padding=2)
    top = 100 if percent else 1
    ax.set(xticks=range(len(groups)), xticklabels=groups, ylim=(0, 1.2 * top), yticks=[top * i / 5 for i in range(6)],
           ylabel="percent" if percent else "fraction")  # headroom above the top tick for the value labels


def epochs_plot(plt, run: dict, steps: list[dict]):
    """The loss curve (per step where log.jsonl has step rows, with each epoch's training and validation loss) and
    the validation scores per epoch."""
    qa, rows = is_qa(run), epoch_rows(run)
    epochs = [r["epoch"] for r in rows]
    fig, (loss_ax, score_ax) = plt.subplots(1, 2, figsize=(11, 4.2), layout="constrained")
    if steps:  # x: the step's position in epochs, so the epoch rows' points sit at the ends of their epochs
        logged = [r for r in steps if r.get("loss") is not None]  # a diverged step's loss is null
        x, loss = [r["epoch"] for r in logged], [r["loss"] for r in logged]
        loss_ax.plot(x, loss, "-", color="0.7", linewidth=0.8, label=f"training loss per step ({len(steps):,} logged)")
        if (window := len(loss) // 25) > 1:  # a noisy curve of thousands of steps needs its trend drawn
            mean = [sum(loss[i:i + window]) / window for i in range(len(loss) - window + 1)]
            loss_ax.plot(x[window - 1:], mean, "-", color="black", linewidth=1.2, label=f"mean of {window} steps")
    # the second line is dashed with a smaller marker so that it stays visible when both lines coincide
    for ax, keys, prefix in ((loss_ax, ("train_loss", "val_loss"), "epoch "),
                             (score_ax, ("exact", "f1") if qa else ("accuracy", "f1"), "validation ")):
        for key, style in zip(keys, ("-o", "--s")):
            ax.plot(epochs, [r.get(key) for r in rows], style, markersize=8 if style == "-o" else 5,
                    label=prefix + key.replace("_", " "))
    if isinstance(kept := run.get("selection", {}).get("epoch"), int):  # what "after" scores (--select best)
        score_ax.axvline(kept, linestyle=":", color="0.4", label=f"kept: epoch {kept}")
    for ax, ylabel in ((loss_ax, "loss"), (score_ax, "percent" if qa else "fraction")):
        ax.set(xlabel="epoch", ylabel=ylabel, xticks=([0] if steps and ax is loss_ax else []) + epochs)
        ax.legend(fontsize=8)
    loss_ax.set_title("training loss per step" if steps else "loss per epoch (per-step loss not recorded)")
    score_ax.set_title(("EM and F1" if qa else "accuracy and F1") + " per epoch (validation)")
    return fig


def steps_plot(plt, steps: list[dict]):
    """The learning rate and the gradient norm (before clipping) at each logged step."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6), layout="constrained")
    for ax, key, title in zip(axes, ("lr", "grad_norm"), ("learning rate", "gradient norm")):
        ax.plot([r["step"] for r in steps], [r.get(key) for r in steps], "-", linewidth=1.2)
        ax.set(xlabel="optimizer step", ylabel=title, title=f"{title} per step")
        ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 4))
    return fig


def stages_plot(plt, run: dict):
    stages = [s for s in STAGES if s in run["metrics"]]
    keys = [k for k in run["metrics"]["after"] if k != "loss"]  # loss has its own scale
    if is_qa(run):  # SQuAD percentages and BLEU/ROUGE/METEOR fractions need separate axes
        groups = [(True, [k for k in keys if k in SQUAD_PERCENT]), (False, [k for k in keys if k not in SQUAD_PERCENT])]
    else:
        groups = [(False, keys)]
    fig, axes = plt.subplots(1, len(groups), figsize=(1 + 5 * len(groups), 4.5), squeeze=False, layout="constrained")
    for ax, (percent, group) in zip(axes[0], groups):
        bars(ax, group, {STAGES[s]: [run["metrics"][s][k] for k in group] for s in stages}, percent)
    fig.suptitle("test set: " + " / ".join(STAGES[s] for s in stages))
    fig.legend(*axes[0][0].get_legend_handles_labels(), loc="outside lower center", ncols=len(stages), fontsize=8)
    return fig


def answerable_plot(plt, run: dict):
    """A head that always abstains scores NoAns 100 and HasAns 0: the overall F1 alone hides that."""
    stages = [s for s in STAGES if s in run["metrics"]]
    totals = run.get("scores", {}).get("after", {}).get("squad_v2", {})
    series = {f"{kind} F1 (n={totals.get(kind + '_total', '?')})": [run["metrics"][s][f"{kind}_f1"] for s in stages]
              for kind in ("HasAns", "NoAns")}
    fig, ax = plt.subplots(figsize=(6.5, 4.5), layout="constrained")
    bars(ax, [STAGES[s] for s in stages], series, percent=True)
    ax.set_title("SQuAD v2 F1: answerable (HasAns) vs unanswerable (NoAns)", fontsize=10)
    fig.legend(loc="outside lower center", ncols=2, fontsize=8)
    return fig


def label_names(run: dict) -> list[str]:
    """The labels as users read them: the names the run recorded, or the known names of its label values (SST-2's
    0/1 are negative/positive) for runs from before names were recorded."""
    from train_cls import display_names
    return run.get("label_names") or display_names(run["labels"])


def confusion_plot(plt, counts: list[list[int]], labels: list[str], title: str, predicted: list[str] | None = None):
    """Counts (rows: true, columns: predicted), each cell shaded by its share of the row (the class's recall on the
    diagonal), so a small class reads as well as a large one."""
    shares = [[c / max(1, sum(row)) for c in row] for row in counts]
    side = max(4.0, 1.2 + 0.9 * len(labels))
    fig, ax = plt.subplots(figsize=(side + 1.4, side), layout="constrained")
    image = ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, shrink=0.8, label="share of the true class")
    for i, row in enumerate(counts):
        for j, count in enumerate(row):  # white on the dark cells
            ax.text(j, i, f"{count:,}\n{shares[i][j]:.0%}", ha="center", va="center",
                    color="white" if shares[i][j] > 0.5 else "black")
    ax.set(xticks=range(len(labels)), yticks=range(len(labels)), xticklabels=predicted or labels,
           yticklabels=labels, xlabel="predicted", ylabel="true", title=title)
    ax.tick_params(axis="x", labelrotation=30 if max(map(len, predicted or labels)) > 10 else 0)
    return fig


def figure_lines(plt, run: dict, folder: Path, steps: list[dict], examples: list[Example] | None) -> list[str]:
    """Draws the run's figures into folder and returns their Markdown links, relative to the report."""
    plots = [("loss curve and validation scores", "epochs", lambda: epochs_plot(plt, run, steps))]
    if steps:
        plots.append(("learning rate and gradient norm per step", "steps", lambda: steps_plot(plt, steps)))
    plots.append(("test metrics before / after training", "stages", lambda: stages_plot(plt, run)))
    if is_qa(run):
        plots.append(("F1 on answerable vs unanswerable questions", "hasans-noans", lambda: answerable_plot(plt, run)))
        if examples is not None:
            plots.append(("no-answer decisions", "decisions", lambda: confusion_plot(
                plt, qa_decisions(examples), QA_CLASSES, "no-answer decision (test set, after)",
                ["answered", "no answer"])))
    else:
        plots.append(("confusion matrix", "confusion", lambda: confusion_plot(
            plt, run["confusion"], label_names(run), f"{run['task']} confusion matrix (test set, after)")))
    lines = []
    for caption, suffix, plot in plots:
        name = f"{run['dir'].name}-{suffix}.png"
        fig, png = plot(), io.BytesIO()
        fig.savefig(png, format="png", dpi=110)
        plt.close(fig)
        write_atomic(folder / name, png.getvalue())
        lines += [f"![{caption}]({folder.name}/{name})", ""]
    return lines


def run_section(run: dict, plt, fig_dir: Path) -> list[str]:
    s = run["split"]
    model = f"`{run['base_model']}`" + (f" (resolved: `{run['resolved_model']}`)" if run.get("resolved_model") else "")
    lines = [f"## {run['dir'].name} ({run['task']})", "",
             f"- run folder: `{run['dir']}`", f"- model: {model}",
             *([f"- task: {run['task']}, texts from column(s) {', '.join(run['text_columns'])}, GLUE metric(s): "
                f"{', '.join(run['task_metrics'])}"] if "task_metrics" in run else []),
             f"- data: train {s['train']:,}, validation {s['validation']:,}, test {s['test']:,} "
             f"(seed {s['seed']}, stratified by {s['stratify_by']})",
             f"- command: `{run['command']}`", ""]
    rows, steps, examples = epoch_rows(run), step_rows(run), test_examples(run)
    keys = list(dict.fromkeys(k for r in rows for k in r))
    lines += ["### Per-epoch (validation)", ""] + markdown(
        keys, [[fmt(r.get(k), is_qa(run) and k in SQUAD_PERCENT) for k in keys] for r in rows])
    lines += ["", "### Training curve and model selection", "", *steps_summary(steps), "",
              *selection_lines(run)]
    lines += ["", "### Test set: before / zero-shot / after", "",
              "_before_: the untrained (randomly initialised) head; _zero-shot_: the language model alone, without "
              "a head; _after_: the trained head. " +
              ("EM, F1 and the SQuAD v2 scores are percentages (the _thresh rows: no-answer probabilities); "
               "BLEU, ROUGE and METEOR are fractions." if is_qa(run)
               else "All scores are fractions."), ""]
    for name, metrics in test_sets(run).items():  # MNLI's mismatched dev set after the test set
        if name != "test":
            lines += ["", f"### Test set {name}: before / zero-shot / after", ""]
        lines += stage_table(run, metrics) + paragraphs(warnings(run, name, metrics, baseline(run, name))) + [""]
    if is_qa(run):
        lines += [f"No-answer threshold (chosen on validation): {fmt(run.get('threshold'))}", "",
                  "### No-answer decision (test set, after; rows = true, columns = predicted)", ""]
        if examples is None:
            lines += [f"_{NOT_RECORDED}: the run folder has no preds.json / test_data.json._"]
        else:
            decisions = qa_decisions(examples)
            lines += markdown(["true \\ predicted", "answered", "no answer"],
                              [[label] + [f"{c:,}" for c in row] for label, row in zip(QA_CLASSES, decisions)])
            lines += ["", "### Per-class scores (test set, after: answering or not)", ""] + per_class_lines(
                QA_CLASSES, decisions, "_has answer_: precision is the share of answered questions that have an "
                "answer, recall the share of answerable questions answered (right or wrong); _no answer_ likewise "
                "for abstaining. Its recall is the NoAns EM above, as a fraction.")
    else:
        lines += ["### Confusion matrix (test set, after; rows = true, columns = predicted)", ""]
        names = label_names(run)
        lines += markdown(["true \\ predicted"] + names,
                          [[label] + [f"{c:,}" for c in row] for label, row in zip(names, run["confusion"])])
        lines += ["", "### Per-class scores (test set, after)", ""] + per_class_lines(
            names, run["confusion"], f"The run's precision, recall and F1 are those of `{names[1]}`, the positive "
            "class." if len(names) == 2 else "The run's precision, recall and F1 are the macro averages.")
    lines += ["", "### Most confident errors (test set, after)", ""] + errors_lines(run, examples)
    lines += ["", "### Parameters", ""] + param_lines(run)
    lines += ["", "### Time", ""] + timing_lines(run) + ["", "### Figures", ""]
    return lines + (figure_lines(plt, run, fig_dir, steps, examples) if plt else [NO_FIGURES, ""])


def checked(run: dict, build, *args):
    """build(*args) for one run; a metrics.json of another shape is a ReportError naming it."""
    try:
        return build(*args)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as e:
        raise ReportError(f"{run['dir']}/metrics.json: missing or malformed entry ({type(e).__name__}: {e}); pass "
                          "run folders written by train_cls.py / train_qa.py") from None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("runs", nargs="*", type=Path, help="run folders (default: the latest run of each task in "
                   "--runs-dir)")
    p.add_argument("-o", "--output", type=Path, default=Path("REPORT.md"))
    p.add_argument("--runs-dir", type=Path, default=Path("runs"))
    args = p.parse_args(argv)
    plt = pyplot()
    fig_dir = args.output.parent / f"{args.output.stem}_files"
    try:
        runs = [load_run(d) for d in args.runs] if args.runs else latest_runs(args.runs_dir)
        rows, notes, sections = [], [], []
        for run in runs:
            run_rows, run_notes = checked(run, comparison_rows, run)
            rows, notes = rows + run_rows, notes + run_notes
            sections += checked(run, run_section, run, plt, fig_dir)
    except ReportError as e:
        print(f"report.py: error: {e}", file=sys.stderr)
        return 2
    lines = ["# Training report", "", "Runs: " + ", ".join(f"`{r['dir']}`" for r in runs), "",
             "## Comparison", "", *comparison_lines(rows, notes), "", "## Environment", "", *environment_lines(runs),
             "", *sections]
    write_atomic(args.output, "\n".join(lines))
    print(f"wrote {args.output}" + (f" and figures in {fig_dir}/" if plt else " (no figures: matplotlib missing)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
