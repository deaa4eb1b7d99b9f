"""Optional py-spy sampling of the bridge during the measured window.

``py-spy record --format raw`` writes collapsed stacks, one line per distinct
stack: ``frame;frame;...;leaf count`` with frames like ``func (path:line)``.
From those we report where the time is spent:

* **self**: the leaf frame (what was on CPU), by function and line;
* **inclusive**: every function on the stack (each counted once per sample),
  for our own code (``bridge/``) only, to see which of our steps cost what.

py-spy runs ``--nonblocking`` (on the harness CPU): it does not pause the
bridge, but some stacks come out torn (read while the interpreter changed
them; they lack the outer frames). Their leaf is still right, so self time
counts them; inclusive time does not, and undercounts by their share (shown).
Blocking mode has no torn stacks but slowed the bridge by ~15 % here and
skewed the profile (19 % self in aiokafka's ``get_running_loop``, a 0.25 µs
call), so it is not used. A profiled run's figures are still not the
benchmark's.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from bench._procs import pin_process

_ENTRY = ("_run_module_as_main", "<module>")
_FRAME = re.compile(r"^(?P<func>.*?) \((?P<path>.*?)(?::(?P<line>\d+))?\)$")


def py_spy() -> str | None:
    """The py-spy executable next to our interpreter, or on PATH."""
    near = Path(sys.executable).with_name("py-spy")
    if near.exists():
        return str(near)
    return shutil.which("py-spy")


def start(
    pid: int, seconds: float, out: Path, cpus: frozenset[int]
) -> subprocess.Popen[bytes]:
    exe = py_spy()
    if exe is None:
        raise RuntimeError("py-spy not found: .venv/bin/python -m pip install py-spy")
    proc = subprocess.Popen(  # noqa: S603 - a fixed tool on our own child
        [
            exe,
            "record",
            "--pid",
            str(pid),
            "--duration",
            str(max(1, round(seconds))),
            "--rate",
            "200",
            "--nonblocking",
            "--format",
            "raw",
            "--output",
            str(out),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    pin_process(proc.pid, cpus)
    return proc


def short(path: str) -> str:
    """``.../site-packages/aiokafka/x.py`` -> ``aiokafka/x.py``; ours stay relative."""
    for marker in ("site-packages/", "/lib/python3"):
        if marker in path:
            tail = path.split(marker, 1)[1]
            return tail.split("/", 1)[1] if marker == "/lib/python3" else tail
    cwd = str(Path.cwd()) + "/"
    return path[len(cwd) :] if path.startswith(cwd) else path


def finish(proc: subprocess.Popen[bytes], out: Path) -> Hotspots | None:
    """Wait for py-spy to end its recording; analyse what it wrote."""
    try:
        _, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
    if not out.exists():
        print(f"py-spy wrote nothing: {err.decode(errors='replace')[-300:]}")
        return None
    return analyse(out)


@dataclass(frozen=True)
class Hotspots:
    samples: int
    torn: int  # samples whose stack lacks the entry point
    self_lines: list[tuple[str, int]]  # "func (file:line)", samples
    self_funcs: list[tuple[str, int]]  # "func (file)", samples
    ours_inclusive: list[tuple[str, int]]  # bridge/ functions, samples

    def render(self, top: int = 15) -> str:
        def block(title: str, rows: list[tuple[str, int]]) -> list[str]:
            lines = [title]
            lines += [
                f"  {n / self.samples:6.1%}  {name}"
                for name, n in rows[:top]
                if self.samples
            ]
            return lines

        torn = self.torn / self.samples if self.samples else 0.0
        out = [
            f"py-spy: {self.samples} samples of the bridge during the window "
            f"({torn:.0%} torn: counted in self time, missing from inclusive time)"
        ]
        out += block("self time by function:", self.self_funcs)
        out += block("self time by line:", self.self_lines)
        out += block("inclusive time, bridge/ code:", self.ours_inclusive)
        return "\n".join(out)


def analyse(collapsed: Path) -> Hotspots:
    by_line: Counter[str] = Counter()
    by_func: Counter[str] = Counter()
    ours: Counter[str] = Counter()
    total = torn = 0
    for raw in collapsed.read_text(errors="replace").splitlines():
        stack, _, count_text = raw.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = [f for f in stack.split(";") if f]
        if not frames:
            continue
        if not frames[0].startswith(_ENTRY):
            torn += count
        seen: set[str] = set()
        for i, frame in enumerate(frames):
            m = _FRAME.match(frame)
            func, path, line = (
                (m["func"], short(m["path"]), m["line"]) if m else (frame, "?", None)
            )
            if i == len(frames) - 1:
                by_line[f"{func} ({path}:{line})" if line else f"{func} ({path})"] += (
                    count
                )
                by_func[f"{func} ({path})"] += count
            if path.startswith("bridge/"):
                key = f"{func} ({path})"
                if key not in seen:
                    seen.add(key)
                    ours[key] += count
    return Hotspots(
        total, torn, by_line.most_common(), by_func.most_common(), ours.most_common()
    )
