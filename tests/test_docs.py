"""Every code block of the documentation is checked, and the README's example is run.

Python blocks must be whole programs: no undefined names, no unused imports, and they execute.
Console blocks must name real commands: ``ambrosia-edge`` subcommands and flags are parsed by
the real parser, ``python -m`` modules must exist and take the flags shown, ``pip install``
extras must exist in pyproject.toml. Text blocks are output and are not checked, except the
README's, which the run-through compares with what the example really prints.

A block that is deliberately not runnable follows a ``<!-- not-run: reason -->`` line.
"""

from __future__ import annotations

import builtins
import importlib.util
import os
import re
import shlex
import signal
import subprocess
import symtable
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest
from support import REPO, free_port, wait_for

from ambrosia_edge.cli import build_parser

DOCS = sorted(
    [REPO / "README.md", *REPO.glob("docs/*.md"), *REPO.glob("examples/**/*.md")],
    key=lambda path: str(path),
)
NOT_RUN = re.compile(r"<!--\s*not-run:\s*\S.*-->")
#: a shell prompt: ``$ ``, with a user@host and a virtualenv in front as on a Raspberry Pi
PROMPT = re.compile(r"^(?:\([\w.-]+\) )?(?:[\w.-]+@[\w.-]+:\S* )?\$ ")
#: programs the docs may run besides ambrosia-edge, python and pip, and why they are known
OTHER_PROGRAMS = {
    "pytest": "the test suite",
    "kill": "stopping a process",
    "pgrep": "finding a process",
    "rm": "removing a log",
    "export": "shell built-in",
    ".": "shell built-in",
    "npm": "installing Restate for the benchmarks",
    "mosquitto": "the MQTT broker (docs/mqtt.md)",
    "curl": "sending an impulse through the web page (docs/ui.md)",
    "sudo": "setting a Raspberry Pi up as a service (examples/raspberry_pi)",
    "journalctl": "a service's log lines (examples/raspberry_pi)",
    "openssl": "making a deployment's CA and certificates (docs/security.md)",
    "chmod": "keeping a key readable by its owner only (docs/security.md)",
}
EXTRAS = set(
    tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
)


@dataclass
class Block:
    doc: Path
    line: int
    lang: str
    text: str
    not_run: bool

    @property
    def where(self) -> str:
        return f"{self.doc.relative_to(REPO)}:{self.line}"


def blocks(doc: Path) -> list[Block]:
    found: list[Block] = []
    lines = doc.read_text().splitlines()
    i = 0
    while i < len(lines):
        fence = re.match(r"^(`{3,})(\S*)", lines[i])
        if not fence:
            i += 1
            continue
        before = next((line for line in reversed(lines[:i]) if line.strip()), "")
        end = i + 1
        while not lines[end].startswith(fence.group(1)):
            end += 1
        text = "\n".join(lines[i + 1 : end]) + "\n"
        found.append(Block(doc, i + 1, fence.group(2), text, bool(NOT_RUN.search(before))))
        i = end + 1
    return found


ALL = [block for doc in DOCS for block in blocks(doc)]
PYTHON = [b for b in ALL if b.lang == "python" and not b.not_run]
CONSOLE = [b for b in ALL if b.lang == "console" and not b.not_run]


def test_the_docs_have_blocks_and_few_are_excluded() -> None:
    assert {d.name for d in DOCS} >= {"README.md", "guide.md", "protocol.md", "benchmarks.md"}
    assert len(PYTHON) >= 3 and len(CONSOLE) >= 10
    assert sum(b.not_run for b in ALL) <= 3, [b.where for b in ALL if b.not_run]


# ---------------------------------------------------------------------------------------------
# Python


def _tables(table: symtable.SymbolTable) -> list[symtable.SymbolTable]:
    return [table, *(t for child in table.get_children() for t in _tables(child))]


def name_problems(source: str, filename: str) -> list[str]:
    """Undefined global names and unused imports, as pyflakes would report them."""
    top = symtable.symtable(source, filename, "exec")
    defined = {
        s.get_name()
        for s in top.get_symbols()
        if s.is_assigned() or s.is_imported() or s.is_namespace()
    }
    used: set[str] = set()
    for table in _tables(top):
        for symbol in table.get_symbols():
            if symbol.is_referenced() and (symbol.is_global() or symbol.is_free()):
                used.add(symbol.get_name())
    problems = [f"undefined name {n!r}" for n in sorted(used - defined - set(dir(builtins)))]
    imported = {s.get_name() for s in top.get_symbols() if s.is_imported()}
    problems += [f"{n!r} imported but unused" for n in sorted(imported - used - {"annotations"})]
    return problems


def test_the_name_check_finds_what_it_should() -> None:
    source = "import os\nimport time\nasync def f():\n    time.sleep(1)\n    await anyio.sleep(1)\n"
    assert name_problems(source, "x") == ["undefined name 'anyio'", "'os' imported but unused"]


@pytest.mark.parametrize("block", PYTHON, ids=lambda b: b.where)
def test_python_blocks_are_whole_programs_that_run(block: Block) -> None:
    assert name_problems(block.text, block.where) == [], block.where
    namespace: dict[str, object] = {"__name__": "doc_block"}
    exec(compile(block.text, block.where, "exec"), namespace)


# ---------------------------------------------------------------------------------------------
# Console


def commands(block: Block) -> list[str]:
    """The commands of a console block: the prompted lines, or every line without prompts."""
    text = re.sub(r"\\\n\s*", " ", block.text)  # continuation lines
    lines = [line for line in text.splitlines() if line.strip()]
    prompted = [PROMPT.sub("", line) for line in lines if PROMPT.match(line)]
    return prompted or lines


def simple_commands(command: str) -> list[list[str]]:
    """The simple commands of a shell line: split at ``&&``, ``;``, ``|``, ``&`` and ``$(...)``."""
    inner = re.findall(r"\$\(([^)]*)\)", command)
    command = re.sub(r"\$\([^)]*\)", "PID", command)
    lexer = shlex.shlex(command, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    lexer.commenters = "#"
    found: list[list[str]] = [[]]
    for token in lexer:
        if token in ("&&", ";", "|", "&", "||"):
            found.append([])
        else:
            found[-1].append(token)
    for each in inner:
        found += simple_commands(each)
    return [words for words in found if words]


def check_ambrosia_edge(args: list[str]) -> None:
    try:
        build_parser().parse_args(args)
    except SystemExit as exc:
        assert exc.code == 0, f"ambrosia-edge {shlex.join(args)}: not a valid command line"


def module_flags(module: str) -> set[str]:
    done = subprocess.run(
        [sys.executable, "-m", module, "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        check=False,
    )
    assert done.returncode == 0, f"python -m {module} --help: {done.stderr}"
    return set(re.findall(r"--[\w-]+", done.stdout))


def check_command(words: list[str], here: Path = REPO) -> None:
    while words and re.match(r"^\w+=", words[0]):  # VAR=value before the program
        words = words[1:]
    program, args = words[0], words[1:]
    if program == "ambrosia-edge":
        check_ambrosia_edge(args)
    elif program in ("python", "python3") and args[:1] == ["-m"]:
        module, rest = args[1], args[2:]
        if module == "ambrosia_edge":
            check_ambrosia_edge(rest)
        elif module == "venv":
            pass
        else:
            package = module.split(".")[0]
            assert importlib.util.find_spec(package) or (REPO / package).is_dir(), words
            flags = {arg for arg in rest if arg.startswith("--")}
            assert flags <= module_flags(module), f"python -m {module}: unknown {flags}"
    elif program in ("python", "python3") and args[:1] and args[0].endswith(".py"):
        assert (here / args[0]).is_file(), f"{args[0]} is not beside the document"
    elif program in ("pip", "pip3"):
        assert args[:1] == ["install"], words
        for spec in args[1:]:
            extras = re.match(r"^(?:\.|ambrosia-edge)\[(.*)\]$", spec)
            if extras:
                unknown = set(extras.group(1).split(",")) - EXTRAS
                assert not unknown, f"pip install {spec}: no extra {unknown} in pyproject.toml"
    else:
        assert program in OTHER_PROGRAMS, f"unknown program {program!r} (add it if it is real)"


@pytest.mark.parametrize("block", CONSOLE, ids=lambda b: b.where)
def test_console_blocks_name_real_commands(block: Block) -> None:
    found = [words for command in commands(block) for words in simple_commands(command)]
    assert found, block.where
    for words in found:
        check_command(words, block.doc.parent)


def test_the_console_check_refuses_what_it_should() -> None:
    for wrong in (
        ["ambrosia-edge", "run", "a.py:A", "--no-such-flag"],
        ["ambrosia-edge", "no-such-command"],
        ["pip", "install", ".[no-such-extra]"],
        ["no-such-program"],
    ):
        with pytest.raises(AssertionError):
            check_command(wrong)


# ---------------------------------------------------------------------------------------------
# the README's example, run as it says


def test_the_readme_example_prints_what_the_readme_shows(tmp_path: Path) -> None:
    readme = blocks(REPO / "README.md")
    program = next(b for b in readme if b.lang == "python" and b.text.startswith("# counter.py"))
    (tmp_path / "counter.py").write_text(program.text)
    runs = [b for b in readme if b.lang == "console" and "counter.py:" in b.text]
    (server_cmd,) = (c for b in runs for c in commands(b) if "counter.py:Counter" in c)
    (client_cmd,) = (c for b in runs for c in commands(b) if "counter.py:Client" in c)
    (client_block,) = (b for b in runs if "counter.py:Client" in b.text)
    shown = [line for line in client_block.text.splitlines() if not PROMPT.match(line)]

    ports = {7001: free_port(), 7002: free_port()}
    state = tmp_path / "state"
    home_state = "/home/me/.local/state"
    env = dict(os.environ, XDG_STATE_HOME=str(state), PYTHONUNBUFFERED="1")
    env.pop("AMBROSIA_EDGE_SECRET", None)

    def argv(command: str) -> list[str]:
        words = simple_commands(command)[0]  # without a trailing ``&``
        assert words[0] == "ambrosia-edge"
        args = [re.sub(r"(?<=:)700[12]\b", lambda m: str(ports[int(m[0])]), w) for w in words]
        # a checkpoint every few steps, so a client that cannot be checkpointed shows
        return [sys.executable, "-m", "ambrosia_edge", *args[1:], "--checkpoint-bytes", "4KiB"]

    def expected(line: str) -> str:
        line = line.replace(home_state, str(state))
        for shown_port, port in ports.items():
            line = line.replace(f":{shown_port}", f":{port}")
        return re.sub(r"in \d+\.\d\d s", "in N s", line)

    def printed() -> list[str]:
        text = (tmp_path / "client.out").read_text()
        return [re.sub(r"in \d+\.\d\d s", "in N s", line) for line in text.splitlines()]

    procs: list[subprocess.Popen[bytes]] = []
    try:
        for name, command in (("server", server_cmd), ("client", client_cmd)):
            with (tmp_path / f"{name}.out").open("wb") as out:
                procs.append(
                    subprocess.Popen(
                        argv(command), cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT
                    )
                )
            if name == "server":
                wait_for(
                    lambda: "listening on" in (tmp_path / "server.out").read_text(),
                    30,
                    "the server to listen",
                    lambda: (tmp_path / "server.out").read_text(),
                )
        wait_for(
            lambda: expected(shown[-1]) in printed(),
            30,
            "the client's last line",
            lambda: (tmp_path / "client.out").read_text(),
        )
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            proc.wait(30)
    seen = printed()
    # what the small --checkpoint-bytes adds: checkpoints after the first, each maybe after a
    # step had to finish first (a continuation that awaits calls is checkpointed between steps)
    extra = re.compile(r"ambrosia-edge: client: checkpoint (?!1 written)(\d+ written|postponed).*")
    written = [line for line in seen if extra.fullmatch(line) and "written" in line]
    assert len(written) >= 2, "the client cannot be checkpointed while it works"
    seen = [line for line in seen if not extra.fullmatch(line)]
    assert seen.pop() == f"ambrosia-edge: client: stopping (signal {signal.SIGTERM})"
    want = [expected(line) for line in shown]
    # the first checkpoint and the connection are concurrent: either may be logged first
    assert seen[0] == want[0] and sorted(seen[1:3]) == sorted(want[1:3]) and seen[3:] == want[3:]
