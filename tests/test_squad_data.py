"""SQuAD data layer: loading (and its errors), article split, windows/offsets, post-processing, threshold."""
import json
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from data.squad import NO_SPAN_DIFF, Window, choose_threshold, make_windows, postprocess, predictions
from data.squad_json import Example, SquadFormatError, load_squad, read_squad, split_articles

SAMPLES = Path(__file__).resolve().parents[1] / "data" / "samples"
# (max_length, doc_stride, max_question_tokens): the default, and one forcing many windows
WINDOWINGS = [(384, 128, 64), (96, 32, 24)]


@pytest.fixture(scope="module")
def bundled():
    return read_squad(SAMPLES / "squad_train.json")[0] + read_squad(SAMPLES / "squad_test.json")[0]


def write_squad(tmp_path, paragraphs, title="T") -> Path:
    path = tmp_path / "squad.json"
    path.write_text(json.dumps({"version": "v2.0", "data": [{"title": title, "paragraphs": paragraphs}]}))
    return path


def qa(id, answers=(), question="Who?", impossible=False):
    return {"id": id, "question": question, "is_impossible": impossible,
            "answers": [{"text": text, "answer_start": start} for text, start in answers]}


# --- the bundled cut -----------------------------------------------------------------------------

def test_bundled_cut_counts():
    train, train_report = read_squad(SAMPLES / "squad_train.json")
    test, test_report = read_squad(SAMPLES / "squad_test.json")
    assert (train_report.answerable, train_report.unanswerable) == (418, 474)
    assert (test_report.answerable, test_report.unanswerable) == (224, 212)
    assert not train_report and not test_report  # the official dev file needs no repairs
    assert list(dict.fromkeys(ex.title for ex in train)) == [
        "Normans", "Sky_(United_Kingdom)", "1973_oil_crisis", "Black_Death"]
    assert list(dict.fromkeys(ex.title for ex in test)) == ["Jacksonville,_Florida", "Pharmacy"]
    for ex in train + test:
        assert all(ex.context[s:s + len(a)] == a for a, s in zip(ex.answers, ex.answer_starts))


def test_split_articles_is_by_title_and_seeded(bundled):
    train, test = split_articles(bundled, test_fraction=0.2, seed=1)
    assert len({ex.title for ex in test}) == 1  # round(6 * 0.2)
    assert not {ex.title for ex in train} & {ex.title for ex in test}
    assert sorted(ex.id for ex in train + test) == sorted(ex.id for ex in bundled)
    assert [ex.id for ex in train] == [ex.id for ex in bundled if ex in train]  # file order kept
    assert split_articles(bundled, 0.2, seed=1) == (train, test)
    assert len({ex.title for ex in split_articles(bundled, 0.5, seed=7)[1]}) == 3
    with pytest.raises(ValueError, match="at least 2 articles"):
        split_articles([ex for ex in bundled if ex.title == "Pharmacy"])


# --- windows ---------------------------------------------------------------------------------------

def covering_span(offsets, first, stop):
    """Indices of the first and last token overlapping chars [first, stop), or None if a window
    does not hold them all."""
    if not offsets or offsets[0][0] > first or offsets[-1][1] < stop:
        return None
    return (min(k for k, (_, end) in enumerate(offsets) if end > first),
            max(k for k, (start, _) in enumerate(offsets) if start < stop))


@pytest.mark.parametrize("echo", [False, True])
@pytest.mark.parametrize("max_length,doc_stride,max_question_tokens", WINDOWINGS)
def test_windows_layout_and_labels(bundled, smollm2_tokenizer, max_length, doc_stride, max_question_tokens, echo):
    tok = smollm2_tokenizer
    windows = make_windows(bundled, tok, max_length, doc_stride, max_question_tokens, echo=echo)
    assert [w.example_index for w in windows] == sorted(w.example_index for w in windows)
    for w in windows:
        ex = bundled[w.example_index]
        assert len(w.input_ids) <= max_length
        assert w.null_index == len(w.input_ids) - 1 and w.input_ids[-1] == tok.eos_token_id
        assert w.context_start + len(w.context_offsets) == w.null_index
        prefix = tok.decode(w.input_ids[:w.context_start])  # the question comes first, whole or cut
        question = f"Question: {ex.question.strip()}"
        if echo:  # the labelled copy follows an identical first copy of the same window
            n = len(w.context_offsets)
            again = w.input_ids[w.context_start - n - len(tok("\nContext again:\n")["input_ids"]):]
            assert again[:n] == w.input_ids[w.context_start:w.null_index]
            prefix = prefix[:prefix.index("\nContext:\n") + len("\nContext:\n")]
        assert prefix.endswith("\nContext:\n") and question.startswith(prefix[:-len("\nContext:\n")])
        if w.start_position == w.null_index:
            assert w.end_position == w.null_index
            if ex.has_answer:  # null only because the first answer is not wholly in this window
                a = ex.answer_starts[0]
                assert covering_span(w.context_offsets, a, a + len(ex.answers[0])) is None
        else:
            assert w.context_start <= w.start_position <= w.end_position < w.null_index
            a = ex.answer_starts[0]
            s, e = covering_span(w.context_offsets, a, a + len(ex.answers[0]))
            assert (w.start_position, w.end_position) == (w.context_start + s, w.context_start + e)


# echo halves the room per copy: at 96 tokens some answers are longer than a window
@pytest.mark.parametrize("max_length,doc_stride,max_question_tokens,echo",
                         [(*w, False) for w in WINDOWINGS] + [(*WINDOWINGS[0], True)])
def test_every_gold_answer_is_recoverable(bundled, smollm2_tokenizer, max_length, doc_stride,
                                          max_question_tokens, echo):
    windows = make_windows(bundled, smollm2_tokenizer, max_length, doc_stride, max_question_tokens, echo=echo)
    by_example = [[] for _ in bundled]
    for w in windows:
        by_example[w.example_index].append(w)
    exact, partial, labelled = 0, [], 0
    for ex, ws in zip(bundled, by_example):
        if ex.has_answer:
            labelled += any(w.start_position != w.null_index for w in ws)
        for answer, a in zip(ex.answers, ex.answer_starts):
            texts = set()
            for w in ws:
                span = covering_span(w.context_offsets, a, a + len(answer))
                if span:
                    texts.add(ex.context[w.context_offsets[span[0]][0]:w.context_offsets[span[1]][1]].strip())
            assert texts, f"{ex.id}: {answer!r} lies in no single window"
            assert len(texts) == 1
            text = texts.pop()
            if text == answer.strip():
                exact += 1
            else:  # the answer begins or ends inside a token: the covering span holds it
                assert answer.strip() in text
                partial.append((answer, text))
    assert labelled == sum(ex.has_answer for ex in bundled) == 642
    # Of the 2130 gold answers (duplicates included), 14 (0.66%) start or end inside a token, e.g.
    # "Japan" of "Japanese", or "(718)" of "(718)." where the tokenizer merges ")." into one token.
    # No windowing can split those; the covering span holds them, and they are the same at any size.
    assert (exact, len(partial)) == (2116, 14), partial


def test_windows_cover_every_context_token_with_doc_stride_overlap(bundled, smollm2_tokenizer):
    max_length, doc_stride = 96, 32
    windows = make_windows(bundled, smollm2_tokenizer, max_length, doc_stride, max_question_tokens=24)
    for i, ex in enumerate(bundled):
        ws = [w for w in windows if w.example_index == i]
        whole = smollm2_tokenizer(ex.context, add_special_tokens=False, return_offsets_mapping=True)
        lo = 0  # each window holds a slice of the context's tokens, the next one starting doc_stride early
        for w in ws:
            n = len(w.context_offsets)
            assert w.context_offsets == whole["offset_mapping"][lo:lo + n]
            assert w.input_ids[w.context_start:w.null_index] == whole["input_ids"][lo:lo + n]
            lo += n - doc_stride
        assert lo + doc_stride == len(whole["input_ids"])  # the last window reaches the end
    assert len(windows) > 3 * len(bundled)


def test_bos_is_kept_when_the_tokenizer_adds_one(smollm2_folder, bundled):
    from tokenizers import processors
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(smollm2_folder)
    # a BOS in front, like Llama 3; set on the backend: only transformers 5 honours add_bos_token=True here
    tok.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{tok.bos_token} $A", pair=f"{tok.bos_token} $A $B:1", special_tokens=[(tok.bos_token, tok.bos_token_id)])
    with_bos = make_windows(bundled[:3], tok)
    assert all(w.input_ids[0] == tok.bos_token_id for w in with_bos)


def test_long_question_is_cut_and_counted(tmp_path, smollm2_tokenizer, capsys):
    context = "The quick brown fox jumps over the lazy dog."
    path = write_squad(tmp_path, [{"context": context, "qas": [
        qa("long", [("fox", 16)], question="why " * 200), qa("short", [("dog", 40)])]}])
    examples = load_squad(path)
    windows = make_windows(examples, smollm2_tokenizer, max_length=64, doc_stride=8, max_question_tokens=16)
    assert "cut 1 of 2 questions to 16 tokens" in capsys.readouterr().out
    assert len(windows) == 2 and all(len(w.input_ids) <= 64 for w in windows)
    assert windows[0].context_start < 24  # 16 question tokens plus the fixed prompt
    for w, answer in zip(windows, ["fox", "dog"]):
        o = w.context_offsets
        span = context[o[w.start_position - w.context_start][0]:o[w.end_position - w.context_start][1]]
        assert span.strip() == answer


def test_window_settings_and_tokenizer_are_checked(bundled, smollm2_tokenizer):
    with pytest.raises(ValueError, match="--doc-stride 32"):
        make_windows(bundled, smollm2_tokenizer, max_length=96, doc_stride=32, max_question_tokens=64)

    class Slow:
        is_fast = False
    with pytest.raises(TypeError, match="fast tokenizer"):
        make_windows(bundled, Slow())


# --- post-processing and threshold -----------------------------------------------------------------

CONTEXT = "Paris is the capital and largest city of France ."


def word_window(example_index, words, prefix=3):
    """A window over some of CONTEXT's words (one token each) after `prefix` question tokens."""
    starts = [i for i in range(len(CONTEXT)) if CONTEXT[i] != " " and (i == 0 or CONTEXT[i - 1] == " ")]
    offsets = [(s, CONTEXT.index(" ", s) if " " in CONTEXT[s:] else len(CONTEXT)) for s in starts]
    offsets = offsets[words]
    n = prefix + len(offsets) + 1
    return Window(example_index, [0] * n, prefix, offsets, n - 1, n - 1, n - 1)


def logits(window, peaks, base=-5.0):
    """Logits of a window: base everywhere, peaks at {input index: value}."""
    out = np.full(len(window.input_ids), base, dtype=np.float32)
    for k, v in peaks.items():
        out[k] = v
    return out


def example(id="q", answers=("France",)):
    return Example(id, "T", "Where?", CONTEXT, list(answers), [CONTEXT.index(a) for a in answers])


def test_postprocess_picks_the_best_span_across_windows():
    ex = example()
    w1, w2 = word_window(0, slice(0, 6)), word_window(0, slice(4, 10))  # words 4, 5 in both
    # w1: "Paris" (token 3) scores 2 + 2; w2: "of France" (3+4, 3+5) scores 3 + 4; nulls 1 and 0.5
    starts = [logits(w1, {3: 2, w1.null_index: 0.5}), logits(w2, {6: 3, w2.null_index: 0.25})]
    ends = [logits(w1, {3: 2, w1.null_index: 0.5}), logits(w2, {7: 4, w2.null_index: 0.25})]
    text, diff, start = postprocess([ex], [w1, w2], starts, ends)
    assert text == {"q": "of France"}
    assert diff["q"] == pytest.approx(0.5 - 7)  # the smaller null score (w2) minus the best span
    assert CONTEXT[start["q"]:start["q"] + len("of France")] == "of France"


def test_postprocess_gives_the_spans_own_offset_not_the_first_occurrence():
    context = "the cat saw the dog"
    offsets = [(0, 3), (4, 7), (8, 11), (12, 15), (16, 19)]  # one token a word
    w = Window(0, [0] * 9, 3, offsets, 8, 8, 8)
    ex = Example("q", "T", "Who?", context, [], [])
    text, _, start = postprocess([ex], [w], [logits(w, {3 + 3: 9})], [logits(w, {3 + 3: 9})])  # the second "the"
    assert text == {"q": "the"} and start == {"q": 12} and context.find("the") == 0
    _, _, none = postprocess([ex], [w], [logits(w, {3 + 3: 9})], [logits(w, {3 + 1: 9})], n_best=1)
    assert none == {"q": None}


def test_postprocess_rejects_invalid_spans():
    w = word_window(0, slice(0, 10))
    c = w.context_start
    cases = [  # (start peaks, end peaks, max_answer_length, expected text)
        ({c + 5: 9, c + 1: 1}, {c + 2: 9}, 30, "is the"),  # start 5 > end 2: rejected, start 1 wins
        ({c: 9, c + 7: 2}, {c + 8: 9}, 2, "of France"),  # 0..8 is 9 tokens > 2: rejected
        ({0: 50, w.null_index: 50, c + 2: 1}, {1: 50, w.null_index: 50, c + 3: 1}, 30, "the capital"),
    ]
    for start_peaks, end_peaks, max_len, expected in cases:
        text, _, _ = postprocess([example()], [w], [logits(w, start_peaks)], [logits(w, end_peaks)],
                              max_answer_length=max_len)
        assert text["q"] == expected
    # with n_best=1 the only pair is start 5 > end 2: no valid span at all
    text, diff, _ = postprocess([example()], [w], [logits(w, {c + 5: 9})], [logits(w, {c + 2: 9})], n_best=1)
    assert text == {"q": ""} and diff == {"q": NO_SPAN_DIFF}


def test_postprocess_checks_logit_lengths():
    w = word_window(0, slice(0, 10))
    with pytest.raises(ValueError, match="logits"):
        postprocess([example()], [w], [np.zeros(3)], [np.zeros(3)])


def exact_match_f1(prediction, golds):
    return float(prediction in golds)


def brute_force_best(score_diff, examples, span_text, f1):
    def mean_f1(t):
        return sum((f1(span_text[ex.id], ex.answers) if ex.has_answer else span_text[ex.id] == "")
                   if score_diff[ex.id] <= t else (not ex.has_answer) for ex in examples) / len(examples)
    return max(mean_f1(t) for t in [-math.inf, *score_diff.values()]), mean_f1


def test_choose_threshold_known_optimum():
    exs = [example("a"), example("b", answers=()), example("c"), example("d", answers=())]
    span = {"a": "France", "b": "Paris", "c": "France", "d": "city"}
    diff = {"a": -2.0, "c": -1.5, "b": -1.0, "d": 3.0}
    # answering a and c and leaving b and d empty gets all four right: t = -1.5
    assert choose_threshold(diff, exs, span, exact_match_f1) == -1.5
    # if c's span were wrong, answering only a is best (3/4): the smallest best t is -2
    assert choose_threshold(diff, exs, {**span, "c": "Paris"}, exact_match_f1) == -2.0
    # if every span is wrong, answering nothing is best: t below every diff
    wrong = {k: "capital" for k in span}
    assert choose_threshold(diff, exs, wrong, exact_match_f1) < min(diff.values())


def test_choose_threshold_defaults_to_the_squad_f1():
    squad_metrics = pytest.importorskip("metrics.squad")
    exs = [example("a"), example("b", answers=()), example("c"), example("d", answers=())]
    span = {"a": "France", "b": "Paris", "c": "of France", "d": "city"}
    diff = {"a": -2.0, "c": -1.5, "b": -1.0, "d": 3.0}
    t = choose_threshold(diff, exs, span)  # "of France" is still the best partial credit: F1 2/3

    def best_f1(prediction, golds):
        return max(squad_metrics.f1_score(prediction, gold) for gold in golds)
    assert t == choose_threshold(diff, exs, span, best_f1) == -1.5


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(-3, 3), st.booleans(), st.booleans()), min_size=1, max_size=12))
def test_choose_threshold_matches_brute_force(rows):
    """rows: (score diff, answerable?, span right?) with repeated diffs on purpose."""
    exs = [example(f"q{i}", ("France",) if answerable else ()) for i, (_, answerable, _) in enumerate(rows)]
    diff = {f"q{i}": float(d) for i, (d, _, _) in enumerate(rows)}
    span = {f"q{i}": ("France" if right else "Paris") for i, (_, _, right) in enumerate(rows)}
    t = choose_threshold(diff, exs, span, exact_match_f1)
    best, mean_f1 = brute_force_best(diff, exs, span, exact_match_f1)
    assert mean_f1(t) == pytest.approx(best)


def test_predictions_and_no_answer_probability():
    diff = {f"q{i}": d for i, d in enumerate([-30.0, -2.0, -0.1, 0.0, 0.1, 2.0, 30.0])}
    span = {qid: f"span {qid}" for qid in diff}
    preds, na_prob = predictions(span, diff, threshold=0.0)
    assert preds == {qid: "" if d > 0 else span[qid] for qid, d in diff.items()}
    probs = [na_prob[qid] for qid in diff]
    assert all(0 < p < 1 for p in probs) and probs == sorted(probs) and len(set(probs)) == len(probs)
    assert na_prob["q3"] == 0.5
    assert predictions(span, diff, threshold=2.0)[1]["q5"] == 0.5
    assert predictions({"q0": "x"}, {"q0": NO_SPAN_DIFF}, 0.0)[1]["q0"] == 1.0  # saturates, no overflow


# --- bad input -------------------------------------------------------------------------------------

def test_malformed_json_names_file_and_line(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{"data": [\n  {"title": "x",,\n]}')
    with pytest.raises(SquadFormatError, match=r"broken\.json.*line 2 column"):
        read_squad(path)


@pytest.mark.parametrize("content,where", [
    ({"version": "v2.0"}, "the top level has no 'data'"),
    ({"data": [{"title": "x"}]}, r"data\[0\] has no 'paragraphs'"),
    ({"data": [{"paragraphs": [{"context": "c", "qas": []}, {"context": "c"}]}]},
     r"data\[0\]\.paragraphs\[1\] has no 'qas'"),
    ({"data": [{"paragraphs": [{"qas": []}]}]}, r"data\[0\]\.paragraphs\[0\] has no 'context'"),
    ({"data": [{"paragraphs": [{"context": "c", "qas": [qa("a"), {"question": "q?"}]}]}]},
     r"data\[0\]\.paragraphs\[0\]\.qas\[1\] has no 'id'"),
    ({"data": [{"paragraphs": [{"context": "c", "qas": [{"id": "a", "answers": []}]}]}]},
     r"data\[0\]\.paragraphs\[0\]\.qas\[0\] has no 'question'"),
    ({"data": [{"paragraphs": [{"context": "c", "qas": [qa("a", [("c", "0")])]}]}]},
     r"data\[0\]\.paragraphs\[0\]\.qas\[0\]\.answers\[0\]\.answer_start should be int"),
    ({"data": [{"paragraphs": "c"}]}, r"data\[0\]\.paragraphs should be list, found str"),
    ([1, 2], "the top level should be an object"),
])
def test_not_squad_names_the_json_path(tmp_path, content, where):
    path = tmp_path / "other.json"
    path.write_text(json.dumps(content))
    with pytest.raises(SquadFormatError, match=rf"other\.json: {where}.*official SQuAD JSON"):
        read_squad(path)


def test_duplicate_ids_keep_the_last_occurrence_with_a_warning(tmp_path, capsys):
    """As the official evaluate-v2.0.py (its dicts keep the last one); see tests/test_reading.py."""
    path = write_squad(tmp_path, [{"context": "abc", "qas": [qa("x", [("abc", 0)])]},
                                  {"context": "def", "qas": [qa("y", impossible=True), qa("x", [("def", 0)])]}])
    examples, report = read_squad(path)
    assert [(ex.id, ex.context, ex.answers) for ex in examples] == [("y", "def", []), ("x", "def", ["def"])]
    assert (report.reading.repeated_ids, report.reading.dropped_repeats) == (1, 1)
    err = capsys.readouterr().err
    assert err == (f"warning: {path}: 1 question ids occur more than once: the last occurrence kept, "
                   "1 earlier ones dropped (as the official evaluate-v2.0.py reads them)\n")


@pytest.mark.parametrize("text", ["", "  \n", '{"version": "v2.0", "data": []}',
                                  '{"data": [{"title": "t", "paragraphs": [{"context": "c", "qas": []}]}]}'])
def test_empty_data_set_is_an_error(tmp_path, text):
    path = tmp_path / "empty.json"
    path.write_text(text)
    with pytest.raises(SquadFormatError, match=r"empty\.json( is empty| holds no questions)"):
        read_squad(path)


def test_everything_skipped_is_an_error(tmp_path):
    path = write_squad(tmp_path, [{"context": " ", "qas": [qa("a", impossible=True)]}])
    with pytest.raises(SquadFormatError, match="every question was skipped"):
        read_squad(path)


def test_empty_context_is_skipped_and_counted(tmp_path, capsys):
    path = write_squad(tmp_path, [{"context": "", "qas": [qa("a"), qa("b", impossible=True)]},
                                  {"context": "Some text.", "qas": [qa("c", impossible=True)]}])
    examples, report = read_squad(path)
    assert [ex.id for ex in examples] == ["c"] and report.empty_context_questions == 2
    load_squad(path)
    assert "skipped 2 with empty context" in capsys.readouterr().out


def test_answer_start_mismatch_is_fixed_or_dropped(tmp_path):
    context = "In  New York,\nthe city of New\nYork  has  many  parks; parks  abound."
    path = write_squad(tmp_path, [{"context": context, "qas": [
        qa("exact", [("New York", 4)]),
        qa("off_by_two", [("New York", 2)]),  # exact text 2 chars later
        qa("elsewhere", [("abound", 3)]),  # far away but unique
        qa("whitespace", [("has many parks", 0)]),  # found as "has  many  parks"
        qa("nearest", [("New York", 24)]),  # both "New York"s match, the one 2 chars later is "New\nYork"
        qa("ambiguous", [("parks", 0), ("many", 50)]),  # "parks" twice, none near 0: dropped; "many" once
        qa("missing", [("Boston", 4), ("York", 8)]),  # Boston dropped, York kept
        qa("gone", [("Chicago", 0)]),  # no answer left: question skipped
    ]}])
    examples, report = read_squad(path)
    got = {ex.id: list(zip(ex.answers, ex.answer_starts)) for ex in examples}
    assert got == {"exact": [("New York", 4)], "off_by_two": [("New York", 4)],
                   "elsewhere": [("abound", 61)], "whitespace": [("has  many  parks", 36)],
                   "nearest": [("New\nYork", 26)], "ambiguous": [("many", 41)],
                   "missing": [("York", 8)]}
    assert (report.starts_fixed, report.answers_ambiguous, report.answers_missing,
            report.questions_without_answers) == (5, 1, 2, 1)
    for ex in examples:
        assert all(ex.context[s:s + len(a)] == a for a, s in zip(ex.answers, ex.answer_starts))
