"""The JSON of jobs and their parts, as api2convert's OpenAPI file shapes them.

One schema per shape: it documents the response (openapi.yaml) and dumps the model objects,
for the API's answers and the worker's callbacks alike. URLs are made from the config the
dump runs under (`shown_with`). No Flask here.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from marshmallow import Schema, fields
from marshmallow.experimental.context import Context

from jobs_api import catalog
from jobs_api.config import Config
from jobs_api.models import BEFORE_OUTPUTS, STATUS_INFO, Conversion, Job, JobStatus, OutputFile


@contextmanager
def shown_with(config: Config) -> Iterator[None]:
    """Dumps inside make their URLs from `config`."""
    with Context(config):
        yield


def _config() -> Config:
    return Context.get()  # type: ignore[no-any-return]


def aware(moment: datetime) -> datetime:
    """SQLite hands back naive datetimes; they were stored as UTC."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return aware(moment).astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def download_uri(item: OutputFile, config: Config) -> str:
    return f"{config.server_url}/output/{item.id}"


class _Computed:
    """A field whose value is computed from the whole object (`compute(obj)`) instead of read
    from the attribute of its name; its type, for the docs, is the field class it is mixed into."""

    def __init__(self, compute: Callable[[Any], Any], *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.compute = compute

    def get_value(self, obj: Any, attr: str, accessor: Any = None, default: Any = None) -> Any:
        return self.compute(obj)


class ComputedString(_Computed, fields.String):
    pass


class ComputedInteger(_Computed, fields.Integer):
    pass


class ComputedDict(_Computed, fields.Dict):
    pass


class ComputedList(_Computed, fields.List):
    pass


class ComputedNested(_Computed, fields.Nested):
    pass


def _created(item: Any) -> str | None:
    return iso(item.created_at)


def _modified(item: Any) -> str | None:
    return iso(item.modified_at)


class StatusOut(Schema):
    code = fields.String()
    info = fields.String()


class MessageOut(Schema):
    source = fields.String()
    id_source = fields.String()
    code = fields.Integer()
    message = fields.String()
    details = fields.Dict()


class InputOut(Schema):
    id = fields.String()
    type = fields.String()
    source = fields.String(allow_none=True)
    status = fields.String()
    engine = ComputedString(lambda _item: "auto")
    filename = fields.String(allow_none=True)
    size = fields.Integer(allow_none=True)
    checksum = fields.String(allow_none=True)
    content_type = fields.String(allow_none=True)
    options = fields.Dict()
    parameters = ComputedDict(lambda _item: {})
    created_at = ComputedString(_created)
    modified_at = ComputedString(_modified)


def _echoed_options(item: Conversion) -> dict[str, Any]:
    """Every option of the target, null where unset (the contract's echo rule)."""
    target = catalog.TARGETS.get(item.target)
    return {name: item.options.get(name) for name in (target.options if target else {})}


class ConversionOut(Schema):
    id = fields.String()
    target = fields.String()
    category = fields.String()
    options = ComputedDict(_echoed_options)
    metadata = fields.Dict(attribute="metadata_")
    output_target = ComputedList(lambda _item: [], fields.Dict())


class OutputSource(Schema):
    conversion = fields.String(allow_none=True)
    input = fields.List(fields.String())


class OutputOut(Schema):
    id = fields.String()
    source = ComputedNested(lambda item: {"conversion": item.conversion_id, "input": item.input_ids}, OutputSource)
    filename = fields.String()
    uri = ComputedString(lambda item: download_uri(item, _config()))
    size = fields.Integer()
    status = fields.String()
    content_type = fields.String()
    downloads_counter = fields.Integer()
    checksum = fields.String()
    created_at = ComputedString(_created)
    metadata = fields.Dict(attribute="metadata_")


def _status(job: Job) -> dict[str, str]:
    return {"code": job.status, "info": job.status_info or STATUS_INFO[JobStatus(job.status)]}


def _outputs(job: Job) -> list[OutputFile]:
    # A job polled while it waits or downloads is not read again for outputs it cannot have.
    return [] if job.status in BEFORE_OUTPUTS else job.outputs


class JobOut(Schema):
    id = fields.String()
    token = fields.String()
    type = ComputedString(lambda _job: "job")
    status = ComputedNested(_status, StatusOut)
    progress = fields.Integer(allow_none=True, metadata={"description": "Percent done while processing."})
    errors = fields.List(fields.Nested(MessageOut))
    warnings = fields.List(fields.Nested(MessageOut))
    process = fields.Boolean()
    fail_on_input_error = fields.Boolean()
    fail_on_conversion_error = fields.Boolean()
    conversion = ComputedList(lambda job: job.conversions, fields.Nested(ConversionOut))
    limits = ComputedDict(lambda _job: {})
    input = ComputedList(lambda job: job.inputs, fields.Nested(InputOut))
    output = ComputedList(_outputs, fields.Nested(OutputOut))
    callback = fields.String(allow_none=True)
    notify_status = fields.Boolean()
    server = ComputedString(lambda _job: _config().server_url)
    spent = ComputedInteger(lambda _job: 0)
    created_at = ComputedString(_created)
    modified_at = ComputedString(_modified)


class HistoryOut(Schema):
    id = fields.String()
    status = fields.String()
    info = fields.String(allow_none=True)
    created_at = ComputedString(_created)


JOB_OUT = JobOut()


def job_json(job: Job, config: Config) -> dict[str, Any]:
    """The job as /v2 shows it (and its callbacks carry it)."""
    with shown_with(config):
        return JOB_OUT.dump(job)  # type: ignore[no-any-return]
