"""Request and response shapes of /v2/presets, after api2convert's OpenAPI file."""
from __future__ import annotations

from marshmallow import fields, validate

from jobs_api.catalog import CATEGORY
from jobs_api.resources.jobs.schemas import Strict

NAME = validate.Length(min=1, max=255)


class PresetQuery(Strict):
    category = fields.String()
    target = fields.String()
    filter = fields.String(metadata={"description": "Comma-separated phrases to find in the preset name"})


class PresetCreate(Strict):
    name = fields.String(required=True, validate=NAME)
    target = fields.String(required=True)
    category = fields.String(validate=validate.OneOf([CATEGORY]))
    scope = fields.String(validate=validate.OneOf(["private"]),
                          metadata={"description": "Presets made through the API are private to the key."})
    options = fields.Dict(load_default=dict)


class PresetPatch(Strict):
    name = fields.String(validate=NAME)
    target = fields.String()
    options = fields.Dict(metadata={"description": "Merged into the preset's options; null removes one."})


class PresetOut(Strict):
    id = fields.String()
    name = fields.String()
    category = fields.String()
    target = fields.String()
    scope = fields.String(metadata={"description": "public (shipped with the service) or private (this key's)"})
    options = fields.Dict()
