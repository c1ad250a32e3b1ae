"""The GLUE classification tasks train_cls.py knows (`--task`): their public files, the columns that hold the texts
and the label, the labels' names, the metrics GLUE reports them with, and a zero-shot prompt.

GLUE's test labels are hidden, so a task's dev set is its test set (MNLI: dev_matched, and dev_mismatched scored
beside it). MRPC's labelled test set is public (the MSR paraphrase corpus that GLUE's MRPC is cut from), so MRPC is
trained on its training file and tested on that test set. STS-B is a regression task, which a classification head
does not fit: it is refused by name.
"""
from dataclasses import dataclass
from pathlib import Path

from data.labelled import DataError


@dataclass(frozen=True)
class Prompt:
    """A zero-shot prompt: {a} (and {b} for pairs) is the text, the LM's next word the answer. As in
    lm-evaluation-harness the texts go in as they are, but MNLI's hypothesis, which the harness strips and ends
    with a period when it has none (period_b)."""
    template: str
    period_b: bool = False

    def fill(self, a: str, b: str | None = None) -> str:
        if b is not None and self.period_b:
            b = b.strip() + ("" if b.strip().endswith(".") else ".")
        return self.template.format(a=a, b=b)


@dataclass(frozen=True)
class Task:
    name: str
    train: str  # data.fetch name of the training file (train.tsv under --data-dir)
    # (split, data.fetch name, file under --data-dir); the first is THE test set
    tests: tuple[tuple[str, str, str], ...]
    text_columns: tuple[str, ...]  # one column, or two for sentence pairs
    label_column: str
    values: tuple[str, ...]  # the label values as written in the files, in class-id order (GLUE's on the Hub)
    names: tuple[str, ...]  # what users read for them
    metrics: tuple[str, ...]  # GLUE's headline metrics for the task
    prompt: Prompt
    words: tuple[str, ...]  # the answer word for each label value
    fieldnames: tuple[str, ...] | None = None  # the columns of a file without a header (CoLA)


def _task(name: str, text_columns, label_column, values, names, metrics, prompt, words, tests=None,
          fieldnames=None, period_b=False) -> Task:
    """A task whose files are data.fetch's <name>_train and, unless `tests` says otherwise, <name>_dev."""
    return Task(name, f"{name}_train", tests or (("test", f"{name}_dev", "dev.tsv"),), tuple(text_columns),
                label_column, tuple(values), tuple(names), tuple(metrics), Prompt(prompt, period_b), tuple(words),
                fieldnames)


# Label ids as nyu-mll/glue on the Hub numbers them; prompts and answer words are lm-evaluation-harness's.
TASKS = {t.name: t for t in (
    _task("sst2", ["sentence"], "label", ["0", "1"], ["negative", "positive"], ["accuracy"],
          "{a}\nQuestion: Is this sentence positive or negative?\nAnswer:", [" negative", " positive"]),
    _task("cola", ["sentence"], "label", ["0", "1"], ["unacceptable", "acceptable"], ["mcc"],
          "{a}\nQuestion: Does this sentence make sense?\nAnswer:", [" no", " yes"],
          fieldnames=("source", "label", "original_label", "sentence")),
    _task("mrpc", ["#1 String", "#2 String"], "Quality", ["0", "1"], ["not_equivalent", "equivalent"],
          ["accuracy", "f1"], "Sentence 1: {a}\nSentence 2: {b}\nQuestion: Do both sentences mean the same thing?\n"
          "Answer:", [" no", " yes"], tests=(("test", "mrpc_test", "dev.tsv"),)),
    _task("qqp", ["question1", "question2"], "is_duplicate", ["0", "1"], ["not_duplicate", "duplicate"],
          ["accuracy", "f1"], "Question 1: {a}\nQuestion 2: {b}\nQuestion: Do both questions ask the same thing?\n"
          "Answer:", [" no", " yes"]),
    _task("qnli", ["question", "sentence"], "label", ["entailment", "not_entailment"],
          ["entailment", "not_entailment"], ["accuracy"],
          "{a}\n{b}\nQuestion: Does this response answer the question?\nAnswer:", [" yes", " no"]),
    _task("rte", ["sentence1", "sentence2"], "label", ["entailment", "not_entailment"],
          ["entailment", "not_entailment"], ["accuracy"], "{a}\nQuestion: {b} True or False?\nAnswer:",
          [" True", " False"]),
    _task("mnli", ["sentence1", "sentence2"], "gold_label", ["entailment", "neutral", "contradiction"],
          ["entailment", "neutral", "contradiction"], ["accuracy"],
          "{a}\nQuestion: {b} True, False or Neither?\nAnswer:", [" True", " Neither", " False"],
          tests=(("test", "mnli_dev_matched", "dev_matched.tsv"),
                 ("test_mismatched", "mnli_dev_mismatched", "dev_mismatched.tsv")), period_b=True),
)}
UNSUPPORTED = {"stsb": "STS-B is a regression task (similarity scores 0-5); train_cls.py trains classification "
                       "heads only"}
CUSTOM = "custom"  # own files: --text-column names the columns


# A fetched test file that is not GLUE's dev file of the same task: MRPC's labelled MSR test set (1,725 pairs), while
# GLUE's MRPC dev.tsv (408 pairs, what --data-dir reads) is cut from the MSR training file.
FETCHED_TEST_SETS = {"mrpc_test": "msr_test"}


def test_set_name(fetch_name: str, file: str, fetched: bool) -> str:
    """Which data a task's test set is (metrics.json, the card): glue_dev (glue_dev_matched, ...) or msr_test."""
    return FETCHED_TEST_SETS.get(fetch_name, "glue_" + Path(file).stem) if fetched else "glue_" + Path(file).stem


def task(name: str) -> Task | None:
    """The named GLUE task, None for own files ("custom"); an unsupported or unknown name is a one-line error."""
    if name == CUSTOM:
        return None
    if name in UNSUPPORTED:
        raise DataError(f"--task {name}: not supported: {UNSUPPORTED[name]}")
    if name not in TASKS:
        raise DataError(f"--task {name}: unknown; known: {', '.join(TASKS)} (or {CUSTOM} for own files)")
    return TASKS[name]


def custom_prompt(words: list[str], pairs: bool) -> Prompt:
    """The zero-shot prompt of own data: the text (or pair), then the answer words as the choices."""
    choices = " or ".join(w.strip() for w in words)
    return Prompt(("{a}\n{b}" if pairs else "{a}") + f"\nQuestion: {choices}?\nAnswer:")
