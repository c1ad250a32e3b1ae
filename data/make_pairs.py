"""Build the bundled QNLI-style sample (data/samples/qnli_squad) from the SQuAD 2.0 dev set.

    python data/make_pairs.py [dev-v2.0.json] [--out data/samples/qnli_squad]

GLUE's QNLI pairs a SQuAD question with one sentence of its paragraph: "entailment" if the sentence holds the
answer, else "not_entailment". This does the same with the official SQuAD 2.0 dev file (fetched into the cache,
sha256-checked, when no path is given): each paragraph is cut into sentences by a rule-based splitter (no
tokenizer data needed offline); an answerable question paired with the sentence that holds its answer's character
span is "entailment", and paired with another sentence of the paragraph that holds none of its answers is
"not_entailment". Whole articles are held out for the test split (dev.tsv), so no test paragraph was seen in
training; each split is sampled balanced from its pairs. Seeded: the same input gives the same files.

Output: train.tsv and dev.tsv in GLUE QNLI's columns (index, question, sentence, label).
"""
import argparse
import json
import random
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from data.fetch import fetch_file  # noqa: E402
from files import write_atomic  # noqa: E402

# a period after these ends no sentence (lowercased, without the period)
ABBREVIATIONS = {"mr", "mrs", "ms", "dr", "st", "jr", "sr", "prof", "gen", "col", "lt", "sgt", "rev", "gov", "sen",
                 "rep", "no", "vs", "etc", "e.g", "i.e", "inc", "ltd", "co", "corp", "mt", "ft", "approx", "ca", "c",
                 "u.s", "u.k", "a.d", "b.c", "jan", "feb", "mar", "apr", "aug", "sept", "sep", "oct", "nov", "dec"}
# a candidate end: . ! or ? (with closing quotes or brackets), then space, then what can start a sentence
BOUNDARY = re.compile(r"""[.!?]["')\]]*\s+(?=["'(\[]?[A-Z0-9])""")


def sentences(text: str) -> list[tuple[int, int]]:
    """(start, end) character spans of the sentences of `text`, leading and trailing spaces excluded."""
    spans, start = [], 0
    for m in BOUNDARY.finditer(text):
        word = text[:m.start()].rsplit(None, 1)[-1].lower() if text[:m.start()].strip() else ""
        if text[m.start()] == "." and (word.strip("(\"'") in ABBREVIATIONS or re.fullmatch(r"\W*[a-z]", word)):
            continue  # "Dr. Who", "J. R. R. Tolkien": not an end
        spans.append((start, m.end()))
        start = m.end()
    spans.append((start, len(text)))
    return [(a + len(text[a:b]) - len(text[a:b].lstrip()), b - (len(text[a:b]) - len(text[a:b].rstrip())))
            for a, b in spans if text[a:b].strip()]


def clean(text: str) -> str:
    """One TSV field: no tabs or line breaks (the sample is read with quoting off, as GLUE's files are)."""
    return " ".join(text.split())


def pairs(article: dict, rng: random.Random) -> tuple[list, list]:
    """(entailment pairs, not_entailment pairs) of an article's answerable questions: (question, sentence)."""
    yes, no = [], []
    for paragraph in article["paragraphs"]:
        context = paragraph["context"]
        spans = sentences(context)
        for qa in paragraph["qas"]:
            if qa.get("is_impossible") or not qa["answers"]:
                continue
            answers = [(a["answer_start"], a["answer_start"] + len(a["text"]), a["text"]) for a in qa["answers"]]
            first_start, first_end, _ = answers[0]
            holding = [s for s in spans if s[0] <= first_start and first_end <= s[1]]
            if not holding:  # the answer crosses a sentence boundary (a splitter miss): skip the question
                continue
            yes.append((qa["question"], context[slice(*holding[0])]))
            others = [s for s in spans if not any(a < s[1] and s[0] < b or answer in context[s[0]:s[1]]
                                                  for a, b, answer in answers)]
            if others:
                no.append((qa["question"], context[slice(*rng.choice(others))]))
    return yes, no


def sample(articles: list[dict], n: int, rng: random.Random) -> list[tuple[str, str, str]]:
    """n (question, sentence, label) rows, half of each label, in a shuffled order."""
    found = [pairs(article, rng) for article in articles]
    yes, no = [p for y, _ in found for p in y], [p for _, n in found for p in n]
    half = n // 2
    rows = [(q, s, "entailment") for q, s in rng.sample(yes, half)] + \
           [(q, s, "not_entailment") for q, s in rng.sample(no, n - half)]
    rng.shuffle(rows)
    return rows


def write_tsv(path: Path, rows: list[tuple[str, str, str]]) -> None:
    lines = ["index\tquestion\tsentence\tlabel"] + [f"{i}\t{clean(q)}\t{clean(s)}\t{label}"
                                                    for i, (q, s, label) in enumerate(rows)]
    write_atomic(path, "\n".join(lines) + "\n")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("squad", nargs="?", type=Path, help="SQuAD 2.0 dev-v2.0.json (default: fetched into the cache)")
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "samples" / "qnli_squad")
    p.add_argument("--train-rows", type=int, default=1000)
    p.add_argument("--dev-rows", type=int, default=500)
    p.add_argument("--dev-articles", type=float, default=0.3, help="share of the articles held out for dev.tsv")
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args(argv)
    articles = json.loads((args.squad or fetch_file("squad_v2_dev")).read_text())["data"]
    rng = random.Random(args.seed)
    order = rng.sample(range(len(articles)), len(articles))
    held = set(order[:round(args.dev_articles * len(articles))])
    train = sample([a for i, a in enumerate(articles) if i not in held], args.train_rows, rng)
    dev = sample([a for i, a in enumerate(articles) if i in held], args.dev_rows, rng)
    write_tsv(args.out / "train.tsv", train)
    write_tsv(args.out / "dev.tsv", dev)
    print(f"{args.out}: train.tsv {len(train)} pairs from {len(articles) - len(held)} articles, dev.tsv {len(dev)} "
          f"pairs from {len(held)} held-out articles")
    return 0


if __name__ == "__main__":
    sys.exit(main())
