"""Fetching a job's remote input into storage, through the outbound guard."""
from __future__ import annotations

from pathlib import Path

from sqlalchemy.orm import Session

from jobs_api import outbound
from jobs_api.inputs import display_name
from jobs_api.models import InputFile
from jobs_api.storage import remove_quietly
from workers.problems import download_failures
from workers.services import Services


def fetch_input(services: Services, session: Session, item: InputFile) -> None:
    """Download the input's URL into storage and mark it ready; a JobProblem if it cannot be."""
    assert item.source is not None
    config = services.config
    with services.storage.incoming_file() as handle:
        path = Path(handle.name)
        try:
            with download_failures():
                fetched = outbound.fetch_to_file(
                    item.source, handle, allow=outbound.Allowance.parse(config.outbound_allow),
                    max_bytes=config.max_input_bytes, timeout=config.download_timeout_seconds,
                )
        except BaseException:
            remove_quietly(path)
            raise
    item.filename = item.filename or display_name(fetched.filename or "") or "file"
    item.content_type = fetched.content_type
    item.size = fetched.size
    item.checksum = fetched.sha256
    item.storage_key = services.storage.adopt_input(path)
    item.status = "ready"
    session.commit()
