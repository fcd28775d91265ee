"""jobs.attempt: which run of the job is the current one

A job whose worker was lost is queued again, up to MAX_ATTEMPTS runs (workers/sweeper.py).
Each run takes the job by raising its attempt, and ends it only while the attempt is still its
own: a run thought lost that is in fact alive cannot complete the job a second time.

Revision ID: 0006
Revises: 0005
"""
import sqlalchemy as sa
from alembic import op

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('jobs') as batch:
        batch.add_column(sa.Column('attempt', sa.Integer(), nullable=False, server_default='0'))


def downgrade() -> None:
    with op.batch_alter_table('jobs') as batch:
        batch.drop_column('attempt')
