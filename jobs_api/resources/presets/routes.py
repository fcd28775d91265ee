"""/v2/presets: public presets shipped with the service and the calling key's own."""
from __future__ import annotations

from typing import Any

from flask import Response
from flask.views import MethodView

from jobs_api.presets import PresetService, preset_json
from jobs_api.resources.presets import schemas
from jobs_api.web import Blueprint, api_key_id, session

blp = Blueprint("presets", __name__, url_prefix="/v2/presets", description="Named option sets")


def _presets() -> PresetService:
    return PresetService(session())


@blp.route("")
class Presets(MethodView):
    @blp.arguments(schemas.PresetQuery, location="query")
    @blp.response(200, schemas.PresetOut(many=True))
    def get(self, query: dict[str, Any]) -> Any:
        """List the public presets and the calling key's own"""
        return _presets().listing(api_key_id(), query.get("category"), query.get("target"), query.get("filter"))

    @blp.arguments(schemas.PresetCreate)
    @blp.response(201, schemas.PresetOut)
    def post(self, body: dict[str, Any]) -> Any:
        """Create a private preset; its options are checked against the target's catalog"""
        return preset_json(_presets().create(api_key_id(), body))


@blp.route("/<preset_id>")
class PresetItem(MethodView):
    @blp.response(200, schemas.PresetOut)
    def get(self, preset_id: str) -> Any:
        """Get a public preset or one of the calling key's"""
        return preset_json(_presets().get(api_key_id(), preset_id))

    @blp.arguments(schemas.PresetPatch)
    @blp.response(200, schemas.PresetOut)
    def patch(self, body: dict[str, Any], preset_id: str) -> Any:
        """Change one of the calling key's presets; options merge, null removes one"""
        presets = _presets()
        return preset_json(presets.update(presets.own(api_key_id(), preset_id), body))

    @blp.response(204)
    def delete(self, preset_id: str) -> Any:
        """Delete one of the calling key's presets"""
        presets = _presets()
        presets.delete(presets.own(api_key_id(), preset_id))
        return Response(status=204)
