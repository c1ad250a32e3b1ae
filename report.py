"""Markdown report, with PNG figures, from training run folders.

    python report.py runs/demo-sst2 runs/demo-squad -o REPORT.md
    python report.py -o REPORT.md        # the latest classification run and the latest QA run under runs/

Every number is read from metrics.json, never recomputed. Figures need matplotlib (requirements-report.txt).
"""
import argparse
import io
import json
import sys
from pathlib import Path

from data.fetch import write_atomic
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
    """The newest classification run and the newest QA run, by mtime of metrics.json."""
    paths = sorted(runs_dir.glob("*/metrics.json"), key=lambda p: p.stat().st_mtime)
    latest = {is_qa(run): run for run in map(load_run, (p.parent for p in paths))}  # later ones overwrite
    if not latest:
        raise ReportError(f"no runs found under {runs_dir}/ - run `make demo` first")
    return [latest[qa] for qa in (False, True) if qa in latest]


def stage_table(run: dict, metrics: dict) -> list[str]:
    """One test set's metrics (`metrics`: stage -> scores) by stage."""
    stages = [s for s in STAGES if s in metrics]
    header = ["metric"] + [STAGES[s] for s in stages]
    if is_qa(run) and "scores" in run:  # the full metrics.squad result, not just the flat summary
        return markdown(header, [[label] + [fmt(run["scores"][s].get(group, run["scores"][s]).get(key),
                                             key in SQUAD_PERCENT) for s in stages] for label, group, key in QA_ROWS])
    return markdown(header, [[k] + [fmt(metrics[s].get(k), is_qa(run) and k in SQUAD_PERCENT) for s in stages]
                          for k in metrics["after"]])


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


def epochs_plot(plt, run: dict):
    qa, epochs = is_qa(run), [r["epoch"] for r in run["epochs"]]
    fig, (loss_ax, score_ax) = plt.subplots(1, 2, figsize=(10, 4), layout="constrained")
    # the second line is dashed with a smaller marker so that it stays visible when both lines coincide
    for ax, keys, prefix in ((loss_ax, ("train_loss", "val_loss"), ""),
                             (score_ax, ("exact", "f1") if qa else ("accuracy", "f1"), "validation ")):
        for key, style in zip(keys, ("-o", "--s")):
            ax.plot(epochs, [r[key] for r in run["epochs"]], style, markersize=8 if style == "-o" else 5,
                    label=prefix + key.replace("_", " "))
    for ax, ylabel in ((loss_ax, "loss"), (score_ax, "percent" if qa else "fraction")):
        ax.set(xlabel="epoch", ylabel=ylabel, xticks=epochs)
        ax.legend()
    loss_ax.set_title("loss per epoch")
    score_ax.set_title(("EM and F1" if qa else "accuracy and F1") + " per epoch (validation)")
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


def confusion_plot(plt, run: dict):
    counts, labels = run["confusion"], label_names(run)
    fig, ax = plt.subplots(figsize=(6, 4), layout="constrained")
    ax.imshow(counts, cmap="Blues")
    for i, row in enumerate(counts):
        for j, count in enumerate(row):  # white on the dark cells
            ax.text(j, i, f"{count:,}", ha="center", va="center",
                    color="white" if count > max(map(max, counts)) / 2 else "black")
    ax.set(xticks=range(len(labels)), yticks=range(len(labels)), xticklabels=labels, yticklabels=labels,
           xlabel="predicted label", ylabel="true label", title=f"{run['task']} confusion matrix (test set, after)")
    return fig


def figure_lines(plt, run: dict, folder: Path) -> list[str]:
    """Draws the run's figures into folder and returns their Markdown links, relative to the report."""
    plots = [("loss and score per epoch", "epochs", epochs_plot),
             ("test metrics before / after training", "stages", stages_plot),
             ("F1 on answerable vs unanswerable questions", "hasans-noans", answerable_plot) if is_qa(run) else
             ("confusion matrix", "confusion", confusion_plot)]
    lines = []
    for caption, suffix, plot in plots:
        name = f"{run['dir'].name}-{suffix}.png"
        fig, png = plot(plt, run), io.BytesIO()
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
    keys = list(run["epochs"][0]) if run["epochs"] else []
    lines += ["### Per-epoch (validation)", ""] + markdown(
        keys, [[fmt(r[k], is_qa(run) and k in SQUAD_PERCENT) for k in keys] for r in run["epochs"]])
    lines += ["", "### Test set: before / zero-shot / after", "",
              "_before_: the untrained (randomly initialised) head; _zero-shot_: the language model alone, without "
              "a head; _after_: the trained head. " +
              ("EM, F1 and the SQuAD v2 scores are percentages (the _thresh rows: no-answer probabilities); "
               "BLEU, ROUGE and METEOR are fractions." if is_qa(run)
               else "All scores are fractions."), ""]
    lines += stage_table(run, run["metrics"])
    for name, metrics in run.get("more_tests", {}).items():  # MNLI's mismatched dev set
        lines += ["", f"### Test set {name}: before / zero-shot / after", ""] + stage_table(run, metrics)
    if is_qa(run):
        lines += ["", f"No-answer threshold (chosen on validation): {fmt(run.get('threshold'))}"]
    else:
        lines += ["", "### Confusion matrix (test set, after; rows = true, columns = predicted)", ""]
        names = label_names(run)
        lines += markdown(["true \\ predicted"] + names,
                          [[label] + [f"{c:,}" for c in row] for label, row in zip(names, run["confusion"])])
    lines += ["", "### Parameters", ""] + param_lines(run)
    lines += ["", "### Time", ""] + timing_lines(run) + ["", "### Figures", ""]
    return lines + (figure_lines(plt, run, fig_dir) if plt else [NO_FIGURES, ""])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("runs", nargs="*", type=Path, help="run folders (default: latest cls and QA run in --runs-dir)")
    p.add_argument("-o", "--output", type=Path, default=Path("REPORT.md"))
    p.add_argument("--runs-dir", type=Path, default=Path("runs"))
    args = p.parse_args(argv)
    try:
        runs = [load_run(d) for d in args.runs] if args.runs else latest_runs(args.runs_dir)
    except ReportError as e:
        print(f"report.py: error: {e}", file=sys.stderr)
        return 2
    plt = pyplot()
    fig_dir = args.output.parent / f"{args.output.stem}_files"
    lines = ["# Training report", "", "Runs: " + ", ".join(f"`{r['dir']}`" for r in runs), ""]
    for run in runs:
        try:
            lines += run_section(run, plt, fig_dir)
        except (KeyError, TypeError, ValueError, AttributeError, IndexError) as e:  # a metrics.json of another shape
            print(f"report.py: error: {run['dir']}/metrics.json: missing or malformed entry ({type(e).__name__}: "
                  f"{e}); pass run folders written by train_cls.py / train_qa.py", file=sys.stderr)
            return 2
    write_atomic(args.output, "\n".join(lines))
    print(f"wrote {args.output}" + (f" and figures in {fig_dir}/" if plt else " (no figures: matplotlib missing)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
