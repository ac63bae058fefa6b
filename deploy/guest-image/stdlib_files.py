"""Print the standard library files guestd needs, one path a line (used by build.sh).

    python3 -S stdlib_files.py REPO

Runs the real guestd, guestd-ctl, a client application, a vote hook and a
health hook from REPO on this host's python3 under ``-X importtime`` and lists
every module they imported (lazy imports included, since the code paths run),
so the guest image carries that much of the standard library and no more.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import sysconfig
import tempfile
import time

# Always wanted: the stdlib landmark python3 looks for at start-up, the runner of
# ``python3 -m``, and the codecs a C.UTF-8 or POSIX locale may ask for.
ALWAYS = ["os", "runpy", "encodings", "encodings.aliases", "encodings.utf_8",
          "encodings.ascii", "encodings.latin_1"]

APP = """
import sys, time
from guestd.client import Application, Vote
app = Application("probe", events=["*"], on_vote=lambda n: Vote.accept(),
                  on_notice=lambda n: None, socket_path=sys.argv[1]).start()
app.registered.wait(10)
app.report_health(True)
time.sleep(float(sys.argv[2]))
app.stop()
"""


def _imported(stderr: str) -> set:
    names = set()
    for line in stderr.splitlines():
        if line.startswith("import time:") and line.count("|") == 2:
            name = line.rsplit("|", 1)[1].strip()
            if name and name != "imported package":
                names.add(name)
    return names


def exercise(repo: str) -> set:
    """Module names imported by guestd's processes while they do their jobs."""
    # -S: no site-packages, so only the standard library and REPO (PYTHONPATH) are seen.
    python = [sys.executable, "-S", "-X", "importtime"]
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": repo}
    names: set = set()
    with tempfile.TemporaryDirectory(prefix="np-mods-") as tmp:
        sock, status = os.path.join(tmp, "g.sock"), os.path.join(tmp, "status.json")
        hooks, health = os.path.join(tmp, "hooks.d"), os.path.join(tmp, "health.d")
        for directory, script in ((hooks, "#!/bin/sh\ncat >/dev/null\nexit 0\n"),
                                  (health, "#!/bin/sh\necho '{\"reason\": \"ok\"}'\n")):
            os.mkdir(directory)
            with open(os.path.join(directory, "10-probe"), "w") as f:
                f.write(script)
            os.chmod(os.path.join(directory, "10-probe"), 0o755)
        daemon = subprocess.Popen(
            [*python, "-m", "guestd.daemon", "--socket", sock, "--hooks-dir", hooks,
             "--status-file", status, "--status-interval", "0.1", "--health-dir", health,
             "--health-interval", "0.2", "--spool-dir", os.path.join(tmp, "spool"),
             "--outbox", os.path.join(tmp, "outbox.json")],
            cwd=repo, env=env, stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 20
            while not os.path.exists(sock) and time.monotonic() < deadline:
                time.sleep(0.05)
            app = subprocess.Popen([*python, "-c", APP, sock, "3"], cwd=repo, env=env,
                                   stderr=subprocess.PIPE, text=True)
            time.sleep(1.5)  # the application registers, a health hook runs
            request = {"v": 1, "type": "request", "id": "r1", "instance": "i1",
                       "event": "reboot", "phase": "vote", "timeout": 5.0}
            for extra in (["--timeout", "5"], []):  # both of guestd-ctl's paths
                ctl = subprocess.run(
                    [*python, "-c", "import sys; from guestd.ctl import main; sys.exit(main())",
                     "--socket", sock, *extra],
                    input=json.dumps(request), cwd=repo, env=env, capture_output=True,
                    text=True, timeout=30)
                if '"answer"' not in ctl.stdout:
                    raise SystemExit(f"guestd-ctl did not answer: {ctl.stdout} {ctl.stderr}")
                names |= _imported(ctl.stderr)
            names |= _imported(app.communicate(timeout=30)[1])
        finally:
            daemon.terminate()
            names |= _imported(daemon.communicate(timeout=30)[1])
    return names


def files(names: set) -> list:
    """The stdlib files (sources, extension modules) behind module ``names``."""
    stdlib = sysconfig.get_paths()["stdlib"]
    found = set()
    for name in sorted(names | set(ALWAYS)):
        # A parent package's __init__ is needed for every submodule.
        parts = name.split(".")
        for depth in range(1, len(parts) + 1):
            try:
                spec = importlib.util.find_spec(".".join(parts[:depth]))
            except ImportError:  # an optional import that failed here too (org.python...)
                break
            origin = spec and spec.origin
            if origin == "frozen":  # built into python3; the source still helps tracebacks
                base = os.path.join(stdlib, *parts[:depth])
                origin = base + ".py" if os.path.isfile(base + ".py") else os.path.join(
                    base, "__init__.py")
            if origin and origin.startswith(stdlib + os.sep) and os.path.isfile(origin):
                found.add(origin)
    return sorted(found)


def main() -> int:
    repo = os.path.abspath(sys.argv[1])
    for path in files({n for n in exercise(repo) if not n.startswith("guestd")}):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
