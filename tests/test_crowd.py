"""Many clients at once against the service as users run it: every job accepted is completed
and its output downloads."""
from __future__ import annotations

import base64
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests
from conftest import create_key, make_audio, start_service, wait_until

from jobs_api.config import Config

CLIENTS, JOBS_EACH = 50, 10


def test_500_jobs_from_50_clients_all_complete_and_download(config: Config, tmp_path: Path) -> None:
    wav = make_audio(tmp_path / "crowd.wav", seconds=0.5, rate=8000, channels=1)
    body = {"input": [{"type": "base64", "source": base64.b64encode(wav.read_bytes()).decode(), "filename": "c.wav"}],
            "conversion": [{"target": "mp3"}]}
    service = start_service(config.replace(queue_name="crowd"), tmp_path)
    keys = [create_key(service.settings, f"client-{number}") for number in range(CLIENTS)]

    def client(key: str) -> list[tuple[str, str]]:
        with requests.Session() as http:
            made = [http.post(f"{service.url}/v2/jobs", json=body, headers={"X-Oc-Api-Key": key}, timeout=60)
                    for _ in range(JOBS_EACH)]
        assert [answer.status_code for answer in made] == [201] * JOBS_EACH, made[0].text
        return [(key, answer.json()["id"]) for answer in made]

    try:
        with ThreadPoolExecutor(CLIENTS) as pool:
            jobs = [job for made in pool.map(client, keys) for job in made]
        assert len({job_id for _key, job_id in jobs}) == CLIENTS * JOBS_EACH

        def job(key: str, job_id: str) -> dict:
            return requests.get(f"{service.url}/v2/jobs/{job_id}", headers={"X-Oc-Api-Key": key}, timeout=30).json()

        def downloaded(entry: tuple[str, str]) -> int:
            wait_until(lambda: job(*entry)["status"]["code"] in ("completed", "failed"), seconds=600)
            done = job(*entry)
            assert done["status"]["code"] == "completed", done
            answer = requests.get(done["output"][0]["uri"], timeout=30)
            assert answer.status_code == 200 and answer.content[:3] in (b"ID3", b"\xff\xfb", b"\xff\xf3")
            return len(answer.content)

        with ThreadPoolExecutor(8) as pool:
            sizes = list(pool.map(downloaded, jobs))
        assert len(sizes) == CLIENTS * JOBS_EACH and min(sizes) > 0
    finally:
        service.stop()
