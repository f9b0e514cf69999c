"""Compile and load the fastdp programs with bcc in a short-lived child; pin them; exit.

The router must not map bcc and LLVM (100+ MB of RSS for a compile done once), so
``loader.FastDatapath.load`` runs this module with the router's own interpreter::

    python -m weave_fdp.datapath.fastdp.compile --stage DIR --program NAME... [--cflag=FLAG...]

It compiles ``source.program_text()`` (or ``--source FILE``, for tests) with the
loader's flags, loads every named program (``NAME`` or ``NAME:xdp``; SCHED_CLS by
default), pins each program at
``DIR/progs/NAME`` and each map of the object at ``DIR/maps/NAME`` (maps the C code
pins itself under FDP_PIN_DIR are the same maps, pinned twice), prints one JSON
line and exits. The parent opens the pins with BPF_OBJ_GET, then removes ``DIR``.

The child inherits the parent's mount namespace, so it sees the same bpffs even
when the router runs under ``ip netns exec`` with a private /sys.

Output: ``{"programs": {name: path}, "maps": {name: path}, "seconds": s}`` or, on
failure, ``{"error": "compile"|"load"|"pin", "program": name|null, "message": str}``
(exit code 1). bcc and the verifier write their logs to stderr; the parent keeps
their tail for the error it raises.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import logging
import os
import secrets
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from weave_fdp.errors import DatapathError

log = logging.getLogger(__name__)

MODULE = "weave_fdp.datapath.fastdp.compile"
PROG_TYPES = {"sched_cls": "SCHED_CLS", "xdp": "XDP"}
STAGE_PREFIX = "_load-"       # bpffs refuses names with a dot
TIMEOUT_S = 300.0          # a slow machine compiles in tens of seconds; a hung clang is a bug
LOG_TAIL_LINES = 30        # of bcc's/the verifier's stderr kept on the error
PROBE_FIX = "run `weave-fdp probe` for what this kernel lacks"
COMPILE_FIX = "run `weave-fdp probe` (kernel headers? bcc?)"
PROJECT_ROOT = Path(__file__).resolve().parents[3]


# ---------------------------------------------------------------- parent side

@dataclass
class Loaded:
    """What the child left, opened in this process: fds by program and map name."""

    prog_fds: dict[str, int] = field(default_factory=dict)
    map_fds: dict[str, int] = field(default_factory=dict)
    child_seconds: float = 0.0

    def close(self) -> None:
        for fd in [*self.prog_fds.values(), *self.map_fds.values()]:
            try:
                os.close(fd)
            except OSError:
                pass
        self.prog_fds.clear()
        self.map_fds.clear()


def compile_and_open(programs: list[str], cflags: list[str], stage_root: Path, *,
                     timeout: float = TIMEOUT_S, source: Path | None = None) -> Loaded:
    """Run the compile child, open what it pinned (BPF_OBJ_GET), remove its pins.

    ``stage_root`` must be on the bpffs the child sees (it is spawned from this
    process, so it shares our mount namespace). Raises DatapathError naming the
    program and the fix; ``.log`` on it holds the tail of bcc's/the verifier's output.
    """
    from weave_fdp.datapath import bpf_syscall

    stage_root.mkdir(parents=True, exist_ok=True)
    sweep_stale(stage_root)
    stage = stage_root / f"{STAGE_PREFIX}{os.getpid()}-{secrets.token_hex(4)}"
    loaded = Loaded()
    try:
        result = _run_child(stage, programs, cflags, timeout, source)
        try:
            for name in programs:
                name = name.partition(":")[0]
                loaded.prog_fds[name] = bpf_syscall.obj_get(result["programs"][name])
            for name, path in result["maps"].items():
                loaded.map_fds[name] = bpf_syscall.obj_get(path)
        except (OSError, KeyError) as exc:
            raise DatapathError(f"cannot open the fastdp programs pinned under {stage}: {exc}",
                                fix="check that /sys/fs/bpf is a bpffs (mount -t bpf bpf /sys/fs/bpf)") from exc
        loaded.child_seconds = float(result.get("seconds", 0.0))
        return loaded
    except BaseException:
        loaded.close()
        raise
    finally:
        remove_stage(stage)


def _run_child(stage: Path, programs: list[str], cflags: list[str],
               timeout: float, source: Path | None = None) -> dict[str, Any]:
    argv = [sys.executable, "-m", MODULE, "--stage", str(stage),
            *[f"--program={p}" for p in programs], *[f"--cflag={f}" for f in cflags]]
    if source is not None:
        argv.append(f"--source={source}")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PROJECT_ROOT), env.get("PYTHONPATH", "")) if p)
    try:
        cp = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env,
                            stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:
        raise DatapathError(f"compiling the fastdp BPF programs took over {timeout:.0f} s",
                            fix=COMPILE_FIX) from exc
    except OSError as exc:
        raise DatapathError(f"cannot start the fastdp compiler ({sys.executable}): {exc}",
                            fix=COMPILE_FIX) from exc
    tail = "\n".join(cp.stderr.strip().splitlines()[-LOG_TAIL_LINES:])
    result = _last_json(cp.stdout)
    if result is None:
        err = DatapathError(f"the fastdp compiler process failed (exit {cp.returncode}): "
                            f"{_brief(tail) or 'no output'}", fix=COMPILE_FIX)
        err.log = tail  # type: ignore[attr-defined]
        raise err
    if "error" in result:
        raise _child_error(result, tail)
    return result


def _child_error(result: dict[str, Any], tail: str) -> DatapathError:
    kind, prog, msg = result.get("error"), result.get("program"), str(result.get("message", ""))
    if kind == "compile":
        err = DatapathError(f"cannot compile the fastdp BPF programs: {msg}: {_brief(tail)}", fix=COMPILE_FIX)
    elif kind == "load":
        err = DatapathError(f"the kernel refused BPF program {prog}: {msg}: {_brief(tail)}", fix=PROBE_FIX)
    else:
        err = DatapathError(f"cannot pin the fastdp {'program ' + prog if prog else 'maps'}: {msg}",
                            fix="check that /sys/fs/bpf is a bpffs (mount -t bpf bpf /sys/fs/bpf)")
    err.log = tail  # type: ignore[attr-defined]
    if tail:
        log.error("fastdp compiler output (tail):\n%s", tail)
    return err


def _brief(tail: str, lines: int = 3) -> str:
    """The last few meaningful lines of a log, on one line (the reason is usually there)."""
    keep = [ln.strip() for ln in tail.splitlines()
            if ln.strip() and not ln.startswith("processed ") and "HINT" not in ln]
    errors = [ln for ln in keep if ": error:" in ln]  # clang's diagnostics name file:line
    return " | ".join(errors[:2] if errors else keep[-lines:])


def _last_json(stdout: str) -> dict[str, Any] | None:
    for line in reversed(stdout.strip().splitlines()):
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if isinstance(obj, dict):
            return obj
    return None


def remove_stage(stage: Path) -> None:
    """Unlink every pin the child left under ``stage`` and the directories (idempotent)."""
    for sub in ("progs", "maps"):
        d = stage / sub
        if d.is_dir():
            for entry in d.iterdir():
                try:
                    entry.unlink()
                except FileNotFoundError:
                    pass
            _rmdir(d)
    _rmdir(stage)


def _rmdir(d: Path) -> None:
    try:
        d.rmdir()
    except FileNotFoundError:
        pass
    except OSError as exc:
        log.warning("cannot remove %s: %s", d, exc)


def sweep_stale(stage_root: Path) -> None:
    """Remove stage dirs of loads whose process died before cleaning up."""
    try:
        entries = [e for e in stage_root.iterdir() if e.name.startswith(STAGE_PREFIX)]
    except OSError:
        return
    for entry in entries:
        pid = entry.name[len(STAGE_PREFIX):].partition("-")[0]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            remove_stage(entry)


# ---------------------------------------------------------------- child side


def _emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def _table_names(bpf: Any) -> list[str]:
    """Every map of the compiled object (the Python binding has no list of them)."""
    from bcc import libbcc

    lib = libbcc.lib
    lib.bpf_num_tables.restype = ctypes.c_size_t
    lib.bpf_num_tables.argtypes = [ctypes.c_void_p]
    lib.bpf_table_name.restype = ctypes.c_char_p
    lib.bpf_table_name.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    return [lib.bpf_table_name(bpf.module, i).decode() for i in range(lib.bpf_num_tables(bpf.module))]


def build(stage: Path, programs: list[str], cflags: list[str], source: Path | None = None) -> dict[str, Any]:
    """Compile, load and pin; the JSON-able result (``error`` set on failure)."""
    from weave_fdp.datapath import bpf_syscall
    from weave_fdp.datapath.fastdp.source import program_text

    started = time.monotonic()
    try:
        from bcc import BPF, libbcc

        text = source.read_text() if source is not None else program_text()
        bpf = BPF(text=text.encode(), cflags=cflags)
    except Exception as exc:  # a compile error, a missing header, a broken bcc
        return {"error": "compile", "program": None, "message": f"{type(exc).__name__}: {exc}"}
    (stage / "progs").mkdir(parents=True, exist_ok=True)
    (stage / "maps").mkdir(parents=True, exist_ok=True)
    out: dict[str, Any] = {"programs": {}, "maps": {}}
    for spec in programs:
        name, _, kind = spec.partition(":")
        try:
            fd = bpf.load_func(name.encode(), getattr(BPF, PROG_TYPES[kind or "sched_cls"])).fd
        except Exception as exc:  # verifier refusal (log on stderr), unknown function
            return {"error": "load", "program": name, "message": str(exc)}
        path = stage / "progs" / name
        try:
            bpf_syscall.obj_pin(fd, str(path))
        except OSError as exc:
            return {"error": "pin", "program": name, "message": str(exc)}
        out["programs"][name] = str(path)
    for name in _table_names(bpf):
        path = stage / "maps" / name
        try:
            bpf_syscall.obj_pin(libbcc.lib.bpf_table_fd(bpf.module, name.encode()), str(path))
        except OSError as exc:
            return {"error": "pin", "program": None, "message": f"map {name}: {exc}"}
        out["maps"][name] = str(path)
    out["seconds"] = round(time.monotonic() - started, 3)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m weave_fdp.datapath.fastdp.compile", description=__doc__)
    ap.add_argument("--stage", type=Path, required=True, help="directory on a bpffs for the pins")
    ap.add_argument("--program", action="append", default=[], help="NAME or NAME:xdp (repeat)")
    ap.add_argument("--cflag", action="append", default=[], help="a clang flag (use --cflag=-DX=1)")
    ap.add_argument("--source", type=Path, help="compile this C file instead of bpf/ (tests)")
    args = ap.parse_args(argv)
    result = build(args.stage, args.program, args.cflag, args.source)
    _emit(result)
    return 1 if "error" in result else 0


if __name__ == "__main__":
    sys.exit(main())
