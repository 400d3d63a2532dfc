"""The shared services of docker/compose.yaml, started natively on loopback (no Docker).

    python -m devtools.servers --home .services     # Prefect + MLflow (+ PostgreSQL) until Ctrl-C

Used by the integration test (tests/integration/test_servers.py) and the CPU benchmark, and
handy on a laptop: it prints the PREFECT_API_URL and MLFLOW_TRACKING_URI to export. Each
server runs as a child process on a free port picked at start, is health-checked with a
bounded timeout, and is stopped (terminate, then kill) when its context exits.

- `prefect_server`: `prefect server start` with its own PREFECT_HOME (SQLite).
- `postgres`: a throwaway PostgreSQL cluster (initdb + pg_ctl from Debian's packages); when
  run as root the cluster belongs to the `postgres` user, as PostgreSQL refuses root.
- `model_server`: `make serve` (or `mlflow models serve`) of a registered version, for the
  serving test and the README's curl line.
- `mlflow_server`: `mlflow server` on a backend store (PostgreSQL or SQLite) with its
  artifact proxy (`--serve-artifacts`): clients log to `mlflow-artifacts:/`, the server
  writes to `--artifacts-destination` (a directory here, S3/MinIO in compose).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

QUIET = {
    "DO_NOT_TRACK": "true",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "MLFLOW_DISABLE_TELEMETRY": "true",
}


class ServiceFailed(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def bin_path(name: str) -> str:
    """A console script of this environment (the venv's `prefect`, `mlflow`), else PATH's."""
    here = Path(sys.executable).parent / name
    found = str(here) if here.exists() else shutil.which(name)
    if not found:
        raise ServiceFailed(f"{name}: not installed")
    return found


def wait_http(url: str, proc: subprocess.Popen, timeout: float, log: Path) -> None:
    """Poll url until it answers 200; fail early if the process dies, or after timeout s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ServiceFailed(f"{url}: server exited {proc.returncode}:\n{tail(log)}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise ServiceFailed(f"{url}: no answer within {timeout:.0f} s:\n{tail(log)}")


def tail(log: Path, n: int = 3000) -> str:
    return log.read_text(errors="replace")[-n:] if log.exists() else ""


def stop(proc: subprocess.Popen, grace: float = 15) -> None:
    """SIGTERM the process group (servers fork workers), SIGKILL after grace seconds."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(grace)


@contextlib.contextmanager
def spawn(
    cmd: list[str], log: Path, env: dict[str, str], cwd: Path | None = None
) -> Iterator[subprocess.Popen]:
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd, start_new_session=True
        )
    try:
        yield proc
    finally:
        stop(proc)


@contextlib.contextmanager
def prefect_server(home: Path, port: int | None = None, timeout: float = 120) -> Iterator[str]:
    """`prefect server start` on loopback with its own PREFECT_HOME; yields PREFECT_API_URL."""
    port = port or free_port()
    home.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **QUIET, "PREFECT_HOME": str(home)}
    env.pop("PREFECT_API_URL", None)
    cmd = [bin_path("prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    with spawn([*cmd, "--no-ui"], home / "server.log", env) as proc:
        api = f"http://127.0.0.1:{port}/api"
        wait_http(f"{api}/health", proc, timeout, home / "server.log")
        yield api


def pg_bin(name: str) -> str | None:
    """A PostgreSQL server program: on PATH, else Debian's /usr/lib/postgresql/<version>/bin."""
    found = shutil.which(name)
    if found:
        return found
    debian = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))
    return str(debian[-1]) if debian else None


def _as_postgres(cmd: list[str]) -> list[str]:
    cmd = [pg_bin(cmd[0]) or cmd[0], *cmd[1:]]
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


def postgres_available() -> bool:
    """initdb, pg_ctl and createdb installed, and a non-root user to run them as."""
    if not all(pg_bin(n) for n in ("initdb", "pg_ctl", "createdb")):
        return False
    if os.geteuid() != 0:
        return True
    import pwd

    try:
        pwd.getpwnam("postgres")
    except KeyError:
        return False
    return shutil.which("runuser") is not None


@contextlib.contextmanager
def postgres(port: int | None = None, timeout: float = 60) -> Iterator[str]:
    """A throwaway PostgreSQL cluster on loopback; yields a SQLAlchemy URL to database `mlflow`."""
    port = port or free_port()
    # Outside any 0700 pytest dir: the cluster's owner must be able to reach it.
    root = Path(tempfile.mkdtemp(prefix="receipt-pg-"))
    os.chmod(root, 0o755)
    data = root / "data"
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
    env = {**os.environ, "LC_ALL": "C"}
    try:
        subprocess.run(
            _as_postgres(["initdb", "-D", str(data), "-A", "trust", "-U", "mlflow", "-E", "UTF8"]),
            check=True,
            capture_output=True,
            env=env,
            timeout=timeout,
        )
        opts = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off"
        subprocess.run(
            _as_postgres(
                ["pg_ctl", "-D", str(data), "-o", opts, "-l", str(root / "pg.log"), "-w"]
                + ["-t", str(int(timeout)), "start"]
            ),
            check=True,
            capture_output=True,
            env=env,
            timeout=timeout + 10,
        )
        try:
            subprocess.run(
                _as_postgres(["createdb", "-h", "127.0.0.1", "-p", str(port), "-U", "mlflow"])
                + ["mlflow"],
                check=True,
                capture_output=True,
                env=env,
                timeout=timeout,
            )
            yield f"postgresql://mlflow@127.0.0.1:{port}/mlflow"
        finally:
            subprocess.run(
                _as_postgres(["pg_ctl", "-D", str(data), "-m", "fast", "-w", "stop"]),
                capture_output=True,
                env=env,
                timeout=timeout,
            )
    except subprocess.CalledProcessError as exc:
        raise ServiceFailed(
            f"postgres: {' '.join(exc.cmd)} failed:\n{exc.stderr.decode()[-2000:]}"
        ) from exc
    finally:
        shutil.rmtree(root, ignore_errors=True)


def s3_available() -> bool:
    return (
        importlib.util.find_spec("moto") is not None
        and importlib.util.find_spec("boto3") is not None
    )


@contextlib.contextmanager
def s3_server(
    log: Path,
    buckets: tuple[str, ...] = ("mlflow", "dvc"),
    port: int | None = None,
    timeout: float = 60,
) -> Iterator[dict[str, str]]:
    """moto's S3 server on loopback with the buckets made; yields the clients' AWS_* env."""
    port = port or free_port()
    with spawn(
        [bin_path("moto_server"), "-H", "127.0.0.1", "-p", str(port)], log, dict(os.environ)
    ) as proc:
        url = f"http://127.0.0.1:{port}"
        wait_http(f"{url}/moto-api/data.json", proc, timeout, log)
        env = {
            "AWS_ACCESS_KEY_ID": "loopback",
            "AWS_SECRET_ACCESS_KEY": "loopback-secret",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ENDPOINT_URL": url,  # boto3 (MLflow) and s3fs (dvc-s3) both read it
        }
        s3 = s3_client(env)
        for bucket in buckets:
            s3.create_bucket(Bucket=bucket)
        yield env


def s3_client(env: dict[str, str]):
    """A boto3 S3 client for the AWS_* settings `s3_server` yields."""
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=env["AWS_ENDPOINT_URL"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        region_name=env["AWS_DEFAULT_REGION"],
    )


@contextlib.contextmanager
def mlflow_server(
    backend_uri: str,
    artifacts: Path | str,
    log: Path,
    port: int | None = None,
    timeout: float = 120,
    env: dict[str, str] | None = None,
) -> Iterator[str]:
    """`mlflow server` with its artifact proxy; yields the tracking URI (http://127.0.0.1:port).
    `artifacts` is a directory or an object-store URI (`s3://mlflow`, credentials in `env`)."""
    port = port or free_port()
    if isinstance(artifacts, Path):
        artifacts.mkdir(parents=True, exist_ok=True)
    cmd = [bin_path("mlflow"), "server", "--backend-store-uri", backend_uri]
    cmd += ["--serve-artifacts", "--artifacts-destination", str(artifacts)]
    cmd += ["--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    env = {**os.environ, **QUIET, **(env or {})}
    env.pop("MLFLOW_TRACKING_URI", None)
    with spawn(cmd, log, env) as proc:
        uri = f"http://127.0.0.1:{port}"
        wait_http(f"{uri}/health", proc, timeout, log)
        yield uri


@contextlib.contextmanager
def model_server(
    model_uri: str,
    log: Path,
    env: dict[str, str],
    cwd: Path | None = None,
    port: int | None = None,
    timeout: float = 180,
    server: str = "tasks",
) -> Iterator[tuple[subprocess.Popen, str]]:
    """A registered version (e.g. `models:/receipt-llava@champion`) served over HTTP in this
    environment: `make serve`'s `python -m tasks.serve` (server="tasks"), or
    `mlflow models serve --env-manager local --workers 1` (server="mlflow"). Yields the
    process and its URL once /ping answers. `env` carries MLFLOW_TRACKING_URI (the
    registry) and any artifact-store credentials."""
    port = port or free_port()
    if server == "tasks":
        cmd = [sys.executable, "-m", "tasks.serve", "--model", model_uri]
    else:
        cmd = [bin_path("mlflow"), "models", "serve", "-m", model_uri, "--env-manager", "local"]
        cmd += ["--workers", "1"]
    cmd += ["--host", "127.0.0.1", "--port", str(port)]
    # `mlflow models serve` execs `uvicorn` by name: this environment's bin first on PATH
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    with spawn(cmd, log, {**os.environ, **QUIET, "PATH": path, **env}, cwd=cwd) as proc:
        url = f"http://127.0.0.1:{port}"
        wait_http(f"{url}/ping", proc, timeout, log)
        yield proc, url


@contextlib.contextmanager
def stack(
    home: Path, use_postgres: bool | None = None, use_s3: bool | None = None
) -> Iterator[dict[str, Any]]:
    """Prefect server + MLflow server (PostgreSQL-backed when available, else SQLite) with its
    artifacts and the DVC remote on S3 (moto, when installed; else directories under home).

    Yields the client settings (PREFECT_API_URL, MLFLOW_TRACKING_URI, AWS_* for S3) under
    "env", plus "backend", "artifacts" (where the server stores artifacts) and "dvc_remote"."""
    use_postgres = postgres_available() if use_postgres is None else use_postgres
    use_s3 = s3_available() if use_s3 is None else use_s3
    home.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as es:
        if use_postgres:
            backend = es.enter_context(postgres())
        else:
            backend = f"sqlite:///{(home / 'mlflow.db').resolve()}"
        s3 = es.enter_context(s3_server(home / "s3.log")) if use_s3 else {}
        artifacts: Path | str = "s3://mlflow" if use_s3 else home / "mlartifacts"
        api = es.enter_context(prefect_server(home / "prefect"))
        tracking = es.enter_context(mlflow_server(backend, artifacts, home / "mlflow.log", env=s3))
        yield {
            "env": {"PREFECT_API_URL": api, "MLFLOW_TRACKING_URI": tracking, **s3},
            "backend": backend.split(":", 1)[0],
            "artifacts": str(artifacts),
            "dvc_remote": "s3://dvc/store" if use_s3 else str(home / "dvc-store"),
        }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--home", default=".services", help="server state and logs")
    ap.add_argument("--sqlite", action="store_true", help="MLflow on SQLite, not PostgreSQL")
    ap.add_argument("--no-s3", action="store_true", help="directories instead of moto's S3")
    args = ap.parse_args(argv)
    home = Path(args.home).resolve()
    with stack(
        home, use_postgres=False if args.sqlite else None, use_s3=False if args.no_s3 else None
    ) as services:
        print(
            f"# MLflow on {services['backend']}, artifacts in {services['artifacts']}; "
            f"DVC remote: dvc remote add --local -d shared {services['dvc_remote']}\n"
            "# Ctrl-C stops everything"
        )
        for k, v in services["env"].items():
            print(f"export {k}={v}", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            signal.pause()


if __name__ == "__main__":
    main()
