"""Fetching a job's remote input into storage, through the outbound guard."""
from __future__ import annotations

from sqlalchemy.orm import Session

from jobs_api import outbound
from jobs_api.inputs import display_name
from jobs_api.models import InputFile
from workers.problems import download_failures
from workers.services import Services


def fetch_input(services: Services, session: Session, item: InputFile) -> None:
    """Download the input's URL onto the storage's shelf and mark it ready; a JobProblem if it cannot be."""
    assert item.source is not None
    config = services.config
    received = services.storage.incoming_file()
    try:
        with download_failures():
            fetched = outbound.fetch_to_file(
                item.source, received, allow=outbound.Allowance.parse(config.outbound_allow),  # type: ignore[arg-type]
                max_bytes=config.max_input_bytes, timeout=config.download_timeout_seconds,
            )
        item.storage_key = services.storage.adopt_input(received)
    finally:
        received.discard()  # unless adopted
    item.filename = item.filename or display_name(fetched.filename or "") or "file"
    item.content_type = fetched.content_type
    item.size = fetched.size
    item.checksum = fetched.sha256
    item.status = "ready"
    session.commit()
