"""README.md and docs/*.md stay honest: every `make TARGET`, every `python SCRIPT.py --flag` / `python -m MODULE --flag`
in their shell code blocks exists (the flag in the parser that script builds), and every relative link resolves."""
import argparse
import importlib
import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.M | re.S)
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
FLAG = re.compile(r"--[a-z][a-z0-9-]*")


def commands(page: Path) -> list[str]:
    """The command lines of the page's shell blocks (unmarked, bash or sh), continuations joined, comments cut."""
    out = []
    for lang, body in FENCE.findall(page.read_text(encoding="utf-8")):
        if lang not in ("", "bash", "sh"):
            continue
        for line in body.replace("\\\n", " ").splitlines():
            line = line.split(" #", 1)[0].strip()
            if line and not line.startswith("#"):
                out.extend(part.strip() for part in re.split(r"\||&&|;", line))
    return out


def make_targets() -> set[str]:
    return set(re.findall(r"^([\w.-]+):(?!=)", (ROOT / "Makefile").read_text(), re.M))


class Built(Exception):
    def __init__(self, parser):
        self.parser = parser


def flags_of(module_name: str, monkeypatch) -> set[str]:
    """Every option string of the parser the module builds (its subcommands' too), caught as it starts parsing."""
    module = importlib.import_module(module_name)

    def caught(self, *args, **kwargs):
        raise Built(self)
    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", caught)
    with pytest.raises(Built) as built:
        (getattr(module, "parse_args", None) or module.main)([])
    monkeypatch.undo()
    found, parsers = set(), [built.value.parser]
    while parsers:
        for action in parsers.pop()._actions:
            found.update(action.option_strings)
            if isinstance(action, argparse._SubParsersAction):
                parsers.extend(action.choices.values())
    return found


def script_calls(line: str) -> tuple[str, list[str]] | None:
    """(module name, the flags given to it) for a line that runs one of this project's scripts, else None."""
    words = shlex.split(line.replace("...", ""))
    for i, word in enumerate(words):
        if word == "-m" and i + 1 < len(words) and words[i - 1].endswith("python"):
            name, rest = words[i + 1], words[i + 2:]
        elif word.endswith(".py") and (i == 0 or words[0] in ("python", "torchrun")):
            name, rest = word.removesuffix(".py").replace("/", "."), words[i + 1:]
        else:
            continue
        path = ROOT / name.replace(".", "/")
        if not (path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()):
            return None  # pip, pytest and the like: not this project's
        # a flag is a word that starts with one, maybe in brackets ([--out FILE]: optional), up to any "=value"
        return name, [f for w in rest if w.lstrip("[").startswith("-") for f in FLAG.findall(w)[:1]]
    return None


def test_make_targets_exist():
    targets = make_targets()
    for page in PAGES:
        for line in commands(page):
            words = line.split()
            if words and words[0] == "make":
                missing = [w for w in words[1:] if "=" not in w and not w.startswith("-") and w not in targets]
                assert not missing, f"{page.name}: `{line}` names no Makefile target {missing}"


def test_script_flags_exist(monkeypatch):
    cache: dict[str, set[str]] = {}
    checked = 0
    for page in PAGES:
        for line in commands(page):
            if (call := script_calls(line)) is None:
                continue
            name, given = call
            if given and name not in cache:
                cache[name] = flags_of(name, monkeypatch)
            unknown = [f for f in given if f not in cache.get(name, ())]
            assert not unknown, f"{page.name}: `{line}`: {name} has no flag {unknown}"
            checked += len(given)
    assert checked > 20  # the pages do name flags: a parser that found none would pass vacuously


def test_relative_links_resolve():
    for page in PAGES:
        for target in LINK.findall(page.read_text(encoding="utf-8")):
            if re.match(r"[a-z]+:", target) or target.startswith("#"):
                continue
            assert (page.parent / target.split("#")[0]).exists(), f"{page.name}: link {target} resolves to nothing"


def test_the_checks_see_a_wrong_name(tmp_path, monkeypatch):
    """The parsers above catch what they are for: an unknown target, flag or link is found."""
    assert "demo" in make_targets() and "no-such-target" not in make_targets()
    name, given = script_calls("python train_cls.py --epochs 3 --no-such-flag")
    assert name == "train_cls" and "--no-such-flag" not in flags_of(name, monkeypatch) and "--epochs" in given
    assert script_calls("python -m metrics.squad p.json --na-prob-file=n [--out x]") == ("metrics.squad", [
        "--na-prob-file", "--out"])
    assert script_calls("pip install -r requirements.txt") is None
