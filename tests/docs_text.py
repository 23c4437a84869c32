"""What the tests read out of the documentation: README.md and the site's pages, docs/*.md.

One reader for all of them, so a test runs the line a user reads, not a copy of it:

* ``shell_blocks(page)``: the fenced ```` ```sh ```` blocks of a page, the command lines a user types
  (other fences, untagged or ``text``, are output, layouts and synopses). ``commands(page, prefix)``:
  the lines of those blocks that start with ``prefix``, comments cut off; a test that runs a
  documented line takes it from here, and tests/test_docs.py checks that every line of every ``sh``
  block is taken by some test (it reads the tests' calls of ``commands``).
* ``exit_codes()`` and ``exit_codes_by_subcommand()``: the table and the "By subcommand" line of
  docs/exit-codes.md, the one place the exit codes are written down for users.
"""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
EXIT_CODES_PAGE = "docs/exit-codes.md"
_FENCE = re.compile(r"^(?P<indent> *)(?P<fence>`{3,})(?P<lang>[\w+-]*)[^\n]*\n(?P<body>.*?)^(?P=indent)(?P=fence)\s*$",
                    re.M | re.S)


def pages() -> list[str]:
    """README.md and every page of the site, as paths relative to the checkout."""
    return ["README.md", *sorted(p.relative_to(ROOT).as_posix() for p in DOCS.glob("*.md"))]


def read(page: str) -> str:
    return (ROOT / page).read_text(encoding="utf-8")


def section(page: str, name: str) -> str:
    """The text between ``<!-- --8<-- [start:name] -->`` and its end marker (the section that
    pymdownx.snippets includes into another page: README.md's walkthrough into docs/getting-started.md)."""
    text = read(page)
    start, end = f"<!-- --8<-- [start:{name}] -->", f"<!-- --8<-- [end:{name}] -->"
    assert text.count(start) == 1 and text.count(end) == 1, f"{page} lacks the section markers of {name!r}"
    return text[text.index(start) + len(start):text.index(end)]


def section_blocks(page: str, name: str) -> list[str]:
    """The ```sh blocks of a marked section (``section``), in order."""
    return _sh_bodies(section(page, name))


def walkthrough_blocks() -> list[str]:
    """README.md's five-minute walkthrough: its ```sh blocks, in order (tests/test_walkthrough.py runs them)."""
    return section_blocks("README.md", "walkthrough")


def shell_blocks(page: str) -> list[str]:
    """The bodies of the page's ```sh blocks, in order, indentation of the fence removed."""
    return _sh_bodies(read(page))


def _sh_bodies(text: str) -> list[str]:
    blocks = []
    for m in _FENCE.finditer(text):
        if m.group("lang") == "sh":
            indent = len(m.group("indent"))
            blocks.append("".join(line[indent:] for line in m.group("body").splitlines(keepends=True)))
    return blocks


def _strip_comment(line: str) -> str:
    """``line`` without a trailing `` # comment`` (a ``#`` inside quotes stays)."""
    quote = ""
    for i, ch in enumerate(line):
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1] in " \t"):
            return line[:i].rstrip()
    return line.rstrip()


def shell_lines(page: str) -> list[str]:
    """Every command line of the page's ```sh blocks: comments cut, heredoc bodies left out
    (they belong to the line that opens them), backslash continuations joined."""
    return block_lines(shell_blocks(page))


def block_lines(blocks: list[str]) -> list[str]:
    """The command lines of shell blocks (as ``shell_lines``)."""
    lines: list[str] = []
    for block in blocks:
        heredoc = ""
        pending = ""
        for raw in block.splitlines():
            if heredoc:
                if raw.strip() == heredoc:
                    heredoc = ""
                continue
            line = pending + _strip_comment(raw)
            if line.endswith("\\"):
                pending = line[:-1] + " "
                continue
            pending = ""
            if line.strip():
                lines.append(line.strip())
            m = re.search(r"<<-?\s*'?\"?(\w+)'?\"?", line)
            if m:
                heredoc = m.group(1)
    return lines


def commands(page: str, prefix: str) -> list[str]:
    """The command lines of ``page``'s ```sh blocks that start with ``prefix``; at least one."""
    found = [line for line in shell_lines(page) if line.startswith(prefix)]
    assert found, f"{page} shows no command line starting with {prefix!r}"
    return found


def command(page: str, prefix: str) -> str:
    """The one command line of ``page`` starting with ``prefix``."""
    (line,) = commands(page, prefix)
    return line


def _table_rows(text: str, header: str) -> list[list[str]]:
    """The body rows of the Markdown table whose header line is ``header``."""
    lines = text.splitlines()
    start = lines.index(header)
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    return rows


def exit_codes(page: str = EXIT_CODES_PAGE) -> dict[int, str]:
    """docs/exit-codes.md's table: code -> meaning."""
    return {int(code): meaning for code, meaning, *_ in _table_rows(read(page), "| code | meaning |")}


def exit_codes_by_subcommand(page: str = EXIT_CODES_PAGE) -> dict[str, set[int]]:
    """docs/exit-codes.md's "By subcommand" line: ``the build 0, 2, 3; `merge` 0, 2, 5, 7; ...``
    -> {"build": {0, 2, 3}, "merge": {0, 2, 5, 7}, ...}; "`ci-matrix` and `schema` 0, 2" gives both."""
    text = read(page)
    para = text[text.index("By subcommand:"):].split("\n\n")[0]
    para = " ".join(para.split())[len("By subcommand:"):].split(".")[0]
    found: dict[str, set[int]] = {}
    for part in para.split(";"):
        m = re.fullmatch(r"\s*(.+?)\s+((?:\d+,\s*)*\d+)\s*", part)
        assert m, f"{page}: cannot read {part!r} of the 'By subcommand' line"
        codes = {int(c) for c in m.group(2).split(",")}
        for name in re.split(r"\s+and\s+", m.group(1)):
            name = name.strip().strip("`")
            found["build" if name == "the build" else name] = codes
    return found
