"""SQuAD JSON files: the project's one reading of them, Examples for training, articles split, and writing.

read_questions is the ONE reading of SQuAD JSON, shared with metrics.squad (scoring), so that training, the
test scores and `python -m metrics.squad` see the same questions and the same gold answers. It follows the
official evaluate-v2.0.py: a question is answerable iff its `answers` list is not empty (`is_impossible` is
optional and never overrides the answers), a repeated id keeps its last occurrence; ambiguities are read that
way and counted in a one-line warning on stderr (see its docstring). Structural problems are errors
(SquadFormatError, naming the file, the JSON path and the fix): invalid JSON (line/column), missing or mistyped
data/paragraphs/context/qas/id/question/answers fields, an empty file or one without questions.

Loading for training (read_squad / load_squad) turns those questions into Examples. Recoverable problems
are handled and counted in a LoadReport:
  - empty (or whitespace-only) context: its questions are skipped;
  - answer_start that does not point at the answer text (or is missing): the text is searched for, with
    any run of whitespace matching any other; a hit within 2 chars of answer_start, or else the only hit
    in the context, becomes the answer (start and text taken from the context); otherwise the answer is
    dropped, counted as ambiguous (several hits) or missing (none, or blank answer text);
  - an answerable question left with no answers is skipped.
A test set (read_squad(test=True)) keeps every question instead, with its file's gold answers, so its scores are
the official script's on that file: such questions are answered and scored; they only lack a span label.
A missing title becomes "data[i]" so that split_articles still keeps such articles apart.
"""
import json
import re
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from random import Random

FORMAT_HINT = ('expected official SQuAD JSON: {"data": [{"title": ..., "paragraphs": [{"context": ..., '
               '"qas": [{"id": ..., "question": ..., "answers": [{"text": ..., "answer_start": ...}]}]}]}]}')


class SquadFormatError(ValueError):
    """The file is not usable SQuAD JSON; the message names the file, where, and how to fix it."""


@dataclass
class Example:
    id: str
    title: str
    question: str
    context: str
    answers: list[str]  # empty for unanswerable questions
    answer_starts: list[int]  # char offsets into context, context[s:s+len(a)] == a
    # a test question's gold answers as its file has them, (text, answer_start): what scoring compares with, even
    # those that cannot be located in the context; None: the located answers are all there is (training data)
    gold: list[tuple[str, int | None]] | None = None

    @property
    def has_answer(self) -> bool:
        """Whether a located answer gives the question's span label (training, validation)."""
        return bool(self.answers)

    def gold_answers(self) -> list[tuple[str, int | None]]:
        return self.gold if self.gold is not None else list(zip(self.answers, self.answer_starts))


@dataclass
class LoadReport:
    """What read_squad kept, repaired and skipped."""
    answerable: int = 0
    unanswerable: int = 0
    empty_context_questions: int = 0  # skipped: their paragraph has no context text
    starts_fixed: int = 0  # answer_start moved onto the answer text
    answers_ambiguous: int = 0  # dropped: not at answer_start and found several times elsewhere
    answers_missing: int = 0  # dropped: not found in the context at all
    questions_without_answers: int = 0  # skipped: answerable, but none of its answers survived
    reading: "ReadNotes" = field(default_factory=lambda: ReadNotes())  # ambiguities, warned on stderr
    kept: bool = False  # a test set: the questions above are kept (answered and scored), not skipped

    def __bool__(self) -> bool:  # true when something was repaired or skipped
        return any((self.empty_context_questions, self.starts_fixed, self.answers_ambiguous,
                    self.answers_missing, self.questions_without_answers))

    def __str__(self) -> str:
        kept, dropped = ("kept (answered, and scored against the file's answers)", "located no") if self.kept else \
            ("skipped", "dropped")
        return (f"{self.answerable} answerable + {self.unanswerable} unanswerable questions; "
                f"{kept} {self.empty_context_questions} with empty context and "
                f"{self.questions_without_answers} answerable ones left without located answers; "
                f"fixed {self.starts_fixed} answer starts; {dropped} {self.answers_missing} answers "
                f"not found and {self.answers_ambiguous} found ambiguously")


def _kind_name(kind) -> str:
    return " or ".join(k.__name__ for k in kind) if isinstance(kind, tuple) else kind.__name__


def _get(obj, key: str, kind, where: str, source: str):
    """obj[key] checked to be a `kind` (never a bool where an int is asked for), or a SquadFormatError
    naming the JSON path."""
    place = where or "the top level"
    if not isinstance(obj, dict):
        raise SquadFormatError(f"{source}: {place} should be an object with '{key}', "
                               f"found a {type(obj).__name__}; {FORMAT_HINT}")
    if key not in obj:
        raise SquadFormatError(f"{source}: {place} has no '{key}'; {FORMAT_HINT}")
    value = obj[key]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        raise SquadFormatError(f"{source}: {where + '.' if where else ''}{key} should be {_kind_name(kind)}, "
                               f"found {type(value).__name__}; {FORMAT_HINT}")
    return value


def _align(context: str, text: str, start: int | None) -> tuple[str, int | None, str]:
    """(status, start, text) of an answer in its context; status is ok, fixed, ambiguous or missing.
    start None (no answer_start in the file): the text's only occurrence, else ambiguous or missing."""
    if not text.strip():
        return "missing", start, text
    if start is not None and start >= 0 and context[start:start + len(text)] == text:
        return "ok", start, text
    hits = list(re.finditer(r"\s+".join(map(re.escape, text.split())), context))
    near = [m for m in hits if start is not None and abs(m.start() - start) <= 2]
    if near or len(hits) == 1:
        m = min(near, key=lambda m: abs(m.start() - start)) if near else hits[0]
        return "fixed", m.start(), m.group()
    return ("ambiguous" if hits else "missing"), start, text


@dataclass
class Question:
    """One question of a SQuAD file as read_questions reads it (see there for the rules)."""
    id: str
    title: str  # the article's title, or "data[i]" where it has none
    question: str
    context: str
    answers: list[tuple[str, int | None]]  # (text, answer_start or None), in file order, unchecked
    where: str  # its JSON path, e.g. data[0].paragraphs[1].qas[2]

    @property
    def has_answer(self) -> bool:
        """evaluate-v2.0.py's rule: answerable iff the answers list is not empty (whatever the texts)."""
        return bool(self.answers)

    @property
    def texts(self) -> list[str]:
        return [text for text, _ in self.answers]


@dataclass
class ReadNotes:
    """What read_questions had to decide in an ambiguous file; str() is the one-line warning."""
    impossible_with_answers: int = 0  # "is_impossible": true, yet answers: read as answerable
    possible_without_answers: int = 0  # "is_impossible": false, yet no answers: read as unanswerable
    repeated_ids: int = 0  # ids that occur more than once
    dropped_repeats: int = 0  # their earlier occurrences, dropped (the last one is kept)
    integer_ids: int = 0  # ids written as JSON integers, read as their decimal strings

    def __bool__(self) -> bool:
        return any((self.impossible_with_answers, self.possible_without_answers, self.repeated_ids,
                    self.integer_ids))

    def __str__(self) -> str:
        parts = []
        if self.impossible_with_answers:
            parts.append(f"{self.impossible_with_answers} questions marked is_impossible have answers: "
                         "read as answerable")
        if self.possible_without_answers:
            parts.append(f"{self.possible_without_answers} questions marked is_impossible false have no "
                         "answers: read as unanswerable")
        if self.repeated_ids:
            parts.append(f"{self.repeated_ids} question ids occur more than once: the last occurrence kept, "
                         f"{self.dropped_repeats} earlier ones dropped")
        if self.integer_ids:
            parts.append(f"{self.integer_ids} ids are JSON integers: read as strings")
        return "; ".join(parts) + " (as the official evaluate-v2.0.py reads them)"


def read_questions(source, name: str | None = None, warn: bool = True) -> tuple[list[Question], ReadNotes]:
    """The questions of a SQuAD v1/v2 file: THE reading of SQuAD JSON, shared by training (read_squad)
    and scoring (metrics.squad), so that both see the same questions and the same gold answers.

    source: a path, the parsed JSON object ({"data": [...]}), or (in memory only) its list of articles.
    Returns the questions in file order and the notes on ambiguities. When there are notes and `warn`,
    prints one line to stderr: "warning: NAME: ...counts... (as the official evaluate-v2.0.py reads them)".

    The rules follow evaluate-v2.0.py, which only ever reads data[].paragraphs[].qas[].id and .answers:
      - every qas entry is a question; a question is ANSWERABLE iff its `answers` list is not empty
        (even if every answer text is blank: scoring then compares against "" as the official script
        does, and training cannot locate such an answer and skips the question, see read_squad);
      - `is_impossible` is optional; it never overrides `answers`: true with answers is answerable,
        false without answers is unanswerable (both counted in the warning). It must be true or false
        if present; `answers` may be missing only where is_impossible is true (read as []);
      - an id that occurs more than once is ONE question, its LAST occurrence (the one the official
        script's dicts end up holding), kept where it stands; earlier occurrences are dropped (warned);
      - ids are strings; a JSON integer id is read as its decimal string (prediction files are JSON
        objects, whose keys are strings: that is the only way it can be matched; warned);
      - `title` is optional (a missing or non-string title becomes "data[i]"); `plausible_answers`,
        `version` and any other keys are ignored; answer_start is optional (None), an int if present.
    Structural problems are SquadFormatError (one line naming the file, the JSON path and the fix):
    not an object with a "data" list, a missing or mistyped paragraphs/context/qas/id/question/
    answers/text, a non-boolean is_impossible, a non-integer answer_start, no questions at all."""
    from_file = isinstance(source, (str, Path))
    if from_file:
        name = name or str(source)
        source = load_json(source)
    name = name or "dataset"
    articles = source if isinstance(source, list) and not from_file else _get(source, "data", list, "", name)
    by_id: dict[str, Question] = {}
    seen: set[str] = set()
    notes = ReadNotes()
    for i, article in enumerate(articles):
        paragraphs = _get(article, "paragraphs", list, f"data[{i}]", name)
        title = article.get("title")
        title = title if isinstance(title, str) else f"data[{i}]"
        for j, paragraph in enumerate(paragraphs):
            where = f"data[{i}].paragraphs[{j}]"
            context = _get(paragraph, "context", str, where, name)
            for k, qa in enumerate(_get(paragraph, "qas", list, where, name)):
                qwhere = f"{where}.qas[{k}]"
                qid = _get(qa, "id", (str, int), qwhere, name)
                if isinstance(qid, int):
                    qid = str(qid)
                    notes.integer_ids += 1
                question = _get(qa, "question", str, qwhere, name)
                flag = qa.get("is_impossible")
                if flag is not None and not isinstance(flag, bool):
                    raise SquadFormatError(f"{name}: {qwhere}.is_impossible should be true or false, found "
                                           f"{json.dumps(flag)[:40]}; {FORMAT_HINT}")
                raw = [] if flag is True and "answers" not in qa else _get(qa, "answers", list, qwhere, name)
                answers = []
                for n, answer in enumerate(raw):
                    awhere = f"{qwhere}.answers[{n}]"
                    text = _get(answer, "text", str, awhere, name)
                    start = answer.get("answer_start")
                    if start is not None:
                        start = _get(answer, "answer_start", int, awhere, name)
                    answers.append((text, start))
                notes.impossible_with_answers += flag is True and bool(answers)
                notes.possible_without_answers += flag is False and not answers
                if qid in by_id:
                    notes.dropped_repeats += 1
                    notes.repeated_ids += qid not in seen
                    seen.add(qid)
                    del by_id[qid]  # the last occurrence wins, where it stands
                by_id[qid] = Question(qid, title, question, context, answers, qwhere)
    if not by_id:
        raise SquadFormatError(f"{name} holds no questions; {FORMAT_HINT}")
    if warn and notes:
        print(f"warning: {name}: {notes}", file=sys.stderr)
    return list(by_id.values()), notes


def _json_int(digits: str) -> int:
    try:
        return int(digits)
    except ValueError:  # beyond Python's int-from-text digit limit (4300)
        raise SquadFormatError(f"an integer with {len(digits)} digits ({digits[:12]}...)") from None


def load_json(path: str | Path):
    """The parsed JSON of a file; SquadFormatError (one line naming the file) if it cannot be read,
    is not UTF-8 (a BOM is allowed), is empty or is not valid JSON."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except OSError as e:
        raise SquadFormatError(f"cannot read {path}: {e.strerror or e}") from None
    except UnicodeDecodeError as e:
        raise SquadFormatError(f"{path}: not UTF-8 text (byte {e.start}); save it as UTF-8 JSON") from None
    if not text.strip():
        raise SquadFormatError(f"{path} is empty; {FORMAT_HINT}")
    try:
        return json.loads(text, parse_int=_json_int)
    except json.JSONDecodeError as e:
        if e.msg == "Extra data" and text[:e.pos].rstrip(" \t\r").endswith("\n"):  # a value a line: JSON lines
            raise SquadFormatError(f"{path}: holds JSON lines (a value a line), not one SQuAD JSON document; "
                                   f"{FORMAT_HINT} (JSON lines of {{question, context}} are what predict.py --file "
                                   "reads)") from None
        raise SquadFormatError(f"{path}: invalid JSON at line {e.lineno} column {e.colno}: {e.msg}; "
                               "fix the syntax there (`python -m json.tool FILE` shows it too)") from None
    except SquadFormatError as e:
        raise SquadFormatError(f"{path}: holds {e}, too long to be a SQuAD value") from None


def read_squad(path: str | Path, test: bool = False) -> tuple[list[Example], LoadReport]:
    """Examples of a SQuAD v1/v2 file in file order, and the report of what was fixed or skipped.
    Which questions exist and which are answerable: read_questions (shared with metrics.squad).
    On top of that, training needs each answer located in its context (see the module docstring):
    answers that cannot be located are dropped, and a question left without answers is skipped (trainable).
    test=True (a set to answer and score): every question is kept, as the official script scores them all, with
    its file's gold answers (Example.gold); one without a located answer gets no span label."""
    questions, notes = read_questions(path)
    examples, report = [], LoadReport(reading=notes, kept=test)
    for q in questions:
        answers, starts, blank = [], [], not q.context.strip()
        for text, start in [] if blank else q.answers:
            status, start, text = _align(q.context, text, start)
            if status in ("ok", "fixed"):
                answers.append(text)
                starts.append(start)
            report.starts_fixed += status == "fixed"
            report.answers_ambiguous += status == "ambiguous"
            report.answers_missing += status == "missing"
        report.empty_context_questions += blank
        report.questions_without_answers += not blank and q.has_answer and not answers
        examples.append(Example(q.id, q.title, q.question, q.context, answers, starts, gold=list(q.answers)))
    if not test:
        examples = trainable(examples)
    report.answerable = sum(bool(ex.gold_answers()) for ex in examples)
    report.unanswerable = len(examples) - report.answerable
    if not examples:
        raise SquadFormatError(f"{path}: every question was skipped ({report})")
    return examples, report


def trainable(examples: list[Example]) -> list[Example]:
    """The examples training can learn from, as training data (gold: the located answers): a context, and a located
    answer wherever the file gives answers."""
    return [replace(ex, gold=None) for ex in examples if ex.context.strip() and (ex.answers or not ex.gold)]


def load_squad(path: str | Path, test: bool = False) -> list[Example]:
    """read_squad, printing the report's one line when something was fixed, kept or skipped."""
    examples, report = read_squad(path, test)
    if report:
        print(f"{path}: {report}")
    return examples


def split_articles(examples: list[Example], test_fraction: float = 0.2,
                   seed: int = 1) -> tuple[list[Example], list[Example]]:
    """(train, test) with whole articles on each side: a seeded shuffle of titles, example order kept."""
    titles = list(dict.fromkeys(ex.title for ex in examples))
    if len(titles) < 2 or not 0 < test_fraction < 1:
        raise ValueError(f"splitting by article needs at least 2 articles (got {len(titles)}) "
                         f"and 0 < test_fraction < 1 (got {test_fraction})")
    Random(seed).shuffle(titles)
    n_test = min(max(1, round(len(titles) * test_fraction)), len(titles) - 1)
    test_titles = set(titles[:n_test])
    return ([ex for ex in examples if ex.title not in test_titles],
            [ex for ex in examples if ex.title in test_titles])


def to_squad_json(examples: list[Example]) -> dict:
    """Official-format JSON of these examples, grouped by article and context (for scoring a subset)."""
    articles: dict[str, dict[str, list]] = {}
    for ex in examples:
        gold = ex.gold_answers()
        qa = {"id": ex.id, "question": ex.question, "is_impossible": not gold,
              "answers": [{"text": a, "answer_start": s} for a, s in gold]}
        articles.setdefault(ex.title, {}).setdefault(ex.context, []).append(qa)
    return {"version": "v2.0", "data": [
        {"title": title, "paragraphs": [{"context": c, "qas": qas} for c, qas in paragraphs.items()]}
        for title, paragraphs in articles.items()]}
