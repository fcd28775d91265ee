"""/v2/stats and /v2/contracts: usage figures from the job tables."""
from __future__ import annotations

from typing import Any

from flask.views import MethodView
from marshmallow import Schema, fields

from jobs_api import usage
from jobs_api.web import Blueprint, api_key_id, config, session

blp = Blueprint("usage", __name__, url_prefix="/v2", description="Usage statistics and contracts")


class KeyOut(Schema):
    id = fields.String()
    name = fields.String()


class StatsOut(Schema):
    period = fields.String()
    api_key = fields.Nested(KeyOut)
    jobs = fields.Integer()
    jobs_by_status = fields.Dict(keys=fields.String(), values=fields.Integer())
    inputs = fields.Integer()
    input_bytes = fields.Integer()
    outputs = fields.Integer()
    output_bytes = fields.Integer()
    downloads = fields.Integer()


class ContractOut(Schema):
    id = fields.String()
    name = fields.String()
    type = fields.String()
    status = fields.String()
    created_at = fields.String()
    limits = fields.Dict(metadata={"description": "Per-key limits of this server (null: none)"})
    usage = fields.Dict(metadata={"description": "running_jobs, jobs_last_minute, jobs_today"})


@blp.route("/stats/<any(day, month, year):unit>/<period>/<scope>")
class Stats(MethodView):
    @blp.doc(parameters=[
        {"name": "unit", "in": "path", "required": True, "schema": {"type": "string", "enum": list(usage.PERIODS)}},
        {"name": "period", "in": "path", "required": True, "schema": {"type": "string"},
         "description": "yyyy-mm-dd, yyyy-mm or yyyy (UTC), after unit"},
        {"name": "scope", "in": "path", "required": True, "schema": {"type": "string", "enum": list(usage.FILTERS)},
         "description": "single: the calling key; all: every key with its name"},
    ])
    @blp.response(200, StatsOut(many=True))
    def get(self, unit: str, period: str, scope: str) -> Any:
        """Usage in one day, month or year: jobs by status, inputs, outputs, bytes, downloads"""
        return usage.stats(session(), api_key_id(), unit, period, scope)


@blp.route("/contracts")
class Contracts(MethodView):
    @blp.response(200, ContractOut(many=True))
    def get(self) -> Any:
        """The calling key's limits on this server and its current use of them"""
        return usage.contracts(session(), config(), api_key_id())
