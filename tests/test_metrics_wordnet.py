"""metrics.wordnet: the lexnames table, the atomic Debian copy, and install's fallbacks."""
from pathlib import Path

from metrics import wordnet


def test_lexnames_table_follows_lexnames_5wn():
    rows = wordnet.lexnames_table().splitlines()
    assert len(rows) == 45
    assert rows[0] == "00\tadj.all\t3" and rows[3] == "03\tnoun.Tops\t1" and rows[44] == "44\tadj.ppl\t3"
    assert rows[29] == "29\tverb.body\t2" and rows[2] == "02\tadv.all\t4"
    # the installed WordNet's own table (nltk.download's, or ours) says the same
    assert wordnet.load()._lexnames == wordnet.LEXNAMES


def test_copy_debian_copies_files_adds_lexnames_and_replaces_a_broken_install(tmp_path):
    src, dest = tmp_path / "debian", tmp_path / "nltk_data" / "corpora" / "wordnet"
    src.mkdir()
    (src / "data.noun").write_text("nouns")
    (src / "bin").mkdir()  # Debian's subfolders are not database files
    dest.mkdir(parents=True)
    (dest / "stale").write_text("from a broken install")
    wordnet.copy_debian(src, dest)
    assert sorted(p.name for p in dest.iterdir()) == ["data.noun", "lexnames"]
    assert not (dest / "data.noun").is_symlink() and (dest / "data.noun").read_text() == "nouns"
    assert (dest / "lexnames").read_text() == wordnet.lexnames_table()
    assert [p.name for p in dest.parent.iterdir()] == ["wordnet"]  # no temp dir left


def test_check_and_install_when_present(capsys):
    assert wordnet.main(["check"]) == 0
    assert "METEOR of nltk's example = 0.6944" in capsys.readouterr().out
    assert wordnet.install() == 0
    assert "already available" in capsys.readouterr().out


def test_install_prints_the_commands_when_nothing_works(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(wordnet, "problem", lambda: "METEOR needs WordNet, which nltk cannot find")
    monkeypatch.setattr(wordnet, "try_download", lambda: None)
    monkeypatch.setattr(wordnet, "DEBIAN_DIR", Path(tmp_path / "absent"))
    assert wordnet.install() == 1
    err = capsys.readouterr().err
    assert err.startswith("error: METEOR needs WordNet")
    assert "nltk.download('wordnet')" in err and "apt-get install -y wordnet-base wordnet-sense-index" in err
