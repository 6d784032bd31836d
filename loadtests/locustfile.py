"""Locust scenarios for vitserve: image mix, batch uploads, bad inputs, and a stepped ramp.

Run headless against a server on 127.0.0.1 (loadtests/run.py does this and writes the report):

    .venv/bin/python -m locust -f loadtests/locustfile.py --headless --host http://127.0.0.1:3000 \
        --ramp-users 1,4,16,32 --step-seconds 15 --csv /tmp/lt/locust \
        ClassifyUser BatchUser BadInputUser

A user is one client with one request in flight at a time and no think time, so "users" is the
concurrency the server sees. The StepRamp shape always drives the run: give `--ramp-users 16` for a
fixed load. Payloads are generated and encoded once per process, before the first user starts.
"""

from __future__ import annotations

import csv
import json
import time
from functools import cache
from pathlib import Path
from typing import IO, Any

from locust import LoadTestShape, constant, events, task
from locust.contrib.fasthttp import FastHttpUser

from loadtests import images
from loadtests.payloads import (
    Payload,
    bad_request,
    classify_batch,
    classify_multipart,
    classify_raw,
)
from loadtests.stats import parse_users

BATCH_IMAGES = 8
REQUEST_LOG_FIELDS = ("elapsed_s", "name", "response_time_ms", "status", "ok", "users")


@events.init_command_line_parser.add_listener
def _add_options(parser: Any) -> None:
    parser.add_argument("--ramp-users", default="1,4,16,32", help="users at each step, comma-separated")
    parser.add_argument("--step-seconds", type=float, default=15.0, help="duration of each ramp step")
    parser.add_argument("--request-log", default="", help="CSV of every request, for per-step statistics")


class StepRamp(LoadTestShape):
    """Hold each user count of --ramp-users for --step-seconds, then stop."""

    def tick(self) -> tuple[int, float] | None:
        assert self.runner is not None and self.runner.environment.parsed_options is not None
        options = self.runner.environment.parsed_options
        steps = parse_users(options.ramp_users)
        step = int(self.get_run_time() // options.step_seconds)
        if step >= len(steps):
            return None
        # Spawn a whole step within a second, so that almost all of it runs at the nominal load.
        return steps[step], float(max(steps))


class RequestLog:
    """Appends one CSV row per finished request; the runner cuts it into ramp steps."""

    def __init__(self, environment: Any, path: Path) -> None:
        self.environment = environment
        self.file: IO[str] = path.open("w", newline="")
        self.writer = csv.writer(self.file)
        self.writer.writerow(REQUEST_LOG_FIELDS)
        self.started = time.monotonic()
        environment.events.test_start.add_listener(self.on_test_start)
        environment.events.request.add_listener(self.on_request)
        environment.events.quitting.add_listener(self.on_quitting)

    def on_test_start(self, **_: Any) -> None:
        self.started = time.monotonic()  # the StepRamp shape restarts its clock at the same moment

    def on_request(
        self, name: str, response_time: float, response: Any, exception: BaseException | None, **_: Any
    ) -> None:
        runner = self.environment.runner
        users = runner.user_count if runner is not None else 0
        status = getattr(response, "status_code", 0) or 0  # 0: no HTTP response (connection failed)
        elapsed = time.monotonic() - self.started
        ok = int(exception is None)
        self.writer.writerow((f"{elapsed:.3f}", name, f"{response_time:.2f}", status, ok, users))

    def on_quitting(self, **_: Any) -> None:
        self.file.close()


@events.init.add_listener
def _prepare(environment: Any, **_: Any) -> None:
    options = environment.parsed_options
    if options is not None and options.request_log:
        RequestLog(environment, Path(options.request_log))
    # Encode every payload now: done in a user's on_start it would stall all users (one gevent
    # thread) for seconds, during the first ramp step.
    for user_class in environment.user_classes:
        if issubclass(user_class, VitserveUser):
            user_class.load_payloads()


@cache
def digit_payloads() -> tuple[Payload, ...]:
    return tuple(classify_multipart(image) for image in images.digit_images())


@cache
def web_payloads() -> tuple[Payload, ...]:
    # Both upload forms: multipart (browsers, curl -F) and the raw body (curl --data-binary).
    photos = images.web_photos()
    return tuple(classify_multipart(p) if i % 2 else classify_raw(p) for i, p in enumerate(photos))


@cache
def camera_payloads() -> tuple[Payload, ...]:
    return tuple(classify_raw(image) for image in images.camera_photos())


@cache
def batch_payloads() -> tuple[Payload, ...]:
    mix = images.digit_images() + images.web_photos()
    windows = ([mix[(start + i) % len(mix)] for i in range(BATCH_IMAGES)] for start in range(len(mix)))
    return tuple(classify_batch(window) for window in windows)


@cache
def bad_payloads() -> tuple[Payload, ...]:
    return tuple(bad_request(bad) for bad in images.bad_inputs(images.digit_images()[0]))


class VitserveUser(FastHttpUser):
    abstract = True
    wait_time = constant(0)
    network_timeout = 120.0  # a multi-megapixel upload under load may legitimately take seconds

    @classmethod
    def load_payloads(cls) -> None:
        """Build (once per process) the payloads this kind of user sends."""

    def on_start(self) -> None:
        self.turn = 0

    def next_of(self, payloads: tuple[Payload, ...]) -> Payload:
        """Cycle through `payloads` rather than sample them: every one gets sent, even in a short run."""
        self.turn += 1
        return payloads[self.turn % len(payloads)]

    def send(self, payload: Payload, name: str) -> None:
        """Count a response as a success exactly when it has the status the API promises for it."""
        with self.client.post(
            payload.path,
            data=payload.body,  # type: ignore[arg-type]  # bytes are sent as is; the stub says str
            headers={"Content-Type": payload.content_type},
            name=name,
            catch_response=True,
        ) as response:
            status = response.status_code
            if status != payload.expected_status:
                # Name the payload only for bad inputs, so that Locust groups the failures of good
                # requests by what went wrong, not by which image it happened to.
                what = f"{payload.name}: " if payload.expected_status != 200 else ""
                code = _error_code(response.text)
                response.failure(f"{what}expected {payload.expected_status}, got {status} {code}".rstrip())
            elif status == 200 and not _answers(response.text, payload.images):
                response.failure(f"{payload.name}: 200 without {payload.images} prediction(s)")
            else:
                response.success()


def _error_code(text: str | None) -> str:
    """The `error` field of a vitserve error body ("overloaded", "unavailable", ...), or ""."""
    try:
        body = json.loads(text or "null")
    except json.JSONDecodeError:
        return ""  # not one of our error bodies (a proxy's HTML page, a cut connection)
    return str(body.get("error", "")) if isinstance(body, dict) else ""


def _answers(text: str | None, images_sent: int) -> bool:
    """True when a 200 body holds one prediction per image sent."""
    try:
        body = json.loads(text or "null")
    except json.JSONDecodeError:
        return False  # reported as a failure by the caller, with the request it answered
    if images_sent == 1:
        return isinstance(body, dict) and "label" in body
    results = body.get("results") if isinstance(body, dict) else None
    return isinstance(results, list) and len(results) == images_sent


class DigitUser(VitserveUser):
    """Only small digits: the traffic the default model is for; the batching sweep uses it alone."""

    weight = 6

    @classmethod
    def load_payloads(cls) -> None:
        digit_payloads()

    @task
    def classify_digit(self) -> None:
        self.send(self.next_of(digit_payloads()), "/classify digit")


class ClassifyUser(VitserveUser):
    """One image per request, in the size mix of real uploads: mostly small, some web, a few camera."""

    weight = 6

    @classmethod
    def load_payloads(cls) -> None:
        digit_payloads(), web_payloads(), camera_payloads()

    @task(12)
    def classify_digit(self) -> None:
        self.send(self.next_of(digit_payloads()), "/classify digit")

    @task(6)
    def classify_web_photo(self) -> None:
        self.send(self.next_of(web_payloads()), "/classify 500x375")

    @task(1)
    def classify_camera_photo(self) -> None:
        self.send(self.next_of(camera_payloads()), "/classify camera")


class BatchUser(VitserveUser):
    """/classify_batch with 8 images (digits and web photos) per request."""

    weight = 2

    @classmethod
    def load_payloads(cls) -> None:
        batch_payloads()

    @task
    def classify_batch(self) -> None:
        self.send(self.next_of(batch_payloads()), f"/classify_batch x{BATCH_IMAGES}")


class BadInputUser(VitserveUser):
    """Client mistakes: each must get its documented 4xx, which counts as a success here."""

    weight = 1
    # A trickle, not load: refusals cost the server almost nothing and would otherwise swamp the
    # request counts of the scenarios that matter.
    wait_time = constant(0.5)

    @classmethod
    def load_payloads(cls) -> None:
        bad_payloads()

    @task
    def send_bad_input(self) -> None:
        self.send(self.next_of(bad_payloads()), "/classify bad input")
