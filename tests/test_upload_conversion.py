"""Converting an upload while it arrives (workers/upload_conversion.py): following the growing file,
telling a complete upload from a dropped one, and taking a result only if it fits."""
from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from pathlib import Path

import pytest
from conftest import TEST_RUNS, make_audio, probe

from jobs_api.catalog import TARGETS
from jobs_api.storage import Storage
from workers import upload_conversion
from workers.ffmpeg import runner, wavheader
from workers.ffmpeg.plan import Limits, Plan, plan_conversion

LIMITS = Limits(max_duration=3600, max_output_bytes=64 * 1024 * 1024, max_channels=8, max_sample_rate=192000)
JOB = "0b0c6f3e-8d1f-4c8e-9a57-3f1c2f7d9e10"


@pytest.fixture()
def storage(tmp_path: Path) -> Storage:
    storage = Storage(tmp_path / "storage")
    storage.ensure()
    return storage


@pytest.fixture(scope="module")
def wav(audio_dir: Path) -> bytes:
    return make_audio(audio_dir / "early.wav", seconds=3.0).read_bytes()


def arriving(storage: Storage, content: bytes) -> tuple[Path, upload_conversion.Arrival]:
    """An upload's file in the incoming folder with `content` written so far."""
    path = storage.incoming / "tmpupload1"
    path.write_bytes(content)
    arrival = upload_conversion.Arrival.open(storage, path.name)
    assert arrival is not None
    return path, arrival


def write_later(path: Path, rest: bytes, then: str) -> threading.Thread:
    """The API's part: the rest of the file after a pause, then adopt ("rename") or drop ("unlink")."""

    def api() -> None:
        time.sleep(0.3)
        with path.open("ab") as handle:
            handle.write(rest)
        time.sleep(0.1)
        if then == "rename":
            os.replace(path, path.with_name("adopted"))
        else:
            path.unlink()

    thread = threading.Thread(target=api)
    thread.start()
    return thread


def test_a_name_that_is_not_an_upload_of_ours_is_refused(storage: Storage) -> None:
    (storage.root / "secret").write_text("x")
    assert upload_conversion.Arrival.open(storage, "../secret") is None
    assert upload_conversion.Arrival.open(storage, "tmpmissing") is None


def test_the_header_is_read_from_the_first_bytes(storage: Storage, wav: bytes) -> None:
    path, arrival = arriving(storage, wav[:4096])
    with arrival:
        assert wavheader.read(path) is None  # the whole file's header says more data than there is
        source = arrival.source()
    assert source is not None and source.duration == pytest.approx(3.0) and source.sample_rate == 44100


def test_a_file_that_is_no_wav_is_not_followed(storage: Storage) -> None:
    _path, arrival = arriving(storage, b"ID3" + os.urandom(upload_conversion.HEADER_BYTES))
    with arrival:
        assert arrival.source() is None


@pytest.mark.parametrize("then", ["rename", "unlink"])
def test_the_feed_follows_the_file_until_it_is_adopted_or_dropped(storage: Storage, wav: bytes, then: str) -> None:
    path, arrival = arriving(storage, wav[:100_000])
    api = write_later(path, wav[100_000:], then)
    with arrival:
        if then == "rename":
            fed = runner.run_fed(["sha256sum"], arrival.feed, sees=TEST_RUNS, deadline_seconds=10)
            assert fed.split()[0] == hashlib.sha256(wav).hexdigest()
        else:
            with pytest.raises(runner.ProcessStopped):
                runner.run_fed(["cat"], arrival.feed, sees=TEST_RUNS, deadline_seconds=10)
    api.join()


def test_the_feed_gives_up_when_the_upload_stalls(
        storage: Storage, wav: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(upload_conversion, "STALL_SECONDS", 0.3)
    _path, arrival = arriving(storage, wav[:100_000])
    with arrival:
        started = time.monotonic()
        with pytest.raises(runner.ProcessStopped):
            runner.run_fed(["cat"], arrival.feed, sees=TEST_RUNS, deadline_seconds=10)
        assert time.monotonic() - started < 2


def test_the_conversion_gives_way_to_a_job_that_waits(storage: Storage, wav: bytes) -> None:
    _path, arrival = arriving(storage, wav[:100_000])  # and no more for now
    with arrival:
        source = arrival.source()
        assert source is not None
        plan = plan_conversion(TARGETS["mp3"], {}, source, LIMITS)
        started = time.monotonic()
        outcome = uploaded(storage, 30).convert("conversion-1", arrival, plan, lambda: True)
    assert outcome.startswith("gave up") and time.monotonic() - started < upload_conversion.STALL_SECONDS
    assert not uploaded(storage, 5).folder.exists()


def test_an_arriving_wav_converts_and_the_job_takes_it(storage: Storage, wav: bytes, tmp_path: Path) -> None:
    path, arrival = arriving(storage, wav[:50_000])
    with arrival:
        source = arrival.source()
        assert source is not None
        plan = plan_conversion(TARGETS["mp3"], {}, source, LIMITS)
        api = write_later(path, wav[50_000:], "rename")
        assert uploaded(storage, 30).convert("conversion-1", arrival, plan, lambda: False) == "converted"
    api.join()
    adopted = path.with_name("adopted")
    partial = tmp_path / "partial.mp3"
    reached = uploaded(storage, 5).take("conversion-1", adopted, plan, partial, lambda: False)
    assert reached == pytest.approx(3.0, abs=0.05)
    made = probe(partial)
    assert (made["codec_name"], float(made["duration"])) == ("mp3", pytest.approx(3.0, abs=0.1))
    assert not uploaded(storage, 5).folder.exists()


def uploaded(storage: Storage, deadline_seconds: float) -> upload_conversion.UploadConversion:
    return upload_conversion.UploadConversion(storage, JOB, LIMITS, deadline_seconds)


def fake_result(storage: Storage, source: Path, plan: Plan, **changes: object) -> None:
    folder = uploaded(storage, 5).folder
    folder.mkdir(parents=True)
    (folder / "lock").write_text("")
    (folder / "output.mp3").write_bytes(b"early")
    found = os.stat(source)
    result = {"conversion": "conversion-1", "command": uploaded(storage, 5).command(plan),
              "file": [found.st_dev, found.st_ino, found.st_size, found.st_mtime_ns], "output": "output.mp3",
              "reached": 3.0, **changes}
    (folder / "result.json").write_text(json.dumps(result))


@pytest.mark.parametrize("change", ["none", "conversion", "command", "file"])
def test_a_result_is_taken_only_for_this_conversion_command_and_file(
        storage: Storage, wav: bytes, tmp_path: Path, change: str) -> None:
    source = tmp_path / "input.wav"
    source.write_bytes(wav)
    info = wavheader.read(source)
    assert info is not None
    plan = plan_conversion(TARGETS["mp3"], {}, info, LIMITS)
    fake_result(storage, source, plan)
    conversion = "conversion-2" if change == "conversion" else "conversion-1"
    if change == "command":
        plan = plan_conversion(TARGETS["mp3"], {"audio_bitrate": 96}, info, LIMITS)
    if change == "file":
        os.utime(source, ns=(0, 0))  # an input is never written again; a changed one is another file
    partial = tmp_path / "partial.mp3"
    reached = uploaded(storage, 5).take(conversion, source, plan, partial, lambda: False)
    assert (reached, partial.exists()) == ((3.0, True) if change == "none" else (None, False))
    assert not uploaded(storage, 5).folder.exists()


def test_a_feed_that_gives_up_stops_the_process_even_if_it_ends_well() -> None:
    def half(out: int, _stop: threading.Event) -> bool:
        os.write(out, b"some")
        return False  # cat then ends with status 0 on the closed pipe

    with pytest.raises(runner.ProcessStopped):
        runner.run_fed(["cat"], half, sees=TEST_RUNS, deadline_seconds=5)
