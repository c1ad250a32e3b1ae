"""Extractive QA on a frozen decoder: windows over SQuAD Examples, span post-processing, the null threshold.

Windows: [BOS if the tokenizer adds one] "Question: {question}\\nContext:\\n" {context tokens} [null]
The question comes first so every context token has seen it (the model is causal); the trailing
null token (the tokenizer's eos) has seen both and is where the no-answer score is read.
"""
import bisect
import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from data.squad_json import Example
from metrics.squad import f1_score

NO_SPAN_DIFF = 1e4  # score_diff when no valid span exists: "certainly no answer", yet finite for JSON


@dataclass
class Window:
    example_index: int  # into the examples list given to make_windows
    input_ids: list[int]
    context_start: int  # index in input_ids of the first context token
    context_offsets: list[tuple[int, int]]  # per context token: (start, end) chars in the example's context
    null_index: int  # the trailing null token, len(input_ids) - 1
    start_position: int  # gold answer tokens, or null_index when the answer is not fully in this window
    end_position: int


def _answer_tokens(offsets: list[tuple[int, int]], start: int, text: str) -> tuple[int, int]:
    """First and last context token overlapping the answer's non-blank chars."""
    first = start + len(text) - len(text.lstrip())
    stop = start + len(text.rstrip())
    return (bisect.bisect_right(offsets, first, key=lambda o: o[1]),
            bisect.bisect_left(offsets, stop, key=lambda o: o[0]) - 1)


class WindowError(ValueError):
    """Window sizes (the scripts' flags of the same names) that leave no room for a context stride."""


def make_windows(examples: list[Example], tokenizer, max_length: int = 384, doc_stride: int = 128,
                 max_question_tokens: int = 64, echo: bool = False) -> list[Window]:
    """Windows of at most max_length tokens, in example order; long contexts get several windows,
    consecutive ones sharing doc_stride context tokens. Questions are cut to max_question_tokens
    (the count is printed). Offsets are the tokenizer's, so context[offsets[s][0]:offsets[e][1]]
    is the text of tokens s..e, give or take surrounding whitespace (byte-level BPE puts a word's
    leading space in its token).

    echo=True writes each window's context twice and labels the second copy: a causal model's token
    only sees what precedes it, so in a single copy the token where an answer starts has not seen the
    answer; in the second copy every token has read the whole window (and the question). Each copy
    gets half the room, and consecutive windows overlap by at most half a window."""
    if not getattr(tokenizer, "is_fast", False):
        raise TypeError("make_windows needs a fast tokenizer for character offsets; "
                        "load it with AutoTokenizer.from_pretrained(..., use_fast=True)")
    if tokenizer.eos_token_id is None:
        raise ValueError("the tokenizer has no eos token to serve as the null (no-answer) token")

    def encode(texts):
        return tokenizer(texts, add_special_tokens=False)["input_ids"]

    probe = tokenizer("a")["input_ids"]
    bos = probe[:1] if tokenizer.bos_token_id is not None and probe[0] == tokenizer.bos_token_id else []
    head, middle, again = bos + encode("Question:"), encode("\nContext:\n"), encode("\nContext again:\n")
    room = max_length - len(head) - max_question_tokens - len(middle) - 1
    if echo:
        room = (room - len(again)) // 2
        doc_stride = min(doc_stride, room // 2)
    if room <= doc_stride:
        raise WindowError(f"--max-length {max_length} leaves {room} context tokens per window next to a question "
                          f"of --max-question-tokens {max_question_tokens}, not more than --doc-stride {doc_stride}; "
                          "raise --max-length or lower --doc-stride / --max-question-tokens")
    if not examples:  # the sizes alone were asked about (and a tokenizer cannot encode an empty batch)
        return []

    contexts = list(dict.fromkeys(ex.context for ex in examples))
    encoded = tokenizer(contexts, add_special_tokens=False, return_offsets_mapping=True)
    tokens = dict(zip(contexts, zip(encoded["input_ids"], encoded["offset_mapping"])))
    questions = encode([" " + ex.question.strip() for ex in examples])

    windows, truncated = [], 0
    for index, (ex, question) in enumerate(zip(examples, questions)):
        truncated += len(question) > max_question_tokens
        prefix = head + question[:max_question_tokens] + middle
        ids, offsets = tokens[ex.context]
        size = max_length - len(prefix) - 1
        if echo:
            size = (size - len(again)) // 2
        first, last = (_answer_tokens(offsets, ex.answer_starts[0], ex.answers[0]) if ex.has_answer
                       else (-1, -1))
        lo = 0
        while True:
            hi = min(lo + size, len(ids))
            start = prefix + (ids[lo:hi] + again if echo else [])  # labelled context copy begins here
            input_ids = start + ids[lo:hi] + [tokenizer.eos_token_id]
            null = len(input_ids) - 1
            inside = ex.has_answer and lo <= first and last < hi
            windows.append(Window(index, input_ids, len(start), offsets[lo:hi], null,
                                  len(start) + first - lo if inside else null,
                                  len(start) + last - lo if inside else null))
            if hi == len(ids):
                break
            lo += size - doc_stride
    if truncated:
        print(f"make_windows: cut {truncated} of {len(examples)} questions to {max_question_tokens} tokens")
    return windows


def postprocess(examples: list[Example], windows: list[Window], start_logits: Sequence[np.ndarray],
                end_logits: Sequence[np.ndarray], n_best: int = 20,
                max_answer_length: int = 30) -> tuple[dict[str, str], dict[str, float], dict[str, int | None]]:
    """Best span text per example id over all its windows, score_diff = null score - best span score (null
    score: the smallest start+end logit at the null token across the example's windows), and the span's first
    character in the context (the span's own, not the text's first occurrence).
    Spans: among each window's n_best top start and end context tokens, start <= end, at most
    max_answer_length tokens, non-blank text. No valid span: "", NO_SPAN_DIFF and None."""
    best = [(-math.inf, "", None)] * len(examples)
    null = [math.inf] * len(examples)
    for window, start_row, end_row in zip(windows, start_logits, end_logits, strict=True):
        if len(start_row) != len(window.input_ids) or len(end_row) != len(window.input_ids):
            raise ValueError(f"a window of {len(window.input_ids)} tokens got {len(start_row)} start and "
                             f"{len(end_row)} end logits")
        i, lo = window.example_index, window.context_start
        null[i] = min(null[i], float(start_row[window.null_index] + end_row[window.null_index]))
        hi = lo + len(window.context_offsets)  # context tokens only: spans never touch prompt or null
        start = np.asarray(start_row[lo:hi], dtype=np.float64)
        end = np.asarray(end_row[lo:hi], dtype=np.float64)
        starts, ends = np.argsort(-start, kind="stable")[:n_best], np.argsort(-end, kind="stable")[:n_best]
        length = ends[None, :] - starts[:, None]  # tokens in the span, minus one
        scores = np.where((length >= 0) & (length < max_answer_length),
                          start[starts][:, None] + end[ends][None, :], -np.inf)
        for flat in np.argsort(-scores, axis=None, kind="stable"):
            score = scores.flat[flat]
            if score <= best[i][0]:
                break
            s, e = starts[flat // len(ends)], ends[flat % len(ends)]
            raw = examples[i].context[window.context_offsets[s][0]:window.context_offsets[e][1]]
            if text := raw.strip():
                best[i] = (float(score), text, window.context_offsets[s][0] + len(raw) - len(raw.lstrip()))
                break
    span_text = {ex.id: text for ex, (_, text, _) in zip(examples, best)}
    score_diff = {ex.id: null[i] - score if text else NO_SPAN_DIFF
                  for i, (ex, (score, text, _)) in enumerate(zip(examples, best))}
    return span_text, score_diff, {ex.id: start for ex, (_, _, start) in zip(examples, best)}


def _best_f1(prediction: str, golds: list[str]) -> float:
    return max(f1_score(prediction, gold) for gold in golds)


def choose_threshold(score_diff: dict[str, float], examples: list[Example], span_text: dict[str, str],
                     f1: Callable[[str, list[str]], float] | None = None) -> float:
    """The threshold t maximising mean F1 when predicting "" wherever score_diff > t (the smallest
    such t among the distinct score_diffs). f1(prediction, golds) is the best F1 over the golds
    (golds == [""] for a no-answer question), by default metrics.squad's. When answering nothing is
    best, returns min(score_diff) - 1."""
    f1 = f1 or _best_f1

    def gain(ex: Example) -> float:  # F1 gained by answering with the span instead of ""
        golds = ex.answers or [""]  # as the official scorer: "" is the one gold of a no-answer question
        return f1(span_text[ex.id], golds) - f1("", golds)

    # sweeping t upwards moves examples, in order of score_diff, from answering "" to the span
    gains = sorted((score_diff[ex.id], gain(ex)) for ex in examples)
    best_total, best_t, total = 0.0, gains[0][0] - 1.0, 0.0
    for n, (diff, gain) in enumerate(gains):
        total += gain
        if (n + 1 == len(gains) or gains[n + 1][0] != diff) and total > best_total:
            best_total, best_t = total, diff
    return best_t


def predictions(span_text: dict[str, str], score_diff: dict[str, float],
                threshold: float | None) -> tuple[dict[str, str], dict[str, float]]:
    """Predicted text ("" where score_diff > threshold) and no-answer probability
    sigmoid(score_diff - threshold): 0.5 at the boundary, rising with the null-over-span margin.
    threshold None: SQuAD v1, where every question has an answer: the best span always, no-answer probability 0."""
    if threshold is None:
        return dict(span_text), dict.fromkeys(span_text, 0.0)
    preds = {qid: "" if score_diff[qid] > threshold else text for qid, text in span_text.items()}
    na_prob = {qid: 0.5 * (1.0 + math.tanh(0.5 * (score_diff[qid] - threshold))) for qid in span_text}
    return preds, na_prob


def answers_all(name: str, examples: list[Example]) -> bool:
    """Whether `examples` hold no unanswerable question, as SQuAD v1 files: then said in one line (the run answers
    every question, as v1's task is); a set with no answerable question is said too (only no-answer scores)."""
    answerable = [bool(ex.gold_answers()) for ex in examples]  # a test question's file answers, located or not
    if not any(answerable):
        print(f"{name}: no answerable question: only the no-answer scores (NoAns) measure anything")
    if all(answerable):
        print(f"{name}: no unanswerable question: SQuAD v1, every question gets its best span (no null threshold)")
        return True
    return False
