"""WordNet for METEOR, offline.

    python -m metrics.wordnet install   # used by `make setup` and CI
    python -m metrics.wordnet check     # exit 0 iff nltk's METEOR works with WordNet

install: nothing to do if nltk already has a working WordNet; else nltk.download; else copy
Debian's WordNet 3.0 (packages wordnet-base and wordnet-sense-index, in /usr/share/wordnet)
into <sys.prefix>/nltk_data, where nltk looks by itself; else print the commands that
install it and exit 1.
"""
import contextlib
import functools
import io
import os
import shutil
import socket
import sys
import tempfile
import warnings
from pathlib import Path

import nltk
from nltk.corpus.reader.wordnet import WordNetCorpusReader

from metrics import CliParser

DEBIAN_DIR = Path("/usr/share/wordnet")
INSTALL_DIR = Path(sys.prefix) / "nltk_data" / "corpora" / "wordnet"
HOW_TO_INSTALL = "install it with `make setup` or `python -m metrics.wordnet install`"
MANUAL_STEPS = """WordNet could not be installed. Either, with internet:
    python -c "import nltk; nltk.download('wordnet')"
or offline from Debian's packages:
    apt-get update && apt-get install -y wordnet-base wordnet-sense-index && python -m metrics.wordnet install"""

# The lexicographer files in file-number order, from lexnames(5WN). nltk needs the
# `lexnames` table (NN<TAB>name<TAB>category) and Debian's packages leave it out.
LEXNAMES = """adj.all adj.pert adv.all noun.Tops noun.act noun.animal noun.artifact
noun.attribute noun.body noun.cognition noun.communication noun.event noun.feeling noun.food
noun.group noun.location noun.motive noun.object noun.person noun.phenomenon noun.plant
noun.possession noun.process noun.quantity noun.relation noun.shape noun.state noun.substance
noun.time verb.body verb.change verb.cognition verb.communication verb.competition
verb.consumption verb.contact verb.creation verb.emotion verb.motion verb.perception
verb.possession verb.social verb.stative verb.weather adj.ppl""".split()
CATEGORY = {"noun": 1, "verb": 2, "adj": 3, "adv": 4}

# nltk's documented METEOR example (nltk.translate.meteor_score), tokenised with .split()
EXAMPLE_HYPOTHESIS = "It is a guide to action which ensures that the military always obeys the commands of the party"
EXAMPLE_REFERENCE = "It is a guide to action that ensures that the military will forever heed Party commands"
EXAMPLE_SCORE = 0.6944


class WordNetMissing(RuntimeError):
    pass


class EnglishWordNet(WordNetCorpusReader):
    """nltk's reader without the multilingual (OMW) part, which METEOR never uses. Skipping its
    sense-key map (index.sense read twice, half of the ~3 s load) changes no English lookup."""

    def map_wn(self, version="wordnet"):
        return None


def load() -> EnglishWordNet:
    """The WordNet that nltk finds, or WordNetMissing saying how to install it."""
    return _load(tuple(nltk.data.path))


@functools.cache  # keyed on the search path, so a changed nltk.data.path is searched anew
def _load(search_path: tuple[str, ...]) -> EnglishWordNet:
    try:
        root = nltk.data.find("corpora/wordnet", paths=list(search_path))
    except LookupError:
        raise WordNetMissing(f"METEOR needs WordNet, which nltk cannot find; {HOW_TO_INSTALL}") from None
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "The multilingual functions are not available")
            return EnglishWordNet(root, omw_reader=None)
    except (OSError, LookupError, ValueError, AssertionError) as e:
        raise WordNetMissing(f"WordNet at {root} is incomplete ({e}); {HOW_TO_INSTALL}") from None


def lexnames_table() -> str:
    return "".join(f"{i:02d}\t{name}\t{CATEGORY[name.split('.')[0]]}\n" for i, name in enumerate(LEXNAMES))


def check() -> float:
    """nltk's METEOR on its documented example, with nltk's own default WordNet reader;
    WordNetMissing if that fails or gives another number."""
    from nltk.translate.meteor_score import meteor_score
    load()  # the clear error when there is no WordNet at all
    try:
        score = meteor_score([EXAMPLE_REFERENCE.split()], EXAMPLE_HYPOTHESIS.split())
    except OSError as e:  # e.g. no index.sense: copied from Debian without wordnet-sense-index
        raise WordNetMissing(f"nltk cannot read its WordNet ({e}); on Debian `apt-get install -y "
                             "wordnet-sense-index`, then `python -m metrics.wordnet install`") from None
    if round(score, 4) != EXAMPLE_SCORE:
        raise WordNetMissing(f"METEOR of nltk's example is {score:.4f}, not {EXAMPLE_SCORE}: WordNet looks wrong; {HOW_TO_INSTALL}")
    return score


def problem() -> str | None:
    """Why nltk's METEOR cannot use WordNet here, or None if it can."""
    try:
        check()
        return None
    except WordNetMissing as e:
        return str(e)


def try_download() -> None:
    """nltk.download, quietly and briefly: without internet it fails fast, and noisily."""
    timeout = socket.getdefaulttimeout()
    socket.setdefaulttimeout(20)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            nltk.download("wordnet", download_dir=str(INSTALL_DIR.parent.parent), quiet=True,
                          raise_on_error=False, print_error_to=io.StringIO())
    finally:
        socket.setdefaulttimeout(timeout)


def copy_debian(src: Path, dest: Path) -> None:
    """Copy the database files (nltk refuses symlinks out of its data dirs) and add lexnames.
    Built in a temp dir beside dest, then renamed into place, so dest is never half-written."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".wordnet-", dir=dest.parent))
    try:
        for f in src.iterdir():
            if f.is_file():
                shutil.copyfile(f, tmp / f.name)
        (tmp / "lexnames").write_text(lexnames_table())
        tmp.chmod(0o755)
        if dest.exists():  # a broken earlier install: it failed the check that brought us here
            shutil.rmtree(dest)
        os.replace(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def install() -> int:
    if problem() is None:
        print(f"WordNet already available: {load().root}")
        return 0
    try_download()
    if problem() and DEBIAN_DIR.is_dir():
        print(f"nltk.download('wordnet') failed; copying {DEBIAN_DIR} to {INSTALL_DIR}", flush=True)
        copy_debian(DEBIAN_DIR, INSTALL_DIR)
    why = problem()
    if why is None:
        print(f"WordNet installed: {load().root}; METEOR of nltk's example = {EXAMPLE_SCORE}")
        return 0
    print(f"error: {why}\n{MANUAL_STEPS}", file=sys.stderr)
    return 1


def main(argv: list[str] | None = None) -> int:
    parser = CliParser(prog="python -m metrics.wordnet", description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=["install", "check"])
    if parser.parse_args(argv).command == "install":
        return install()
    try:
        print(f"WordNet OK: {load().root}; METEOR of nltk's example = {check():.4f}")
        return 0
    except WordNetMissing as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
