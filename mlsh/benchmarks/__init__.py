"""Benchmark scripts that print their figures (``python -m mlsh.benchmarks.<name> --help``)."""


def cli_description(doc: str) -> str:
    """A script's ``--help`` text: its docstring's first paragraph, as a sentence (those that introduce an example
    end with a colon)."""
    first = doc.split("\n\n")[0].strip()
    return first[:-1] + "." if first.endswith(":") else first
