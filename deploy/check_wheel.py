"""Build the wheel and sdist, check them, and run the installed wheel outside the checkout.

What a user gets from ``pip install driftloop`` must work without any file of this repository:
this builds both distributions (``python -m build``), checks them (``twine check --strict``),
installs the wheel with its declared dependencies (pinned by ``requirements.lock``) into a fresh
virtual environment in a temporary directory, and from there runs ``driftloop --help`` and
``--version``, then ``driftloop up`` on free ports, applies a spec, publishes labelled data,
waits for the first model to be trained and served, asks it for one prediction over HTTP, and
stops the stack with SIGTERM. Run by ``.ci/run`` and ``make wheel``; exits non-zero on failure.

    .venv/bin/python deploy/check_wheel.py
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODEL = "wheelcheck"
SPEC = f"""
name: {MODEL}
features: [{{name: x1}}, {{name: x2}}]
label: {{values: [0, 1]}}
training: {{estimator: LogisticRegression, holdout: 0.25, seed: 1}}
"""


def step(text: str) -> None:
    print(f"check_wheel: {text}", flush=True)


def run(*args: str | Path, cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    done = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(
            f"check_wheel: {' '.join(map(str, args))} failed ({done.returncode}):\n{done.stdout}{done.stderr}"
        )
    return done.stdout


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return int(response.status)
    except urllib.error.HTTPError as err:
        return err.code
    except OSError:
        return 0


def wait(condition: object, what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return
        time.sleep(0.5)
    raise TimeoutError(f"{what} within {timeout:.0f} s")


def annotations(path: Path, n: int = 600) -> None:
    rng = random.Random(3)
    with path.open("w") as out:
        for i in range(n):
            x1, x2 = rng.uniform(0, 10), rng.uniform(0, 10)
            record = {"record_id": f"r{i}", "features": {"x1": x1, "x2": x2}, "label": int(x1 + x2 > 10)}
            out.write(json.dumps(record) + "\n")


def build(dist: Path) -> Path:
    step("building the sdist and the wheel")
    run(sys.executable, "-m", "build", "--no-isolation", "--sdist", "--wheel", "--outdir", dist, ROOT)
    files = sorted(dist.iterdir())
    step(f"twine check --strict {' '.join(f.name for f in files)}")
    run(sys.executable, "-m", "twine", "check", "--strict", *files)
    [wheel] = [f for f in files if f.suffix == ".whl"]
    return wheel


def install(wheel: Path, venv: Path) -> Path:
    step(f"installing {wheel.name} into a fresh environment at {venv}")
    run(sys.executable, "-m", "venv", venv)
    run(venv / "bin" / "python", "-m", "pip", "install", "-q", wheel, "-c", ROOT / "requirements.lock")
    where = run(
        venv / "bin" / "python", "-c", "import shared, services; print(shared.__file__, services.__file__)", cwd=venv
    )
    if str(ROOT) in where:
        raise SystemExit(f"check_wheel: the installed package resolves to the checkout: {where}")
    return venv / "bin" / "driftloop"


def run_stack(driftloop: Path, work: Path) -> None:
    version = run(driftloop, "--version", cwd=work).strip()
    help_text = run(driftloop, "--help", cwd=work)
    if "up" not in help_text or not version.startswith("driftloop "):
        raise SystemExit(f"check_wheel: unexpected --help / --version output: {version!r}")
    step(f"{version}; starting `driftloop up` from {work}")
    data = work / "stack"
    ports = {name: free_port() for name in ("kafka", "inference", "ingest", "monitor", "trainer")}
    flags = [x for name, port in ports.items() for x in (f"--{name}-port", str(port))]
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTLOOP_")}
    up = subprocess.Popen(
        [str(driftloop), "up", "--data-dir", str(data), *flags],
        cwd=work,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    inference = f"http://127.0.0.1:{ports['inference']}"
    try:
        wait(lambda: (data / "endpoints.json").exists() or up.poll() is not None, "endpoints.json", 60)
        if up.poll() is not None:
            raise SystemExit(f"check_wheel: driftloop up exited early:\n{up.communicate()[0].decode()}")
        (work / "spec.yaml").write_text(SPEC)
        run(driftloop, "specs", "apply", work / "spec.yaml", "--data-dir", data, cwd=work, env=env)
        annotations(work / "labels.jsonl")
        run(
            driftloop,
            "publish",
            "annotations",
            work / "labels.jsonl",
            "--model",
            MODEL,
            "--data-dir",
            data,
            cwd=work,
            env=env,
        )
        step("waiting for the first model to be trained and served")
        wait(lambda: get(f"{inference}/v2/models/{MODEL}/ready") == 200, "a served model", 240)
        body = json.dumps({"inputs": [{"name": "input", "shape": [1, 2], "datatype": "FP32", "data": [9, 9]}]})
        request = urllib.request.Request(
            f"{inference}/v2/models/{MODEL}/infer", body.encode(), {"content-type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            answer = json.loads(response.read())
        label = answer["outputs"][0]["data"]
        if label != [1]:
            raise SystemExit(f"check_wheel: unexpected prediction {answer}")
        step(f"one prediction: {MODEL} v{answer['model_version']} says {label}")
    finally:
        if up.poll() is None:
            up.send_signal(signal.SIGTERM)
        try:
            code = up.wait(timeout=60)
        except subprocess.TimeoutExpired:
            up.kill()
            raise SystemExit("check_wheel: driftloop up did not stop within 60 s of SIGTERM") from None
        output = up.communicate()[0].decode()
    if code != 0:
        logs = "".join(f"\n--- {p.name}\n{p.read_text()[-2000:]}" for p in sorted((data / "logs").glob("*.log")))
        raise SystemExit(f"check_wheel: driftloop up exited with {code}:\n{output}{logs}")
    step("driftloop up stopped cleanly on SIGTERM")


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="driftloop-wheel-") as tmp:
        root = Path(tmp)
        wheel = build(root / "dist")
        driftloop = install(wheel, root / "venv")
        work = root / "work"
        work.mkdir()
        run_stack(driftloop, work)
    step("the wheel installs and runs outside the checkout")
    return 0


if __name__ == "__main__":
    sys.exit(main())
