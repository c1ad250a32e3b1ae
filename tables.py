"""How numbers and tables look everywhere: the console, REPORT.md and the model card."""


def fmt(value, percent: bool = False) -> str:
    """A number as a table shows it: counts with thousands separators, scores to 4 places (SQuAD's percentages
    to 2), nothing as a dash."""
    if value is None:
        return "–"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:.2f}" if percent else f"{value:.4f}"


def markdown(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |" for r in rows]


def results_table(results: dict[str, dict], keys: list[str]) -> str:
    """One row per named result (e.g. before / zero-shot / after), one column per metric."""
    return "\n".join(markdown([""] + keys, [[name] + [fmt(m.get(k)) for k in keys] for name, m in results.items()]))


def print_row(row: dict, header: bool) -> None:
    """A per-epoch row on the console, under its header on the first epoch printed."""
    if header:
        print(" | ".join(f"{k:>10}" for k in row))
    print(" | ".join(f"{v:>10.4f}" if isinstance(v, float) else f"{fmt(v):>10}" for v in row.values()))
