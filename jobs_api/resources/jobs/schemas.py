"""Request shapes of /v2/jobs, after api2convert's OpenAPI file (responses: jobs_api/representation.py)."""
from __future__ import annotations

from marshmallow import RAISE, Schema, fields, validate

from jobs_api.inputs import INPUT_TYPES
from jobs_api.models import JobStatus
from jobs_api.web import MAX_PAGE


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
    page = fields.Integer(load_default=1, validate=validate.Range(min=1, max=MAX_PAGE))


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
