"""Request and response shapes of /v2/jobs, after api2convert's OpenAPI file."""
from __future__ import annotations

from marshmallow import RAISE, Schema, fields, validate

from jobs_api.jobs import INPUT_TYPES
from jobs_api.models import JobStatus


class Strict(Schema):
    class Meta:
        unknown = RAISE


def passwords_field() -> fields.List:
    return fields.List(
            fields.String(validate=validate.Regexp(r"^[ -~]{1,1000}$", error="printable ASCII, 1 to 1000 characters")),
        validate=validate.Length(max=10), metadata={
            "description": "Passwords, any of which opens every output of the job. Stored hashed, never "
                           "returned; PATCH replaces the whole list (it may change after the job finished)."})


class InputSpec(Strict):
    type = fields.String(load_default="remote", validate=validate.OneOf(INPUT_TYPES))
    source = fields.String(required=True, metadata={"description": "URL, base64 content or input id."})
    filename = fields.String()
    engine = fields.String()
    options = fields.Dict()


class ConversionSpec(Strict):
    target = fields.String(required=True)
    category = fields.String()
    options = fields.Dict(allow_none=True)
    metadata = fields.Dict(allow_none=True)


class JobCreate(Strict):
    input = fields.List(fields.Nested(InputSpec), load_default=list)
    conversion = fields.List(fields.Nested(ConversionSpec), load_default=list)
    process = fields.Boolean(load_default=True)
    fail_on_input_error = fields.Boolean(load_default=True)
    fail_on_conversion_error = fields.Boolean(load_default=True)
    callback = fields.String(allow_none=True)
    notify_status = fields.Boolean(load_default=False)
    download_passwords = passwords_field()


class JobPatch(Strict):
    process = fields.Boolean()
    fail_on_input_error = fields.Boolean()
    fail_on_conversion_error = fields.Boolean()
    callback = fields.String(allow_none=True)
    notify_status = fields.Boolean()
    download_passwords = passwords_field()


class JobListQuery(Schema):
    status = fields.String(validate=validate.OneOf([s.value for s in JobStatus]))
    page = fields.Integer(load_default=1, validate=validate.Range(min=1))


class OutputListQuery(Schema):
    conversion_id = fields.String()
    input_id = fields.String()


class ConversionPatch(Strict):
    target = fields.String()
    category = fields.String()
    options = fields.Dict(allow_none=True)
    metadata = fields.Dict(allow_none=True)


class InputPatch(Strict):
    filename = fields.String()
    options = fields.Dict(allow_none=True)


class OutputPatch(Strict):
    filename = fields.String(metadata={"description": "The download's name WITHOUT the extension."})
    download_password = fields.String(
        allow_none=True, validate=validate.Regexp(r"^[ -~]{0,1000}$", error="printable ASCII, at most 1000 characters"),
        metadata={"description": "The output's own password; empty or null removes it."})


# Responses ------------------------------------------------------------------------

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
    engine = fields.String()
    filename = fields.String(allow_none=True)
    size = fields.Integer(allow_none=True)
    checksum = fields.String(allow_none=True)
    content_type = fields.String(allow_none=True)
    options = fields.Dict()
    parameters = fields.Dict()
    created_at = fields.String()
    modified_at = fields.String()


class ConversionOut(Schema):
    id = fields.String()
    target = fields.String()
    category = fields.String()
    options = fields.Dict()
    metadata = fields.Dict()
    output_target = fields.List(fields.Dict())


class OutputSource(Schema):
    conversion = fields.String(allow_none=True)
    input = fields.List(fields.String())


class OutputOut(Schema):
    id = fields.String()
    source = fields.Nested(OutputSource)
    filename = fields.String()
    uri = fields.String()
    size = fields.Integer()
    status = fields.String()
    content_type = fields.String()
    downloads_counter = fields.Integer()
    checksum = fields.String()
    created_at = fields.String()
    metadata = fields.Dict()


class JobOut(Schema):
    id = fields.String()
    token = fields.String()
    type = fields.String()
    status = fields.Nested(StatusOut)
    progress = fields.Integer(allow_none=True, metadata={"description": "Percent done while processing."})
    errors = fields.List(fields.Nested(MessageOut))
    warnings = fields.List(fields.Nested(MessageOut))
    process = fields.Boolean()
    fail_on_input_error = fields.Boolean()
    fail_on_conversion_error = fields.Boolean()
    conversion = fields.List(fields.Nested(ConversionOut))
    limits = fields.Dict()
    input = fields.List(fields.Nested(InputOut))
    output = fields.List(fields.Nested(OutputOut))
    callback = fields.String(allow_none=True)
    notify_status = fields.Boolean()
    server = fields.String()
    spent = fields.Integer()
    created_at = fields.String()
    modified_at = fields.String()


class HistoryOut(Schema):
    id = fields.String()
    status = fields.String()
    info = fields.String(allow_none=True)
    created_at = fields.String()
