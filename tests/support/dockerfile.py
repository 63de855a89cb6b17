"""deploy/Dockerfile read as data, for tests on a machine without a Docker engine.

Only what the tests need: continuation lines joined, comments dropped, instructions grouped by
stage, ARG defaults substituted in FROM, and the exec form (a JSON array) decoded."""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from tests.conftest import ROOT

DOCKERFILE = ROOT / "deploy" / "Dockerfile"


@dataclass(frozen=True)
class Instruction:
    keyword: str  # upper case
    args: str


@dataclass
class Stage:
    base: str  # the FROM image, ARGs substituted
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def args_of(self, keyword: str) -> list[str]:
        return [i.args for i in self.instructions if i.keyword == keyword]


def _logical_lines(text: str) -> list[str]:
    """Comment lines go (even inside a continued instruction, as Docker allows); a line ending
    in a backslash continues on the next."""
    lines, current = [], ""
    for raw in text.splitlines():
        if raw.lstrip().startswith("#"):
            continue
        if raw.rstrip().endswith("\\"):
            current += raw.rstrip()[:-1] + " "
            continue
        current += raw
        if current.strip():
            lines.append(current.strip())
        current = ""
    if current.strip():
        lines.append(current.strip())
    return lines


def parse(text: str) -> list[Stage]:
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in _logical_lines(text):
        keyword, _, rest = line.partition(" ")
        keyword, rest = keyword.upper(), rest.strip()
        if keyword == "ARG" and not stages:  # an ARG before the first FROM is usable in FROMs
            name, _, default = rest.partition("=")
            args[name] = default
        elif keyword == "FROM":
            words = rest.split()
            words = [w for w in words if not w.startswith("--")]  # --platform=...
            base = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], words[0])
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(base=base, name=name))
        else:
            assert stages, f"{keyword} before the first FROM"
            stages[-1].instructions.append(Instruction(keyword, rest))
    return stages


def load(path: Path = DOCKERFILE) -> list[Stage]:
    return parse(path.read_text())


def exec_form(args: str) -> list[str]:
    """An instruction's exec form (a JSON array of strings); the shell form is refused, since
    it needs a shell and hides the real command."""
    value = json.loads(args)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), args
    return value


def healthcheck_command(stage: Stage) -> list[str]:
    """The command of the stage's (last) HEALTHCHECK, options skipped."""
    checks = stage.args_of("HEALTHCHECK")
    assert checks, "no HEALTHCHECK"
    match = re.fullmatch(r"(?:--\S+\s+)*CMD\s+(.*)", checks[-1], re.DOTALL)
    assert match, checks[-1]
    return exec_form(match.group(1))


def healthcheck_options(stage: Stage) -> dict[str, str]:
    """The options of the stage's (last) HEALTHCHECK: {"interval": "10s", ...}."""
    options = re.findall(r"--([\w-]+)=(\S+)", stage.args_of("HEALTHCHECK")[-1].split("CMD")[0])
    return dict(options)


def run_words(stage: Stage) -> list[list[str]]:
    """Each RUN of the stage split into its `&&`-joined commands, each as shell words."""
    commands = []
    for run in stage.args_of("RUN"):
        for part in run.split("&&"):
            commands.append(shlex.split(part))
    return commands


def env(stage: Stage) -> dict[str, str]:
    """The variables the stage's ENV instructions set (the `KEY=value ...` form)."""
    values: dict[str, str] = {}
    for args in stage.args_of("ENV"):
        for word in shlex.split(args):
            key, sep, value = word.partition("=")
            assert sep, f"ENV {args}: use KEY=value"
            values[key] = value
    return values
