"""Presets: named option sets, public (shipped here) or private to a key. No Flask here.

A conversion names one with its `preset` option; the preset's options apply first and
the conversion's own options win. Presets are resolved when a conversion is validated
and again when it runs, so a changed private preset applies to jobs not yet started.
"""
from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from jobs_api import catalog
from jobs_api.errors import NotFound, RequestInvalid, WrongState
from jobs_api.models import Preset

_SHIPPED: tuple[dict[str, Any], ...] = (
    {"id": "podcast-loudness", "name": "Podcast loudness: -16 LUFS, -1 dBTP, mono, 44.1 kHz MP3",
     "target": "mp3", "options": {
         "normalize": True, "normalize_type": "ebu", "normalize_target_level_ebu": -16,
         "normalize_true_peak_ebu": -1, "channels": "mono", "frequency": 44100, "audio_bitrate": 96}},
    {"id": "broadcast-ebu-r128", "name": "Broadcast: EBU R128, -23 LUFS, -1 dBTP, 48 kHz WAV",
     "target": "wav", "options": {
         "normalize": True, "normalize_type": "ebu", "normalize_target_level_ebu": -23,
         "normalize_true_peak_ebu": -1, "frequency": 48000, "audio_bitdepth": 24}},
    {"id": "telephone", "name": "Telephone: 8 kHz mono 16 bit WAV",
     "target": "wav", "options": {"frequency": 8000, "channels": "mono", "audio_bitdepth": 16}},
    {"id": "cd-quality", "name": "CD quality: 44.1 kHz, 16 bit, stereo FLAC",
     "target": "flac", "options": {"frequency": 44100, "audio_bitdepth": 16, "channels": "stereo"}},
    {"id": "hires-flac", "name": "Hi-res FLAC: 96 kHz, 24 bit",
     "target": "flac", "options": {"frequency": 96000, "audio_bitdepth": 24}},
)
PUBLIC: dict[str, dict[str, Any]] = {preset["id"]: preset for preset in _SHIPPED}


def preset_json(preset: Preset | dict[str, Any]) -> dict[str, Any]:
    if isinstance(preset, dict):
        return {"id": preset["id"], "name": preset["name"], "category": catalog.CATEGORY,
                "target": preset["target"], "scope": "public", "options": preset["options"]}
    return {"id": preset.id, "name": preset.name, "category": preset.category,
            "target": preset.target, "scope": "private", "options": preset.options}


class PresetService:
    def __init__(self, session: Session) -> None:
        self.session = session

    def listing(self, key_id: str, category: str | None, target: str | None,
                phrases: str | None) -> list[dict[str, Any]]:
        own = self.session.scalars(
            select(Preset).where(Preset.api_key_id == key_id).order_by(Preset.created_at, Preset.id)
        )
        found = [*PUBLIC.values(), *own]
        words = [word.strip().lower() for word in (phrases or "").split(",") if word.strip()]
        return [
            preset_json(preset) for preset in found
            if category in (None, "", catalog.CATEGORY) and target in (None, "", _field(preset, "target"))
            and all(word in str(_field(preset, "name")).lower() for word in words)
        ]

    def get(self, key_id: str, preset_id: str) -> Preset | dict[str, Any]:
        if preset_id in PUBLIC:
            return PUBLIC[preset_id]
        return self.own(key_id, preset_id)

    def own(self, key_id: str, preset_id: str) -> Preset:
        preset = self.session.get(Preset, preset_id)
        if preset is None or preset.api_key_id != key_id:
            if preset_id in PUBLIC:
                raise WrongState("Public presets cannot be changed; create your own instead.")
            raise NotFound("Preset not found.")
        return preset

    def create(self, key_id: str, body: dict[str, Any]) -> Preset:
        target, options = _checked(body["target"], body.get("options") or {})
        preset = Preset(api_key_id=key_id, name=body["name"], category=catalog.CATEGORY,
                        target=target, options=options)
        self.session.add(preset)
        self.session.commit()
        return preset

    def update(self, preset: Preset, body: dict[str, Any]) -> Preset:
        options = dict(preset.options)
        for name, value in (body.get("options") or {}).items():
            if value is None:
                options.pop(name, None)
            else:
                options[name] = value
        preset.target, preset.options = _checked(body.get("target", preset.target), options)
        if body.get("name"):
            preset.name = body["name"]
        self.session.commit()
        return preset

    def delete(self, preset: Preset) -> None:
        self.session.delete(preset)
        self.session.commit()

    def effective_options(self, key_id: str, options: dict[str, Any], path: str = "") -> dict[str, Any]:
        """A conversion's options with its preset's merged underneath (400 for an unknown preset)."""
        preset_id = options.get("preset")
        if not preset_id:
            return options
        if not isinstance(preset_id, str):
            raise RequestInvalid("Invalid preset.", {f"{path}options.preset": ["must be of type string"]})
        try:
            preset = self.get(key_id, preset_id)
        except NotFound:
            raise RequestInvalid("Unknown preset.", {
                f"{path}options.preset": [f"no preset {preset_id!r}; GET /v2/presets lists the available ones"]
            }) from None
        return {**_field(preset, "options"), **options}


def validate_with_preset(presets: PresetService, key_id: str, target: Any, options: Any,
                         path: str = "") -> catalog.Target:
    """Validate a conversion's effective options; problems that come from its preset say so."""
    if not isinstance(options, dict) or not options.get("preset"):
        return catalog.validate(target, options, path)
    effective = presets.effective_options(key_id, options, path)
    try:
        return catalog.validate(target, effective, path)
    except RequestInvalid as error:
        for field_path, messages in error.errors.items():
            name = field_path.rpartition("options.")[2]
            if name in effective and name not in options:
                error.errors[field_path] = [f"{m} (set by preset {options['preset']!r})" for m in messages]
        raise


def _field(preset: Preset | dict[str, Any], name: str) -> Any:
    return preset[name] if isinstance(preset, dict) else getattr(preset, name)


def _checked(target: Any, options: Any) -> tuple[str, dict[str, Any]]:
    if isinstance(options, dict) and "preset" in options:
        raise RequestInvalid("Invalid preset options.", {"options.preset": ["a preset cannot name another preset"]})
    if isinstance(options, dict) and "download_password" in options:
        raise RequestInvalid("Invalid preset options.", {"options.download_password": [
            "passwords are not kept in presets (they are readable); set it on the conversion"]})
    return catalog.validate(target, options).name, options
