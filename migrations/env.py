"""Alembic environment: the models' metadata, the URL from DATABASE_URL (or the caller)."""
from __future__ import annotations

from alembic import context

from jobs_api.config import Config
from jobs_api.db import make_engine
from jobs_api.models import Base

url = context.config.get_main_option("sqlalchemy.url") or Config.from_env().database_url

if context.is_offline_mode():
    context.configure(url=url, target_metadata=Base.metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    with make_engine(url).connect() as connection:
        context.configure(
            connection=connection, target_metadata=Base.metadata,
            render_as_batch=url.startswith("sqlite"),
        )
        with context.begin_transaction():
            context.run_migrations()
