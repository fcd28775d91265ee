"""Publishing a conversion's results: each as a downloadable output, or packed into one zip."""
from __future__ import annotations

import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from jobs_api import catalog
from jobs_api.inputs import display_name
from jobs_api.models import Conversion, OutputFile
from jobs_api.storage import Storage, sha256_file
from workers.outage import surviving_outage
from workers.problems import Failure, JobProblem

if TYPE_CHECKING:
    from workers.conversion import Result
    from workers.run import ConversionRun


def publish(run: ConversionRun, conversion: Conversion, options: dict[str, Any], results: list[Result]) -> None:
    """Make the conversion's results downloadable: each on its own, or packed into one zip
    (several results without allow_multiple_outputs, or more than its threshold)."""
    target = catalog.TARGETS[conversion.target]
    threshold = options.get("allow_multiple_outputs_threshold") or catalog.DEFAULTS["allow_multiple_outputs_threshold"]
    if len(results) > 1 and (not options.get("allow_multiple_outputs") or len(results) > threshold):
        inputs = list(dict.fromkeys(result.input_id for result in results))
        names = {item.id: Path(item.filename or "file").stem for item in run.job.inputs}
        stem = display_name(options.get("output_filename") or "") or (
            names[inputs[0]] if len(inputs) == 1 else f"{target.name}-files")
        archive = run.work / f"{conversion.id}.zip"
        members = _zip(results, archive, run.config.max_output_bytes)
        made = [_adopt(run, conversion, archive, f"{stem}.zip", inputs, "application/zip", {"files": members})]
    else:
        made = [_adopt(run, conversion, result.path, result.filename, [result.input_id], target.content_type,
                       result.metadata) for result in results]

    def store() -> None:
        run.job.outputs.extend(OutputFile(**values) for values in made)
        run.session.commit()

    surviving_outage(run.session, run.services.sessions, store)


def _zip(results: list[Result], archive: Path, limit: int) -> list[dict[str, Any]]:
    """Pack the results into `archive`, file by file from disk (stored: audio does not deflate),
    stopping before a member would take it past `limit` bytes."""
    members, taken = [], set()
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as packed:
        for result in results:
            if archive.stat().st_size + result.path.stat().st_size >= limit:
                raise JobProblem(Failure.ZIP_TOO_LARGE, limit=limit)
            stem, _dot, extension = result.filename.rpartition(".")
            name, count = result.filename, 1
            while name.lower() in taken:
                count += 1
                name = f"{stem} ({count}).{extension}"
            taken.add(name.lower())
            packed.write(result.path, arcname=name)
            members.append({"filename": name, "size": result.path.stat().st_size, "input": result.input_id,
                            "stream": result.stream, **result.metadata})
    return members


def _adopt(run: ConversionRun, conversion: Conversion, path: Path, filename: str, inputs: list[str],
           content_type: str, metadata: dict[str, Any]) -> dict[str, Any]:
    """Move a result into the outputs' storage; the values of its row, a new output of the job
    (with the conversion's password, if it has one)."""
    return dict(
        conversion_id=conversion.id, input_ids=inputs, filename=filename, size=path.stat().st_size,
        checksum=sha256_file(path), content_type=content_type, metadata_=metadata,
        password_hashes=[conversion.password_hash] if conversion.password_hash else [],
        storage_key=run.services.storage.adopt_output(path),
    )


def discard(storage: Storage, session: Session, job_id: str) -> None:
    """Remove a canceled job's outputs: their files and their rows."""
    session.expire_all()
    for output in session.scalars(select(OutputFile).where(OutputFile.job_id == job_id)):
        storage.remove_output(output.storage_key)
        session.delete(output)
    session.commit()
