"""A service's HTTP endpoint: what it answers besides its two routes, that /health still
answers when the event loop is stuck, and that serving it loads no web framework.
(The routes' content, metrics and health checks of a running host, is tested in
test_telemetry.)"""

from __future__ import annotations

import asyncio
import threading

import httpx
import pytest
from prometheus_client import CollectorRegistry, Counter

from services.errors import ConfigurationError
from services.service_endpoint import ServiceEndpoint
from tests.helpers import modules_a_service_loads


async def _all_ok() -> dict[str, str]:
    return {"broker": "ok"}


async def test_it_serves_the_registry_and_refuses_other_paths_and_methods() -> None:
    registry = CollectorRegistry()
    Counter("probe_hits", "hits", registry=registry).inc(3)
    endpoint = ServiceEndpoint(registry, _all_ok, host="127.0.0.1", port=0)
    await endpoint.start()
    url = endpoint.url
    try:
        async with httpx.AsyncClient(base_url=url) as http:
            metrics = await http.get("/metrics")
            assert metrics.status_code == 200
            assert "probe_hits_total 3.0" in metrics.text
            health = await http.get("/health")
            assert (health.status_code, health.json()) == (
                200,
                {"status": "ok", "checks": {"broker": "ok"}},
            )
            missing = await http.get("/nothing")
            assert (missing.status_code, missing.text) == (404, "no such path: /nothing\n")
            posted = await http.post("/health")
            assert (posted.status_code, posted.headers["allow"]) == (405, "GET, HEAD")
            for path in ("/metrics", "/health"):
                head = await http.head(path)
                assert (head.status_code, head.content) == (200, b"")
    finally:
        await endpoint.stop()
    with pytest.raises(httpx.ConnectError):
        async with httpx.AsyncClient() as http:
            await http.get(url + "/health")


async def test_health_says_the_event_loop_is_stuck_instead_of_hanging() -> None:
    endpoint = ServiceEndpoint(
        CollectorRegistry(), _all_ok, host="127.0.0.1", port=0, loop_timeout_s=0.2
    )
    await endpoint.start()
    answers: list[tuple[int, bytes]] = []

    def probe() -> None:
        response = httpx.get(endpoint.url + "/health", timeout=10)
        answers.append((response.status_code, response.content))

    try:
        prober = threading.Thread(target=probe)
        prober.start()
        prober.join(timeout=10)  # blocks the event loop until the probe has its answer
        assert answers == [
            (
                503,
                b'{"status": "unhealthy", "checks": '
                b'{"event_loop": "did not run the checks within 0.2s (stuck?)"}}',
            )
        ]
        await asyncio.sleep(0)  # the loop runs again: so do the checks
        async with httpx.AsyncClient(base_url=endpoint.url) as http:
            assert (await http.get("/health")).status_code == 200
    finally:
        await endpoint.stop()


async def test_a_request_that_stop_overtakes_answers_503_and_its_checks_are_cancelled() -> None:
    started, cancelled = asyncio.Event(), asyncio.Event()

    async def never_done() -> dict[str, str]:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return {}

    endpoint = ServiceEndpoint(
        CollectorRegistry(), never_done, host="127.0.0.1", port=0, loop_timeout_s=30
    )
    await endpoint.start()
    url = endpoint.url
    probe = asyncio.create_task(asyncio.to_thread(httpx.get, url + "/health", timeout=30))
    await asyncio.wait_for(started.wait(), 10)
    await endpoint.stop()
    answer = await asyncio.wait_for(probe, 10)
    assert (answer.status_code, answer.json()["checks"]) == (503, {"service": "stopping"})
    assert cancelled.is_set()


async def test_checks_that_raise_are_a_failing_check_not_a_server_error() -> None:
    async def broken() -> dict[str, str]:
        raise KeyError("not a finding")

    endpoint = ServiceEndpoint(CollectorRegistry(), broken, host="127.0.0.1", port=0)
    await endpoint.start()
    try:
        async with httpx.AsyncClient(base_url=endpoint.url) as http:
            answer = await http.get("/health")
    finally:
        await endpoint.stop()
    assert (answer.status_code, answer.json()["checks"]) == (
        503,
        {"checks": "could not be run (KeyError; see the log)"},
    )


async def test_an_empty_host_serves_every_interface_and_ipv6_urls_have_brackets() -> None:
    anywhere = ServiceEndpoint(CollectorRegistry(), _all_ok, host="", port=0)
    ipv6 = ServiceEndpoint(CollectorRegistry(), _all_ok, host="::1", port=0)
    await anywhere.start()
    await ipv6.start()
    try:
        assert ipv6.url == f"http://[::1]:{ipv6.port}"
        async with httpx.AsyncClient() as http:
            for url in (f"http://127.0.0.1:{anywhere.port}", ipv6.url):
                assert (await http.get(url + "/health")).status_code == 200
    finally:
        await anywhere.stop()
        await ipv6.stop()


async def test_a_port_in_use_is_a_configuration_error() -> None:
    first = ServiceEndpoint(CollectorRegistry(), _all_ok, host="127.0.0.1", port=0)
    await first.start()
    try:
        second = ServiceEndpoint(CollectorRegistry(), _all_ok, host="127.0.0.1", port=first.port)
        with pytest.raises(ConfigurationError, match="choose another port with BALLAST_HTTP_PORT"):
            await second.start()
    finally:
        await first.stop()


def test_a_service_loads_no_web_framework(database_url: str) -> None:
    """Neither Starlette nor uvicorn, nor an HTTP protocol library: the endpoint is the
    standard library's, and FastStream's import of uvicorn is left out
    (`services.cli.left_out`); about 5 MB of an idle service."""
    loaded = modules_a_service_loads(database_url)
    assert "services.service_endpoint" in loaded
    assert not {m for m in loaded if m.startswith(("starlette", "uvicorn", "h11", "httptools"))}
