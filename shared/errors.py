"""The one error tree of driftloop.

Every error a service raises on purpose derives from :class:`DriftloopError`, which carries
the HTTP status it maps to. HTTP adapters turn any of them into ``{"error": "..."}`` with that
status; Kafka adapters send the message that caused them to ``<topic>.dlq``.

::

    DriftloopError (500)
    ├── ConfigError (500)            a setting is missing or malformed
    ├── InvalidEvent (422)           bytes on a topic are not a valid event
    ├── InvalidInput (422)           a request or file a user gave is not valid
    │   ├── InvalidSpec (422)        a model spec breaks its schema
    │   ├── MalformedRequest (400)   a request body cannot be parsed at all (not JSON, bad framing)
    │   └── UnsupportedEncoding (415) a request body in a Content-Encoding the service does not read
    ├── PayloadTooLarge (413)
    ├── NotFound (404)
    │   ├── KeyNotFound (404)        an object-store key does not exist
    │   └── ModelNotFound (404)
    ├── AlreadyExists (409)          put-if-absent lost the race: the key exists
    ├── StoreError (503)             the object store failed or is unreachable
    └── BrokerUnavailable (503)      the Kafka broker cannot be reached
"""

from __future__ import annotations


class DriftloopError(Exception):
    """Root of every error driftloop raises on purpose."""

    status_code: int = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ConfigError(DriftloopError):
    """A setting is missing or malformed; the message names the environment variable."""


class InvalidEvent(DriftloopError):
    """Bytes read from a topic cannot be decoded into that topic's event."""

    status_code = 422


class InvalidInput(DriftloopError):
    """Something a user sent (request body, file, argument) is not valid."""

    status_code = 422


class InvalidSpec(InvalidInput):
    """A model spec breaks its schema; the message gives the path of each bad field."""


class MalformedRequest(InvalidInput):
    """A request body cannot be parsed at all: not JSON, or binary framing that does not add up
    (400, where a well-formed but invalid request is 422)."""

    status_code = 400


class UnsupportedEncoding(InvalidInput):
    """A request body's ``Content-Encoding`` is not one the service reads."""

    status_code = 415


class PayloadTooLarge(DriftloopError):
    """A request body is over the configured limit."""

    status_code = 413


class NotFound(DriftloopError):
    """A named thing does not exist."""

    status_code = 404


class KeyNotFound(NotFound):
    """An object-store key does not exist."""


class ModelNotFound(NotFound):
    """No model (or model version) of that name is known."""


class AlreadyExists(DriftloopError):
    """A put-if-absent found the key already there: another writer won."""

    status_code = 409


class StoreError(DriftloopError):
    """The object store failed or could not be reached."""

    status_code = 503


class BrokerUnavailable(DriftloopError):
    """The Kafka broker could not be reached."""

    status_code = 503
