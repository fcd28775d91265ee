"""Reference data: job statuses and the conversions catalog."""
from __future__ import annotations

from typing import Any

from flask.views import MethodView
from marshmallow import Schema, fields, validate

from jobs_api import catalog
from jobs_api.models import STATUS_INFO
from jobs_api.representation import StatusOut
from jobs_api.web import MAX_PAGE, Blueprint

blp = Blueprint("info", __name__, url_prefix="/v2", description="Statuses and the conversions catalog")
CATALOG_PAGE = 50


class CatalogQuery(Schema):
    category = fields.String()
    target = fields.String()
    page = fields.Integer(load_default=1, validate=validate.Range(min=1, max=MAX_PAGE))


class CatalogEntry(Schema):
    id = fields.String()
    category = fields.String()
    target = fields.String()
    options = fields.Dict(metadata={
        "description": "Option name -> JSON schema (type, enum, minimum, maximum, pattern, default, description)"
    })


@blp.route("/statuses")
class Statuses(MethodView):
    @blp.response(200, StatusOut(many=True))
    def get(self) -> Any:
        """The statuses a job can have"""
        return [{"code": status.value, "info": info} for status, info in STATUS_INFO.items()]


@blp.route("/conversions")
class Conversions(MethodView):
    @blp.arguments(CatalogQuery, location="query")
    @blp.response(200, CatalogEntry(many=True))
    def get(self, query: dict[str, Any]) -> Any:
        """The targets and the options each accepts; [] past the last page"""
        entries = catalog.targets_page(query.get("target"), query.get("category"))
        first = (query["page"] - 1) * CATALOG_PAGE
        return entries[first:first + CATALOG_PAGE]
