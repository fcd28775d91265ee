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


def _stats(unit: str, value: str, scope: str) -> Any:
    return usage.stats(session(), api_key_id(), unit, value, scope)


@blp.route("/stats/day/<day>/<scope>")
class DayStats(MethodView):
    @blp.response(200, StatsOut(many=True))
    def get(self, day: str, scope: str) -> Any:
        """Usage on one day (yyyy-mm-dd, UTC): single = the calling key, all = every key of its name"""
        return _stats("day", day, scope)


@blp.route("/stats/month/<month>/<scope>")
class MonthStats(MethodView):
    @blp.response(200, StatsOut(many=True))
    def get(self, month: str, scope: str) -> Any:
        """Usage in one month (yyyy-mm, UTC): single = the calling key, all = every key of its name"""
        return _stats("month", month, scope)


@blp.route("/stats/year/<year>/<scope>")
class YearStats(MethodView):
    @blp.response(200, StatsOut(many=True))
    def get(self, year: str, scope: str) -> Any:
        """Usage in one year (yyyy, UTC): single = the calling key, all = every key of its name"""
        return _stats("year", year, scope)


@blp.route("/contracts")
class Contracts(MethodView):
    @blp.response(200, ContractOut(many=True))
    def get(self) -> Any:
        """The calling key's limits on this server and its current use of them"""
        return usage.contracts(session(), config(), api_key_id())
