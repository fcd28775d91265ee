"""/v2/jobs and its sub-resources: conversions, input, output, history."""
from __future__ import annotations

from typing import Any

from flask import Response, jsonify, request, stream_with_context
from flask.views import MethodView
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from jobs_api import job_waits
from jobs_api.errors import NotFound, RequestInvalid
from jobs_api.models import Conversion, InputFile, Job, OutputFile
from jobs_api.representation import ConversionOut, HistoryOut, InputOut, JobOut, OutputOut, shown_with
from jobs_api.resources.jobs import schemas
from jobs_api.web import Blueprint, api_key_id, config, load_job, service, session, waits

blp = Blueprint("jobs", __name__, url_prefix="/v2/jobs", description="Conversion jobs")


X_COUNT = {"X-Count": {"description": "Total number of matching jobs", "schema": {"type": "integer"}}}
IDEMPOTENCY = {"name": "Idempotency-Key", "in": "header", "required": False, "schema": {"type": "string"},
               "description": "The same key (printable ASCII, at most 255 characters) within 24 h "
                              "returns the job it created instead of creating another."}


def _idempotency_key() -> str | None:
    value = request.headers.get("Idempotency-Key")
    if value is None:
        return None
    if not 0 < len(value) <= 255 or not value.isascii() or not value.isprintable():
        raise RequestInvalid("Invalid Idempotency-Key.",
                             {"Idempotency-Key": ["printable ASCII, 1 to 255 characters"]})
    return value


PREFER_WAIT = {"name": "Prefer", "in": "header", "required": False, "schema": {"type": "string"},
               "description": "`wait=N`: wait at most N seconds for a queued or running job to end "
                              "(`wait=0`: answer at once, to show its progress); see jobs_api/job_waits.py"}


def _status(job_id: str) -> str | None:
    """The job's status as committed now, None if the database cannot say (the wait ends); no
    transaction is left open (a wait holds none)."""
    try:
        return session().scalar(select(Job.status).where(Job.id == job_id))
    except SQLAlchemyError:
        return None
    finally:
        session().rollback()


def _dumped(job: Job) -> bytes:
    with shown_with(config()):
        return jsonify(JobOut().dump(job)).get_data()


def _reloaded(job_id: str, before: bytes) -> bytes:
    """The job's JSON after a wait: as it is now, or as it was before if the database cannot
    say (the status line went out with the first space)."""
    session().expire_all()
    try:
        return _dumped(load_job(job_id))
    except SQLAlchemyError:
        return before


def _find(items: list[Any], item_id: str, what: str) -> Any:
    for item in items:
        if item.id == item_id:
            return item
    raise NotFound(f"{what} not found.")


@blp.route("")
class Jobs(MethodView):
    @blp.arguments(schemas.JobListQuery, location="query")
    @blp.response(200, JobOut(many=True), headers=X_COUNT)
    def get(self, query: dict[str, Any]) -> Any:
        """List the jobs of the calling key, newest first, 50 per page"""
        jobs, total = service().page(api_key_id(), query.get("status"), query["page"])
        return jobs, 200, {"X-Count": str(total)}

    @blp.arguments(schemas.JobCreate)
    @blp.response(201, JobOut)
    @blp.doc(parameters=[IDEMPOTENCY])
    def post(self, body: dict[str, Any]) -> Any:
        """Create a job; it starts at once when complete and process is true"""
        return service().create(api_key_id(), body, idempotency_key=_idempotency_key())


@blp.route("/<job_id>")
class JobItem(MethodView):
    @blp.response(200, JobOut)
    @blp.doc(parameters=[PREFER_WAIT])
    def get(self, job_id: str) -> Any:
        """Get a job; if it is queued or running, the answer may wait for its end (JOB_WAIT_SECONDS)"""
        job = load_job(job_id)
        if job.status not in job_waits.WAITED_ON or not waits().free():
            return job
        seconds = job_waits.held_seconds(config(), request.headers.get("Prefer"), request.headers.get("User-Agent"))
        if seconds <= 0:
            return job
        before = _dumped(job)
        body = waits().answer_when_ended(job.id, seconds, lambda: _status(job.id), lambda: _reloaded(job_id, before))
        return Response(stream_with_context(body), mimetype="application/json")

    @blp.arguments(schemas.JobPatch)
    @blp.response(200, JobOut)
    def patch(self, body: dict[str, Any], job_id: str) -> Any:
        """Change a job that has not started; {"process": true} starts it"""
        return service().update(load_job(job_id), body)

    @blp.response(204)
    def delete(self, job_id: str) -> Any:
        """Cancel a job; its files are deleted and it stays readable as canceled"""
        service().cancel(load_job(job_id))
        return Response(status=204)


@blp.route("/<job_id>/history")
class JobHistory(MethodView):
    @blp.response(200, HistoryOut(many=True))
    def get(self, job_id: str) -> Any:
        """The job's changes of status"""
        return load_job(job_id).history


@blp.route("/<job_id>/conversions")
class Conversions(MethodView):
    @blp.response(200, ConversionOut(many=True))
    def get(self, job_id: str) -> Any:
        """List the job's conversions"""
        return load_job(job_id).conversions

    @blp.arguments(schemas.ConversionSpec)
    @blp.response(201, ConversionOut)
    def post(self, body: dict[str, Any], job_id: str) -> Any:
        """Add a conversion to a job that has not started"""
        return service().add_conversion(load_job(job_id), body)


@blp.route("/<job_id>/conversions/<conversion_id>")
class ConversionItem(MethodView):
    @blp.response(200, ConversionOut)
    def get(self, job_id: str, conversion_id: str) -> Any:
        """Get one conversion"""
        return _conversion(job_id, conversion_id)[1]

    @blp.arguments(schemas.ConversionPatch)
    @blp.response(200, ConversionOut)
    def patch(self, body: dict[str, Any], job_id: str, conversion_id: str) -> Any:
        """Change a conversion; options merge and null resets one"""
        job, item = _conversion(job_id, conversion_id)
        return service().update_conversion(job, item, body)

    @blp.response(204)
    def delete(self, job_id: str, conversion_id: str) -> Any:
        """Remove a conversion from a job that has not started"""
        job, item = _conversion(job_id, conversion_id)
        service().delete_conversion(job, item)
        return Response(status=204)


def _conversion(job_id: str, conversion_id: str) -> tuple[Job, Conversion]:
    job = load_job(job_id)
    return job, _find(job.conversions, conversion_id, "Conversion")


@blp.route("/<job_id>/input")
class Inputs(MethodView):
    @blp.response(200, InputOut(many=True))
    def get(self, job_id: str) -> Any:
        """List the job's inputs"""
        return load_job(job_id).inputs

    @blp.arguments(schemas.InputSpec)
    @blp.response(201, InputOut)
    def post(self, body: dict[str, Any], job_id: str) -> Any:
        """Add an input (remote, base64 or input_id) to a job that has not started"""
        return service().add_input(load_job(job_id), body)


@blp.route("/<job_id>/input/<input_id>")
class InputItem(MethodView):
    @blp.response(200, InputOut)
    def get(self, job_id: str, input_id: str) -> Any:
        """Get one input"""
        return _input(job_id, input_id)[1]

    @blp.arguments(schemas.InputPatch)
    @blp.response(200, InputOut)
    def patch(self, body: dict[str, Any], job_id: str, input_id: str) -> Any:
        """Change an input's file name or options"""
        job, item = _input(job_id, input_id)
        return service().update_input(job, item, body)

    @blp.response(204)
    def delete(self, job_id: str, input_id: str) -> Any:
        """Remove an input from a job that has not started"""
        job, item = _input(job_id, input_id)
        service().delete_input(job, item)
        return Response(status=204)


def _input(job_id: str, input_id: str) -> tuple[Job, InputFile]:
    job = load_job(job_id)
    return job, _find(job.inputs, input_id, "Input")


@blp.route("/<job_id>/output")
class Outputs(MethodView):
    @blp.arguments(schemas.OutputListQuery, location="query")
    @blp.response(200, OutputOut(many=True))
    def get(self, query: dict[str, Any], job_id: str) -> Any:
        """List the job's outputs (of one conversion or input, if asked)"""
        return _outputs(job_id, query)

    @blp.arguments(schemas.OutputPatch)
    @blp.response(200, OutputOut(many=True))
    def patch(self, body: dict[str, Any], job_id: str) -> Any:
        """Rename every output or set their own download password"""
        return service().update_outputs(_outputs(job_id, {}), body)


def _outputs(job_id: str, query: dict[str, Any]) -> list[OutputFile]:
    return [item for item in load_job(job_id).outputs
            if query.get("conversion_id") in (None, item.conversion_id)
            and query.get("input_id") in (None, *item.input_ids)]


@blp.route("/<job_id>/output/<output_id>")
class OutputItem(MethodView):
    @blp.response(200, OutputOut)
    def get(self, job_id: str, output_id: str) -> Any:
        """Get one output"""
        return _output(job_id, output_id)

    @blp.arguments(schemas.OutputPatch)
    @blp.response(200, OutputOut)
    def patch(self, body: dict[str, Any], job_id: str, output_id: str) -> Any:
        """Rename an output's download (the extension stays) or set its own download password"""
        return service().update_outputs([_output(job_id, output_id)], body)[0]

    @blp.response(204)
    def delete(self, job_id: str, output_id: str) -> Any:
        """Delete an output and its file"""
        service().delete_output(_output(job_id, output_id))
        return Response(status=204)


def _output(job_id: str, output_id: str) -> OutputFile:
    return _find(load_job(job_id).outputs, output_id, "Output")  # type: ignore[no-any-return]
