"""jobs indexed by key and creation time, and by key and status

A key's rate check (its jobs of the last minute, newest first), its concurrency check (its
jobs queued or running) and its job list (newest first) read the index on api_key_id alone,
then every job the key ever made: a POST /v2/jobs took 22 ms for a key with 100,000 jobs,
against 1.9 ms with 1,000. The two-column indexes reach only the rows asked for; the one on
api_key_id alone is the first column of both and goes.

Revision ID: 0005
Revises: 0004
"""
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index('ix_jobs_api_key_id_created_at', 'jobs', ['api_key_id', 'created_at'])
    op.create_index('ix_jobs_api_key_id_status', 'jobs', ['api_key_id', 'status'])
    op.drop_index('ix_jobs_api_key_id', table_name='jobs')


def downgrade() -> None:
    op.create_index('ix_jobs_api_key_id', 'jobs', ['api_key_id'])
    op.drop_index('ix_jobs_api_key_id_status', table_name='jobs')
    op.drop_index('ix_jobs_api_key_id_created_at', table_name='jobs')
