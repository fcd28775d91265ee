"""`jobs-api`: serve, worker, migrate, keys."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from sqlalchemy import select

from jobs_api.config import Config

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"


def migrate(config: Config) -> None:
    from alembic import command
    from alembic.config import Config as AlembicConfig

    if config.database_url.startswith("sqlite:///"):
        Path(config.database_url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    settings = AlembicConfig()
    settings.set_main_option("script_location", str(MIGRATIONS))
    settings.set_main_option("sqlalchemy.url", config.database_url.replace("%", "%%"))
    command.upgrade(settings, "head")


def serve(config: Config) -> None:
    config.storage_dir.mkdir(parents=True, exist_ok=True)
    # Loopback unless told: a service started to try it is not open to the network (the image sets 0.0.0.0).
    args = gunicorn_args(os.environ.get("HOST", "127.0.0.1"), os.environ.get("PORT", "8000"), "jobs_api.wsgi:app")
    os.execvp(sys.executable, [sys.executable, "-m", *args])


def gunicorn_args(host: str, port: str, app: str) -> list[str]:
    """How `serve` runs gunicorn (bench/api_load.py runs its baseline the same way)."""
    workers = os.environ.get("WEB_CONCURRENCY", str(min(4, (os.cpu_count() or 1) + 1)))
    return [
        "gunicorn", "--bind", f"{host}:{port}", "--workers", workers,
        # gthread's, giving no thread to a slow client and stopping at once (jobs_api/gunicorn_worker.py)
        "--worker-class", "jobs_api.gunicorn_worker.ServiceWorker",
        "--threads", os.environ.get("WEB_THREADS", "4"),
        "--timeout", "600", "--access-logfile", "-",
        "--logger-class", "jobs_api.gunicorn_logging.ServiceLogger",  # no line per probe; LOG_FORMAT
        # gunicorn's control socket has one path per user ($HOME/.gunicorn/gunicorn.ctl), which each
        # instance takes from the one before; nothing here uses it.
        "--no-control-socket",
        "--config", "python:jobs_api.gunicorn_worker",  # on_starting: a worker stopped as it starts stops
        # The app is imported once, before the workers fork: they start at once instead of each
        # importing it on a core the conversions need. It opens no connection while imported.
        "--preload", app,
    ]


def worker(config: Config, burst: bool) -> None:
    from workers.worker import work  # the CLI is the one place the API package reaches the workers

    work(config, burst)


def keys(config: Config, args: argparse.Namespace) -> int:
    from jobs_api.db import make_engine, make_sessionmaker
    from jobs_api.models import ApiKey, utcnow
    from jobs_api.security import hash_secret, new_secret

    with make_sessionmaker(make_engine(config.database_url))() as session:
        if args.keys_command == "create":
            secret = new_secret()
            session.add(ApiKey(name=args.name, key_hash=hash_secret(secret)))
            session.commit()
            print(secret)
            return 0
        if args.keys_command == "list":
            for row in session.scalars(select(ApiKey).order_by(ApiKey.created_at)):
                state = "revoked" if row.revoked_at else "active"
                print(f"{row.id}\t{row.name}\t{state}\t{row.created_at:%Y-%m-%d %H:%M}")
            return 0
        rows = session.scalars(
            select(ApiKey).where((ApiKey.id == args.key) | (ApiKey.name == args.key))
        ).all()
        if not rows:
            print(f"no key with id or name {args.key!r}", file=sys.stderr)
            return 1
        for row in rows:
            row.revoked_at = row.revoked_at or utcnow()
        session.commit()
        print(f"revoked {len(rows)} key(s)", file=sys.stderr)
        return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="jobs-api", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("serve", help="run the API under gunicorn (PORT, default 8000)")
    work = commands.add_parser("worker", help="run an RQ worker for conversions")
    work.add_argument("--burst", action="store_true", help="exit when the queue is empty")
    commands.add_parser("migrate", help="upgrade the database schema to the newest version")
    key_parser = commands.add_parser("keys", help="manage API keys")
    key_commands = key_parser.add_subparsers(dest="keys_command", required=True)
    key_commands.add_parser("create", help="create a key; prints only the key").add_argument("name")
    key_commands.add_parser("list", help="list keys (never the keys themselves)")
    key_commands.add_parser("revoke", help="revoke keys by id or name").add_argument("key")
    args = parser.parse_args(argv)

    config = Config.from_env()
    if args.command == "serve":
        serve(config)
    elif args.command == "worker":
        worker(config, args.burst)
    elif args.command == "migrate":
        migrate(config)
    elif args.command == "keys":
        return keys(config, args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
