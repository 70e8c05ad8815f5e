"""The one error tree of driftloop, and the one table that maps it to HTTP.

Every error a service raises on purpose derives from :class:`DriftloopError`. Its HTTP status
is not an attribute of each class but a row of :data:`HTTP_STATUS` (as httpx maps the errors of
the layer below through one table): :func:`http_status` finds an error's row by walking its
class's MRO, so a subclass without a row of its own answers with its parent's status.
``err.status_code`` reads the same table. HTTP adapters turn any of them into
``{"error": "..."}`` with that status (:func:`shared.http.encode_error`); Kafka adapters send
the message that caused a 4xx to ``<topic>.dlq``.

::

    DriftloopError (500)
    ├── ConfigError (500)            a setting is missing or malformed
    ├── InvalidEvent (422)           bytes on a topic are not a valid event
    ├── InvalidInput (422)           a request or file a user gave is not valid
    │   ├── InvalidSpec (422)        a model spec breaks its schema
    │   ├── MalformedRequest (400)   a request body cannot be parsed at all (not JSON, bad framing)
    │   └── UnsupportedEncoding (415) a request body in a Content-Encoding the service does not read
    ├── Forbidden (403)              the admin token is missing or wrong
    ├── MethodNotAllowed (405)       a route called with a method it does not take
    ├── PayloadTooLarge (413)        a request body, or a record to publish, is over its limit
    ├── NotFound (404)
    │   ├── KeyNotFound (404)        an object-store key does not exist
    │   ├── ModelNotFound (404)
    │   └── VersionNotLoaded (404)   a registered version this replica has not loaded
    ├── AlreadyExists (409)          put-if-absent lost the race: the key exists
    ├── StoreError (503)             the object store failed or is unreachable
    │   └── CorruptArtifact (503)    a stored object fails its integrity check
    └── BrokerUnavailable (503)      the Kafka broker cannot be reached

>>> http_status(VersionNotLoaded("credit v3 is not loaded here"))
404
>>> CorruptArtifact("shard sha256 mismatch").status_code
503
"""

from __future__ import annotations

from typing import Any


class DriftloopError(Exception):
    """Root of every error driftloop raises on purpose."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "status_code" in vars(cls):
            raise TypeError(f"{cls.__name__}: give its HTTP status a row in shared.errors.HTTP_STATUS instead")

    @property
    def status_code(self) -> int:
        """The HTTP status this error maps to (:func:`http_status`)."""
        return http_status(self)


class ConfigError(DriftloopError):
    """A setting is missing or malformed; the message names the environment variable."""


class InvalidEvent(DriftloopError):
    """Bytes read from a topic cannot be decoded into that topic's event."""


class InvalidInput(DriftloopError):
    """Something a user sent (request body, file, argument) is not valid."""


class InvalidSpec(InvalidInput):
    """A model spec breaks its schema; the message gives the path of each bad field."""


class MalformedRequest(InvalidInput):
    """A request body cannot be parsed at all: not JSON, or binary framing that does not add up
    (400, where a well-formed but invalid request is 422)."""


class UnsupportedEncoding(InvalidInput):
    """A request body's ``Content-Encoding`` is not one the service reads."""


class Forbidden(DriftloopError):
    """The caller may not do this: the admin token is missing or wrong."""


class MethodNotAllowed(DriftloopError):
    """A route was called with a method it does not take (the response says which in ``Allow``)."""


class PayloadTooLarge(DriftloopError):
    """A request body, or a Kafka record about to be published, is over the configured limit
    (the message names the limit, and for a record its topic and size)."""


class NotFound(DriftloopError):
    """A named thing does not exist."""


class KeyNotFound(NotFound):
    """An object-store key does not exist."""


class ModelNotFound(NotFound):
    """No model (or model version) of that name is known."""


class VersionNotLoaded(NotFound):
    """A model version is registered but not loaded on this replica (its infer route loads it)."""


class AlreadyExists(DriftloopError):
    """A put-if-absent found the key already there: another writer won."""


class StoreError(DriftloopError):
    """The object store failed or could not be reached."""


class CorruptArtifact(StoreError):
    """A stored object fails its integrity check: a registry artifact's bytes do not match its
    card's sha256, an artifact is missing behind a card, a card or alias record cannot be parsed,
    or a dataset shard's bytes do not match the sha256 its manifest gives."""


class BrokerUnavailable(DriftloopError):
    """The Kafka broker could not be reached."""


HTTP_STATUS: dict[type[DriftloopError], int] = {
    DriftloopError: 500,
    InvalidEvent: 422,
    InvalidInput: 422,
    MalformedRequest: 400,
    UnsupportedEncoding: 415,
    Forbidden: 403,
    MethodNotAllowed: 405,
    PayloadTooLarge: 413,
    NotFound: 404,
    AlreadyExists: 409,
    StoreError: 503,
    BrokerUnavailable: 503,
}
"""The HTTP status of each error class; a class without a row takes its nearest ancestor's."""


def http_status(error: DriftloopError) -> int:
    """The HTTP status of ``error``: the row of the most specific class in its MRO that has one."""
    for cls in type(error).__mro__:
        status = HTTP_STATUS.get(cls)
        if status is not None:
            return status
    raise AssertionError("DriftloopError has a row, and every error derives from it")
