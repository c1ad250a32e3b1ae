"""METEOR: nltk's meteor_score (alpha 0.9, beta 3, gamma 0.5; exact, Porter-stem and WordNet
synonym matches) on NLTKWordTokenizer tokens, best over each item's references, averaged.

The numbers are nltk's to the last bit (tests/test_metrics_meteor.py compares them), but the work
is arranged so that a runaway prediction of megabytes against a few-word answer costs seconds:
  - tokenising: the text is cut where NLTKWordTokenizer's rules cannot see across the cut (see
    _CUT), each distinct piece is tokenised once, in batches; nltk's regex time limit (nltk >= 3.10
    runs its own fixed patterns under a 5 s limit per call, which a long text exceeds) is lifted
    for those calls;
  - aligning: nltk visits every hypothesis word in each of its three stages, computing the synonym
    set of each one; here each stage looks only at the words that can match a reference word that
    is still unmatched, found through the distinct words (Porter stems and WordNet synonym sets are
    computed once per distinct word, and only for words that can match; see _Lexicon)."""
import contextlib
import functools
import heapq
import re
from collections import defaultdict
from itertools import chain, compress, islice

from nltk.stem.porter import PorterStemmer
from nltk.tokenize import NLTKWordTokenizer

from metrics import reference_lists, wordnet

try:
    from nltk import redos as _redos  # nltk >= 3.10: every nltk regex runs under a time limit
except ImportError:  # pragma: no cover - older nltk: plain re, no limit
    _redos = None

ALPHA, BETA, GAMMA = 0.9, 3.0, 0.5  # nltk's defaults

# --- tokenising long texts

_TOKENIZER = NLTKWordTokenizer()
_WHOLE = 1 << 14  # texts up to this many characters go to nltk in one piece
_BATCH = 1 << 18  # characters per nltk call when tokenising the distinct pieces of a long text
# Where NLTKWordTokenizer's rules cannot see across, so tokenize(a + b) == tokenize(a) + tokenize(b)
# for the parts before and after: a run of spaces/tabs/newlines between a letter or digit (or , ; :
# ? !, which its rules split off on their own) and a letter or digit; or between a letter or digit
# followed by , ; or : and a letter (where its rules put a space themselves). Not after . ' " ) ] }:
# its rules for a final period, quotes and brackets look at the end or start of the text.
_CUT = re.compile(r"(?<=[A-Za-z0-9,;:?!])[ \t\n\r]+(?=[A-Za-z0-9])|(?<=[A-Za-z0-9][,;:])(?=[A-Za-z])")
_SENTINEL = "Q9"  # made longer until the text does not hold it


@contextlib.contextmanager
def _no_regex_time_limit():
    """nltk's own tokenizer patterns are linear; their per-call time limit only makes a long text
    fail (TimeoutError), so it is lifted while they run."""
    saved = getattr(_redos, "DEFAULT_TIMEOUT", None)
    if _redos is not None and saved is not None:
        _redos.DEFAULT_TIMEOUT = None
    try:
        yield
    finally:
        if _redos is not None and saved is not None:
            _redos.DEFAULT_TIMEOUT = saved


def _whole(text: str) -> list[str]:
    with _no_regex_time_limit():
        return _TOKENIZER.tokenize(text)


@functools.lru_cache(maxsize=8192)  # answers repeat; only texts up to _WHOLE characters come here
def _short_tokens(text: str) -> tuple[str, ...]:
    return tuple(_whole(text))


def _tokens(text: str) -> list[str]:
    return list(_short_tokens(text)) if len(text) <= _WHOLE else _whole(text)


def tokenize(text: str) -> list[str]:
    """NLTKWordTokenizer().tokenize(text), in about linear time however long the text. A long text
    is cut at _CUT; the first and last pieces are tokenised as they are (the rules look at the start
    and end of the text). If the pieces repeat (a runaway generation does), each distinct one is
    tokenised once, many at a time, joined by a sentinel word; otherwise the text is tokenised in
    stretches of about _BATCH characters, cut at _CUT."""
    if len(text) <= _WHOLE:
        return _tokens(text)
    pieces = _CUT.split(text)
    distinct = list(dict.fromkeys(pieces[1:-1]))
    if len(pieces) < 3 or sum(map(len, distinct)) * 4 > len(text):
        tokens, start = [], 0
        for cut in _CUT.finditer(text):
            if cut.start() - start >= _BATCH:
                tokens += _whole(text[start:cut.start()])
                start = cut.end()
        return tokens + _whole(text[start:])
    sentinel = _SENTINEL
    while sentinel in text:
        sentinel += "q"
    tokens_of = {}
    start = 0
    while start < len(distinct):
        stop, size = start, 0
        while stop < len(distinct) and size < _BATCH:
            size += len(distinct[stop]) + len(sentinel) + 2
            stop += 1
        batch = distinct[start:stop]
        groups, group = [], []
        for token in _whole(f" {sentinel} ".join(batch)):
            if token == sentinel:
                groups.append(group)
                group = []
            else:
                group.append(token)
        groups.append(group)
        if len(groups) != len(batch):  # pragma: no cover - the sentinel did not come out alone
            return _whole(text)
        tokens_of.update(zip(batch, groups))
        start = stop
    return [*_tokens(pieces[0]), *chain.from_iterable(map(tokens_of.__getitem__, pieces[1:-1])), *_tokens(pieces[-1])]


# --- stems and synonyms, once per distinct word

class _Lexicon:
    """Porter stems and WordNet synonym sets as nltk's METEOR uses them, each computed once per
    distinct word during one meteor() call, and the filters that say which words need them.

    Two facts keep the work to the words that can match:
      - a Porter stem of two or more letters starts with the word's first two letters, except for
        the stemmer's few irregular forms (dying -> die): its rules only rewrite endings, and only
        where at least a vowel and a consonant stay in front (tests/test_metrics_meteor.py checks
        this on WordNet's words and many made-up ones); a one-letter stem is the word's first letter;
      - nltk's synonym match of a hypothesis stem h with a reference stem r needs a synset of h that
        has r as a lemma name. h reaches a synset through a base form (WordNet's morphy): h itself,
        an irregular form from WordNet's exception lists, or h with one ending rewritten by a
        detachment rule. So only the words in `reach(targets)` can match, a finite set computed
        from the targets' synsets. (Checked at start: if this nltk's morphy applies its rules more
        than once, or its tables are not where expected, every word is looked up instead.)"""

    def __init__(self):
        self.wordnet = wordnet.load()
        stemmer = PorterStemmer()
        self.stem = functools.cache(stemmer.stem)
        self.irregular = frozenset(getattr(stemmer, "pool", {}))  # e.g. dying -> die
        self._synonyms: dict[str, frozenset[str]] = {}
        self._rules, self._exceptions = self._morphology()

    def _morphology(self):
        """(detachment rules, {base form: irregular forms}), or (None, None) if unusable."""
        try:
            rules = {(old, new) for table in self.wordnet.MORPHOLOGICAL_SUBSTITUTIONS.values() for old, new in table}
            if self.wordnet.morphy("churcheses", "n"):  # two rules in a row found "church"
                return None, None
            exceptions = defaultdict(set)
            for table in self.wordnet._exception_map.values():
                for form, bases in table.items():
                    for base in bases:
                        exceptions[base].add(form)
            return rules, exceptions
        except (AttributeError, TypeError, ValueError):  # pragma: no cover - another nltk layout
            return None, None

    def stem_starts(self, stems: set[str]) -> set[str]:
        """How a word whose Porter stem is in `stems` starts (its first two letters, or its first
        letter for a one-letter stem), unless it is an irregular form."""
        return {stem[:2] for stem in stems}

    def synonyms(self, word: str) -> frozenset[str]:
        """What nltk's METEOR matches a stemmed word with: the lemma names (without "_") of its
        WordNet synsets, and the word itself."""
        found = self._synonyms.get(word)
        if found is None:
            found = self._synonyms[word] = frozenset(
                name for synset in self.wordnet.synsets(word) for name in synset.lemma_names() if "_" not in name
            ) | {word}
        return found

    def lemma_synsets(self, word: str) -> list:
        """The synsets that have `word` as a lemma name; none for a word with "_" (nltk skips those).
        They are among synsets(word): WordNet's index lists every lemma of a synset, lowercased, and
        morphy keeps a form that is in the index."""
        if "_" in word:
            return []
        return [synset for synset in self.wordnet.synsets(word) if word in synset.lemma_names()]

    def reach(self, targets: set[str]) -> set[str] | None:
        """Every stem whose synonym set can hold one of `targets` (a superset), or None for "any"."""
        if self._rules is None:
            return None
        bases = {name.lower() for t in targets for synset in self.lemma_synsets(t) for name in synset.lemma_names()}
        forms = set(bases)
        for base in bases:
            forms.update(base[:len(base) - len(new)] + old for old, new in self._rules if base.endswith(new))
            forms.update(self._exceptions.get(base, ()))
        return forms


# --- nltk's alignment, visiting only the words that can match

def _last_free(positions: list[list[int]], used: set[int]):
    """The hypothesis positions of some words, last first, skipping the used ones."""
    merged = heapq.merge(*(reversed(p) for p in positions), reverse=True)
    return (i for i in merged if i not in used)


class _Hypothesis:
    """A tokenised hypothesis, lowercased, with the positions of the words that can match any of
    its references (the only ones nltk's alignment can pair)."""

    def __init__(self, tokens: list[str], refs: list[list[str]], lex: _Lexicon):
        self.words = list(map(str.lower, tokens))
        ref_words = {w for ref in refs for w in ref}
        ref_stems = {lex.stem(w) for w in ref_words}
        self.targets = {s for s in ref_stems if lex.lemma_synsets(s)}  # stems a synonym can match
        reach = lex.reach(self.targets) if self.targets else set()
        starts = lex.stem_starts(ref_stems | reach) if reach is not None else None
        self.stem_of, wanted = {}, set()
        for word in set(self.words):
            if word in ref_words:
                wanted.add(word)
            if starts is not None and word[:2] not in starts and word[:1] not in starts and word not in lex.irregular:
                continue  # its stem is no reference stem and no stem a synonym can match
            stem = lex.stem(word)
            self.stem_of[word] = stem
            if stem in ref_stems or ((reach is None or stem in reach)
                                     and not self.targets.isdisjoint(lex.synonyms(stem))):
                wanted.add(word)
        self.positions = defaultdict(list)
        for i in compress(range(len(self.words)), map(wanted.__contains__, self.words)):
            self.positions[self.words[i]].append(i)
        self.by_stem = defaultdict(list)
        for word in self.positions:
            if word in self.stem_of:
                self.by_stem[self.stem_of[word]].append(word)


def _align(hyp: _Hypothesis, ref: list[str], lex: _Lexicon) -> list[tuple[int, int]]:
    """nltk's _enum_align_words(hyp, ref): exact, then stem, then synonym matches, each stage going
    through the hypothesis from its end and pairing a word with the last free reference word it
    matches. Returns (hypothesis position, reference position) pairs."""
    matches, used = [], set()
    ref_at = defaultdict(list)
    for j, word in enumerate(ref):
        ref_at[word].append(j)
    left = []  # reference positions still free after the exact stage, with their stems
    for word, js in ref_at.items():
        hs = hyp.positions.get(word, [])
        k = min(len(hs), len(js))
        matches.extend(zip(hs[::-1][:k], js[::-1][:k]))
        used.update(hs[len(hs) - k:])
        left.extend((j, lex.stem(word)) for j in js[:len(js) - k])
    # stems: each stem pairs its last free hypothesis words with its last free reference words
    by_stem = defaultdict(list)
    for j, stem in sorted(left):
        by_stem[stem].append(j)
    left = []
    for stem, js in by_stem.items():
        words = hyp.by_stem.get(stem, [])
        hs = list(islice(_last_free([hyp.positions[w] for w in words], used), len(js)))
        matches.extend(zip(hs, js[::-1]))
        used.update(hs)
        left.extend((j, stem) for j in js[:len(js) - len(hs)])
    # synonyms: a hypothesis stem takes the last free reference stem among its synonyms
    free = defaultdict(list)
    for j, stem in sorted(left):
        if stem in hyp.targets:
            free[stem].append(j)
    if free:
        words = [w for w in hyp.positions if w in hyp.stem_of and not hyp.targets.isdisjoint(lex.synonyms(hyp.stem_of[w]))]
        for i in _last_free([hyp.positions[w] for w in words], used):
            options = [s for s in lex.synonyms(hyp.stem_of[hyp.words[i]]) if free.get(s)]
            if options:
                best = max(options, key=lambda s: free[s][-1])
                matches.append((i, free[best].pop()))
                if not free[best]:
                    del free[best]
                    if not free:
                        break
    return sorted(matches)


def _chunks(matches: list[tuple[int, int]]) -> int:
    """Runs of matches adjacent in both hypothesis and reference (matches sorted by hypothesis)."""
    return 1 + sum(1 for (h, r), (h2, r2) in zip(matches, matches[1:]) if not (h2 == h + 1 and r2 == r + 1))


def _score(hyp: _Hypothesis, ref: list[str], lex: _Lexicon) -> float:
    """nltk's single_meteor_score(ref, hyp), its arithmetic in its order."""
    if not hyp.words or not ref:
        return 0.0
    matches = _align(hyp, ref, lex)
    if not matches:
        return 0.0
    precision = float(len(matches)) / len(hyp.words)
    recall = float(len(matches)) / len(ref)
    fmean = (precision * recall) / (ALPHA * precision + (1 - ALPHA) * recall)
    frag_frac = float(_chunks(matches)) / len(matches)
    penalty = GAMMA * frag_frac**BETA
    return (1 - penalty) * fmean


def meteor(predictions: list[str], references: list) -> dict[str, float]:
    """{"meteor": mean over items}. Raises wordnet.WordNetMissing (saying how to install it)
    rather than scoring without synonyms."""
    refs = reference_lists(predictions, references)
    lex = _Lexicon()
    total = 0.0
    for prediction, item_refs in zip(predictions, refs):
        ref_words = [list(map(str.lower, tokenize(r))) for r in item_refs]
        hyp = _Hypothesis(tokenize(prediction), ref_words, lex)
        total += max(_score(hyp, ref, lex) for ref in ref_words)
    return {"meteor": total / len(predictions)}
