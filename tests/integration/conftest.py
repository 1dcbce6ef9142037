"""Fixtures: the edgeserve binary, a generated model repository, and a
factory that starts servers on 127.0.0.1 with a free port.

EDGESERVE_BIN names the binary (CMake passes the built target); the default
is build/edgeserve under the repository root.
"""
import json
import os
import subprocess
import sys

import pytest

from esclient import Server

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
MAKE_MODELS = os.path.join(ROOT, "tests", "integration", "models", "make_models.py")
PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable


@pytest.fixture(scope="session")
def root():
    return ROOT


@pytest.fixture(scope="session")
def binary():
    path = os.environ.get("EDGESERVE_BIN") or os.path.join(ROOT, "build", "edgeserve")
    if not os.access(path, os.X_OK):
        pytest.fail(f"edgeserve binary not found at {path} (set EDGESERVE_BIN)")
    return path


@pytest.fixture(scope="session")
def repo(tmp_path_factory):
    """The test model repository (see models/make_models.py)."""
    out = tmp_path_factory.mktemp("models")
    subprocess.run([PYTHON, MAKE_MODELS, str(out)], check=True)
    return str(out)


class ServerFactory:
    """Starts servers; stops them all at teardown. A server that died or
    exited non-zero is reported as an error with its stderr tail."""

    def __init__(self, binary, tmp_dir):
        self.binary = binary
        self.tmp_dir = tmp_dir
        self.servers = []
        self.n = 0

    def __call__(self, args=(), config=None, wait_ready=True, cwd=None, port0=True,
                 log_level="INFO", name=None):
        self.n += 1
        argv = [self.binary, "serve"]
        if config is not None:
            path = os.path.join(self.tmp_dir, f"config{self.n}.json")
            with open(path, "w") as f:
                json.dump(config, f, indent=1)
            argv += ["--config_path", path]
        if port0:
            argv += ["--rest_port", "0", "--rest_bind_address", "127.0.0.1"]
        if log_level:
            argv += ["--log_level", log_level]
        argv += list(args)
        srv = Server(argv, cwd=cwd or ROOT, name=name or f"edgeserve#{self.n}")
        self.servers.append(srv)
        if wait_ready:
            try:
                srv.wait_ready(60)
            except BaseException:
                srv.expect_exit = True  # reported by the test that started it
                raise
        return srv

    def close(self):
        problems = []
        for srv in self.servers:
            was_alive = srv.alive()
            try:
                rc = srv.stop(timeout=60)
            except AssertionError as e:
                problems.append(str(e))
                continue
            if not was_alive and rc != 0 and not getattr(srv, "expect_exit", False):
                problems.append(f"{srv.name} had died during the tests (rc={rc}); stderr tail:\n"
                                f"{srv.tail()}")
            elif was_alive and rc != 0:
                problems.append(f"{srv.name} exited with rc={rc} after SIGTERM; stderr tail:\n"
                                f"{srv.tail()}")
        self.servers = []
        if problems:
            pytest.fail("\n\n".join(problems), pytrace=False)


@pytest.fixture(scope="session")
def session_factory(binary, tmp_path_factory):
    f = ServerFactory(binary, str(tmp_path_factory.mktemp("cfg")))
    yield f
    f.close()


@pytest.fixture
def server_factory(binary, tmp_path):
    f = ServerFactory(binary, str(tmp_path))
    yield f
    f.close()


@pytest.fixture(scope="session")
def server(session_factory, repo):
    """One server over the whole test repository (policy: latest 1)."""
    return session_factory(["--model_repository_path", repo], name="repo-server")
