"""The error tree and its one mapping to HTTP: statuses, the MRO walk, the response bytes."""

from __future__ import annotations

import doctest

import orjson
import pytest

import shared.errors
import shared.http
from shared.errors import (
    HTTP_STATUS,
    AlreadyExists,
    BrokerUnavailable,
    ConfigError,
    CorruptArtifact,
    DriftloopError,
    Forbidden,
    InvalidEvent,
    InvalidInput,
    InvalidSpec,
    KeyNotFound,
    MalformedRequest,
    MethodNotAllowed,
    ModelNotFound,
    NotFound,
    PayloadTooLarge,
    StoreError,
    UnsupportedEncoding,
    VersionNotLoaded,
    http_status,
)
from shared.http import INTERNAL_ERROR, encode_error

ERRORS_BY_STATUS: dict[int, list[type[DriftloopError]]] = {
    400: [MalformedRequest],
    403: [Forbidden],
    404: [NotFound, KeyNotFound, ModelNotFound, VersionNotLoaded],
    405: [MethodNotAllowed],
    409: [AlreadyExists],
    413: [PayloadTooLarge],
    415: [UnsupportedEncoding],
    422: [InvalidEvent, InvalidInput, InvalidSpec],
    500: [DriftloopError, ConfigError],
    503: [StoreError, CorruptArtifact, BrokerUnavailable],
}
"""What clients have always been answered (the integration tests check many of these)."""
STATUS = {cls: status for status, classes in ERRORS_BY_STATUS.items() for cls in classes}


@pytest.mark.parametrize(("cls", "status"), STATUS.items(), ids=lambda v: getattr(v, "__name__", str(v)))
def test_every_error_maps_to_its_status(cls: type[DriftloopError], status: int) -> None:
    err = cls("why")
    assert http_status(err) == status
    assert err.status_code == status, "status_code reads the same table"
    assert encode_error(err) == (status, b'{"error":"why"}')


def test_the_tree_drawn_in_the_docstring_is_every_error_class() -> None:
    defined = {v for v in vars(shared.errors).values() if isinstance(v, type) and issubclass(v, DriftloopError)}
    assert defined == set(STATUS), "a new error needs a place in this test (and in the module's tree)"
    for cls in defined:
        assert f" {cls.__name__} ({STATUS[cls]})" in (shared.errors.__doc__ or ""), cls.__name__


def test_an_error_without_a_row_takes_its_nearest_ancestors_status() -> None:
    class ShardMissing(KeyNotFound):
        pass

    class TooManyRetries(StoreError):
        pass

    assert ShardMissing not in HTTP_STATUS and ShardMissing("x").status_code == 404
    assert TooManyRetries("x").status_code == 503


def test_a_status_is_given_in_the_table_not_on_the_class() -> None:
    with pytest.raises(TypeError, match="HTTP_STATUS"):

        class Teapot(DriftloopError):
            status_code = 418


def test_any_other_exception_is_a_500_without_detail() -> None:
    status, body = encode_error(RuntimeError("password=hunter2"))
    assert status == 500
    assert orjson.loads(body) == {"error": INTERNAL_ERROR}
    assert b"hunter2" not in body


def test_messages_are_sent_as_json_text() -> None:
    status, body = encode_error(InvalidInput('feature "größe": not a number\n'))
    assert status == 422 and orjson.loads(body) == {"error": 'feature "größe": not a number\n'}


def test_module_doctests_pass() -> None:
    assert doctest.testmod(shared.errors).failed == 0
    assert doctest.testmod(shared.http).failed == 0


async def test_a_fastapi_app_answers_with_the_mapping_and_lets_the_service_observe() -> None:
    import httpx
    from fastapi import FastAPI, Request

    from shared.http import add_error_handler

    app = FastAPI()
    seen: list[tuple[str, int]] = []

    def observe(request: Request, status: int) -> None:
        seen.append((request.url.path, status))

    add_error_handler(app, observe)

    @app.get("/missing")
    async def missing() -> None:
        raise VersionNotLoaded("credit v3 is not loaded here")

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        response = await client.get("/missing")
    assert (response.status_code, response.headers["content-type"]) == (404, "application/json")
    assert response.content == b'{"error":"credit v3 is not loaded here"}'
    assert seen == [("/missing", 404)]
