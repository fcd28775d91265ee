"""download passwords, idempotency keys

Revision ID: 0004
Revises: 0003
"""
import sqlalchemy as sa
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('download_passwords', sa.JSON(), nullable=False, server_default='[]'))
        batch_op.add_column(sa.Column('idempotency_key', sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column('request_digest', sa.String(length=64), nullable=True))
        batch_op.create_unique_constraint('uq_jobs_idempotency', ['api_key_id', 'idempotency_key'])
    with op.batch_alter_table('conversions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('password_hash', sa.String(length=200), nullable=True))
    with op.batch_alter_table('outputs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('password_hashes', sa.JSON(), nullable=False, server_default='[]'))
    op.create_index('ix_jobs_created_at', 'jobs', ['created_at'])


def downgrade() -> None:
    op.drop_index('ix_jobs_created_at', table_name='jobs')
    with op.batch_alter_table('outputs', schema=None) as batch_op:
        batch_op.drop_column('password_hashes')
    with op.batch_alter_table('conversions', schema=None) as batch_op:
        batch_op.drop_column('password_hash')
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_constraint('uq_jobs_idempotency', type_='unique')
        batch_op.drop_column('request_digest')
        batch_op.drop_column('idempotency_key')
        batch_op.drop_column('download_passwords')
