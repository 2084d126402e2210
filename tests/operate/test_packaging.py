"""Both distributions as a web backend installs them: wheels built from this checkout, each installed
into a fresh venv beside a user project that has its own `api`, `shared` and `worker` packages.

Checked: nothing but `ledgerq` (or `ledgerq_client`) at the top of site-packages, the user's packages
still theirs, the client's few dependencies and light import, and the client driving a live API from
its venv. The figures (distributions, modules, import time) are printed, not asserted on a clock.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from ledgerq.ops.embedded import PostgresServer, RedisServer
from tests.chaos.cluster import Cluster

ROOT = Path(__file__).resolve().parents[2]
CONSTRAINTS = ROOT / ".ci" / "constraints.txt"
CLIENT_DISTRIBUTIONS_MAX = 8  # besides pip and setuptools, which every venv starts with
# What `import ledgerq_client` must never load: the server's code and its heavy dependencies.
SERVER_MODULES = ("ledgerq.", "sqlalchemy", "redis", "rq", "pydantic", "psycopg", "fastapi", "rich")


def run(*argv: str | Path, cwd: Path | None = None) -> str:
    done = subprocess.run([str(a) for a in argv], cwd=cwd, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"{argv}: {done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


# What the Dockerfile copies: a wheel is built from these alone, never from a checkout's leftover build/.
SOURCES = ("pyproject.toml", "README.md", "api", "worker", "shared")


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out, tree = tmp_path_factory.mktemp("wheels"), tmp_path_factory.mktemp("tree")
    ignore = shutil.ignore_patterns("build", "*.egg-info", "__pycache__")
    for name in SOURCES:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, tree / name, ignore=ignore)
        else:
            shutil.copy(source, tree / name)
    for source in (tree, tree / "api" / "client"):
        run(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", out, source)
    found = {p.name.split("-")[0]: p for p in out.glob("*.whl")}
    assert set(found) == {"ledgerq", "ledgerq_client"}, found
    return found


def user_project(root: Path) -> Path:
    """A Django-like project whose own top-level packages share ledgerq's folder names."""
    for name in ("api", "shared", "worker"):
        (root / name).mkdir(parents=True)
        (root / name / "__init__.py").write_text(f"OWNER = 'user project {name}'\n")
    return root


def venv_with(tmp: Path, wheel: Path) -> Path:
    """A fresh venv with only `wheel` (and what it needs, at the tested versions) installed."""
    run(sys.executable, "-m", "venv", tmp / "venv")
    python = tmp / "venv" / "bin" / "python"
    run(python, "-m", "pip", "install", "--quiet", "-c", CONSTRAINTS, wheel)
    return python


def top_level(python: Path, distribution: str) -> set[str]:
    """The names the distribution put at the top of site-packages (its dist-info and scripts aside)."""
    code = (
        "import json, importlib.metadata as m; "
        f"print(json.dumps(sorted({{f.parts[0] for f in m.files({distribution!r})}})))"
    )
    names = set(json.loads(run(python, "-c", code, cwd=python.parents[2])))  # not the checkout: its egg-info
    return {n for n in names if not n.endswith(".dist-info") and n != ".." and n != "__pycache__"}


USER_PACKAGES_STAY = "import api, shared, worker; print(api.OWNER, shared.OWNER, worker.OWNER, sep='|')"


def test_the_server_wheel_takes_only_the_ledgerq_name(
    wheels: dict[str, Path], tmp_path: Path, servers: tuple[PostgresServer, RedisServer]
) -> None:
    python = venv_with(tmp_path, wheels["ledgerq"])
    assert top_level(python, "ledgerq") == {"ledgerq"}
    project = user_project(tmp_path / "project")
    mine = run(
        python, "-c", f"import ledgerq.api.app, ledgerq.worker.main, ledgerq.ops.cli; {USER_PACKAGES_STAY}", cwd=project
    )
    assert mine.strip() == "user project api|user project shared|user project worker"
    assert run(tmp_path / "venv" / "bin" / "ledgerq", "--version").strip() == "ledgerq 0.1.0"
    # The migrations and the wallet page are in the wheel, not only in the checkout.
    listing = "import importlib.metadata as m; print('\\n'.join(map(str, m.files('ledgerq'))))"
    files = run(python, "-c", listing, cwd=tmp_path)
    for shipped in ("migrations/alembic.ini", "migrations/script.py.mako", "migrations/versions/0001_ledger.py"):
        assert f"ledgerq/shared/{shipped}" in files, shipped
    assert "ledgerq/api/ui/wallet.html" in files
    # The installed package migrates a database from anywhere (the migrations come from the wheel).
    url = servers[0].create_database(f"wheel_{tmp_path.name[-8:]}".replace("-", "_"))
    env = {"PATH": os.environ["PATH"], "LEDGERQ_DATABASE_URL": url, "LEDGERQ_PARTITIONS": "4"}
    done = subprocess.run(
        [str(tmp_path / "venv" / "bin" / "ledgerq"), "init"], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0 and "4 partitions" in done.stdout, done.stderr[-2000:]


def test_the_client_wheel_is_small_and_drives_a_live_api(
    wheels: dict[str, Path], tmp_path: Path, cluster: Cluster
) -> None:
    python = venv_with(tmp_path, wheels["ledgerq_client"])
    assert top_level(python, "ledgerq-client") == {"ledgerq_client"}
    listed = run(python, "-m", "pip", "list", "--format=json", cwd=tmp_path)
    installed = {d["name"].lower() for d in json.loads(listed)}
    brought = sorted(installed - {"pip", "setuptools", "ledgerq-client"})
    imported = "import sys, ledgerq_client; print(len(sys.modules)); print(*sys.modules)"
    modules = run(python, "-c", imported, cwd=tmp_path).split("\n")
    loaded = modules[1].split()
    timing = subprocess.run(
        [str(python), "-X", "importtime", "-c", "import ledgerq_client"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    ).stderr
    cumulative_us = int(
        [line for line in timing.splitlines() if line.rstrip().endswith("| ledgerq_client")][-1].split("|")[1]
    )
    print(
        f"ledgerq-client: {len(brought)} distributions besides pip and setuptools ({', '.join(brought)}); "
        f"import ledgerq_client loads {modules[0]} modules in {cumulative_us / 1000:.1f} ms (cumulative, -X importtime)"
    )
    assert len(brought) <= CLIENT_DISTRIBUTIONS_MAX, brought
    assert not [m for m in loaded if m.startswith(SERVER_MODULES)], "the client loaded server code"

    cluster.add_worker([])
    project = user_project(tmp_path / "project")
    script = (
        textwrap.dedent(
            f"""
        import json
        from ledgerq_client import LedgerqClient, UnknownAccount

        with LedgerqClient({cluster.url!r}, {cluster.key!r}) as ledger:
            ledger.create_account("packaged", "USD")
            accepted = ledger.submit("deposit", "packaged", 125, "USD")
            outcome = ledger.wait(accepted.id, timeout_s=60)
            try:
                ledger.submit("deposit", "nobody", 1, "USD")
            except UnknownAccount as refused:
                code = refused.code
            print(json.dumps([outcome.status, ledger.account("packaged").balance, code]))
        """
        )
        + USER_PACKAGES_STAY
    )
    out = run(python, "-c", script, cwd=project).splitlines()
    assert json.loads(out[0]) == ["applied", 125, "unknown_account"]
    assert out[1] == "user project api|user project shared|user project worker"
