"""A GPU through nox: `-- --cuda` or SAFETYHEADS_ACCELERATOR=cuda makes the locked sessions install
requirements/cuda.lock instead of requirements/cpu.lock and the reproduce_* sessions run the harness
with `--device cuda`; checked on the CPU with nox's Session replaced by a recorder (and nox itself by
a stub: the noxfile only decorates with it at import)."""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


class SessionEnded(Exception):
    """What session.error raises in the recorder (nox raises its own)."""


class Recorder:
    venv_backend = "virtualenv"

    def __init__(self, posargs):
        self.posargs, self.calls, self.logged = list(posargs), [], []

    def error(self, message):
        raise SessionEnded(message)

    def install(self, *args, **kwargs):
        self.calls.append(("install", args))

    def run(self, *args, **kwargs):
        self.calls.append(("run", args))

    def log(self, message, *a, **k):
        self.logged.append(message)

    def installs(self) -> list[str]:
        return [" ".join(a) for kind, a in self.calls if kind == "install"]

    def runs(self) -> list[tuple]:
        return [a for kind, a in self.calls if kind == "run"]


@pytest.fixture()
def noxfile(monkeypatch):
    def session(*args, **kwargs):  # @nox.session, @nox.session(...), nox.session(name=...)(f)
        return args[0] if args and callable(args[0]) else (lambda f: f)

    monkeypatch.setitem(sys.modules, "nox", types.SimpleNamespace(options=types.SimpleNamespace(), session=session,
                                                                  Session=object))
    for name in ("SAFETYHEADS_ACCELERATOR", "SAFETYHEADS_UNPINNED", "SAFETYHEADS_TORCH_INDEX"):
        monkeypatch.delenv(name, raising=False)
    spec = importlib.util.spec_from_file_location("noxfile_under_test", ROOT / "noxfile.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("posargs,environ,want", [
    (["--profile", "paper"], {}, ("cpu", ["--profile", "paper"])),
    (["--profile", "paper"], {"SAFETYHEADS_ACCELERATOR": ""}, ("cpu", ["--profile", "paper"])),
    (["--profile", "paper"], {"SAFETYHEADS_ACCELERATOR": "cuda"}, ("cuda", ["--profile", "paper"])),
    (["--profile", "paper"], {"SAFETYHEADS_ACCELERATOR": " CUDA "}, ("cuda", ["--profile", "paper"])),
    (["--cuda", "--profile", "paper"], {}, ("cuda", ["--profile", "paper"])),
    (["--profile", "paper", "--cuda"], {"SAFETYHEADS_ACCELERATOR": "cpu"}, ("cuda", ["--profile", "paper"])),
    (["--cpu"], {"SAFETYHEADS_ACCELERATOR": "cuda"}, ("cpu", [])),
])
def test_the_accelerator_comes_from_the_flag_then_the_environment(noxfile, posargs, environ, want):
    assert noxfile.choose_accelerator(posargs, environ) == want


@pytest.mark.parametrize("posargs,environ,match", [
    ([], {"SAFETYHEADS_ACCELERATOR": "rocm"}, "SAFETYHEADS_ACCELERATOR='rocm': use cpu or cuda"),
    (["--cuda", "--cpu"], {}, "give --cuda or --cpu, not both"),
])
def test_a_bad_accelerator_is_refused_naming_the_choices(noxfile, posargs, environ, match):
    with pytest.raises(ValueError, match=match):
        noxfile.choose_accelerator(posargs, environ)


@pytest.mark.parametrize("accelerator,posargs,want", [
    ("cpu", ["--profile", "paper"], []),
    ("cuda", ["--profile", "paper"], ["--device", "cuda"]),
    ("cuda", ["--device", "cuda:1"], []),
    ("cuda", ["--device=cuda:1"], []),
])
def test_the_harness_device_follows_the_accelerator_unless_named(noxfile, accelerator, posargs, want):
    assert noxfile.harness_device_args(accelerator, posargs) == want


def test_a_cuda_session_installs_the_cuda_lock_and_runs_the_harness_on_the_gpu(noxfile):
    s = Recorder(["--profile", "paper", "--cuda"])
    s.venv_backend = "none"  # the platform check applies to nox's own virtualenvs only
    noxfile._reproduce(s, ["figure2"])
    installs = s.installs()
    assert any("--require-hashes" in c and "requirements/cuda.lock" in c for c in installs), installs
    assert not any("requirements/cpu.lock" in c or "download.pytorch.org" in c for c in installs), installs
    assert s.runs() == [("python", "-m", "replication", "run", "figure2", "--profile", "paper", "--device", "cuda")]


def test_the_environment_variable_does_the_same_and_a_named_device_is_kept(noxfile, monkeypatch):
    monkeypatch.setenv("SAFETYHEADS_ACCELERATOR", "cuda")
    s = Recorder(["--profile", "paper", "--device", "cuda:1"])
    s.venv_backend = "none"
    noxfile._reproduce(s, ["all"])
    assert any("requirements/cuda.lock" in c for c in s.installs())
    assert s.runs() == [("python", "-m", "replication", "run", "all", "--profile", "paper", "--device", "cuda:1")]


def test_by_default_the_cpu_lock_and_the_harnesss_own_device(noxfile):
    s = Recorder(["--profile", "ci"])
    s.venv_backend = "none"
    noxfile._reproduce(s, ["table3"])
    installs = s.installs()
    assert any("--require-hashes" in c and "requirements/cpu.lock" in c for c in installs), installs
    assert not any("cuda.lock" in c for c in installs)
    assert s.runs() == [("python", "-m", "replication", "run", "table3", "--profile", "ci")]


def test_unpinned_cuda_takes_pypis_torch_and_the_index_only_applies_unpinned(noxfile, monkeypatch):
    s = Recorder(["--unpinned", "--cuda"])
    noxfile.install_locked(s, "[replication]")
    assert s.installs()[0] == noxfile.TORCH  # PyPI's Linux wheel: the CUDA build, no CPU index
    assert not any("--require-hashes" in c for c in s.installs()) and s.posargs == []

    monkeypatch.setenv("SAFETYHEADS_TORCH_INDEX", "https://example.invalid/whl/cu130")
    s = Recorder(["--cuda"])
    s.venv_backend = "none"
    noxfile.install_locked(s)
    assert not any("example.invalid" in c for c in s.installs())
    assert any("SAFETYHEADS_TORCH_INDEX is ignored by a locked install" in m for m in s.logged)


def test_a_bad_environment_value_ends_the_session_with_one_line(noxfile, monkeypatch):
    monkeypatch.setenv("SAFETYHEADS_ACCELERATOR", "gpu")
    s = Recorder(["--profile", "paper"])
    with pytest.raises(SessionEnded, match="use cpu or cuda") as ended:
        noxfile._reproduce(s, ["figure2"])
    assert "\n" not in str(ended.value) and s.calls == []


def test_the_locks_the_accelerators_name_exist(noxfile):
    for lock in (noxfile.CPU_LOCK, noxfile.CUDA_LOCK):
        assert (ROOT / lock).is_file(), lock


def test_only_the_extension_artefacts_offer_the_extension_profile(noxfile):
    from replication.spec.profiles import EXTENSION_ARTEFACTS

    assert noxfile.EXTENSION_ARTEFACTS == tuple(EXTENSION_ARTEFACTS) and EXTENSION_ARTEFACTS
    created = {}

    def session(*args, **kwargs):
        if args and callable(args[0]):
            return args[0]
        return lambda f: created.setdefault(kwargs.get("name"), f)

    sys.modules["nox"].session = session
    spec = importlib.util.spec_from_file_location("noxfile_sessions", ROOT / "noxfile.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for name in module.ARTEFACTS:
        offers = "extension" in created[f"reproduce_{name}"].__doc__
        assert offers == (name in EXTENSION_ARTEFACTS), name


def test_the_readme_says_how_to_use_a_gpu_and_that_none_was_used():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "SAFETYHEADS_ACCELERATOR=cuda" in readme and "-- --cuda" in readme
    first_screen = "\n".join(readme.splitlines()[:40])
    assert "never run on a GPU" in first_screen
