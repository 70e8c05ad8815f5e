"""The model registry on the object store: versions with full lineage, and aliases with history.

Layout (DESIGN.md)::

    registry/<model>/versions/<n>/claim.json        written first, with put-if-absent: claims number n
    registry/<model>/versions/<n>/model.onnx        the artifact (ONNX only; nothing is ever pickled)
    registry/<model>/versions/<n>/card.json         lineage, metrics, gate, reference statistics
    registry/<model>/aliases/<alias>.json           production / canary / shadow -> version
    registry/<model>/aliases/history/<seq>.json     every alias change, append-only

Why it is built this way:

* **Lineage.** A :class:`ModelCard` says everything needed to explain or reproduce a version:
  the dataset version and the sha256 of its manifest, the row window, the code, estimator,
  parameters and seed, the metrics next to the champion's on the same holdout, the gate's
  verdict, and the reference statistics the monitor compares live traffic against.
* **Put-if-absent numbering.** A number is claimed by creating ``claim.json`` with a
  conditional create, so two trainers (or two replicas) can never both own version ``n`` --
  the loser simply tries ``n + 1``. No lock service, no leader.
* **The card is written last.** A version exists once its card exists: a crash after the claim
  or after the artifact leaves an unused number (a gap), never a half-registered version that
  a server could try to load. Loading re-checks the artifact's sha256 against the card.
* **Append-only alias history.** Every alias move is first appended to the history under the
  next sequence number (again put-if-absent, so concurrent moves get distinct numbers), then
  the pointer file is overwritten. The history says who moved what, when and why, and it is
  what :meth:`Registry.rollback` reads to find the version to go back to.

The registry is synchronous like the store; async services call it through
``asyncio.to_thread``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Callable
from typing import Any, Literal, TypeVar, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shared.errors import AlreadyExists, CorruptArtifact, InvalidInput, KeyNotFound, ModelNotFound, StoreError
from shared.events import GateVerdict, Label, UtcDatetime, utc_now
from shared.features import GRAPH_OUTPUTS, FeatureType, Layout, TaskKind
from shared.reference import Reference
from shared.store import ObjectStore

__all__ = [
    "ALIASES",
    "CANARY",
    "PRODUCTION",
    "SHADOW",
    "MAX_ATTEMPTS",
    "Alias",
    "AliasChange",
    "CodeVersion",
    "InputSchema",
    "ModelCard",
    "Registry",
    "alias_key",
    "card_key",
    "claim_key",
    "history_key",
    "onnx_key",
]

log = logging.getLogger(__name__)

Alias = Literal["production", "canary", "shadow"]
ALIASES: tuple[Alias, ...] = get_args(Alias)
"""Every alias, production first."""
PRODUCTION: Alias = "production"
CANARY: Alias = "canary"
SHADOW: Alias = "shadow"

MAX_ATTEMPTS = 100
"""How many numbers a registration (or sequence numbers an alias change) tries before giving up."""

_MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
"""The same rule as :data:`shared.events.ModelName`: a model name is one key segment."""


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CodeVersion(_Frozen):
    """The code that trained a version."""

    package: str
    git_commit: str | None = None


class InputSchema(_Frozen):
    """What a version takes and answers."""

    features: list[str]
    dtype: str = "float32"
    label_values: list[Label]
    types: list[FeatureType] = Field(default_factory=list)
    """Each feature's type in ``features`` order; empty on cards of all-numeric models."""
    layout: Layout = "matrix"
    """The ONNX graph's inputs (see :mod:`shared.features`): one ``[N, F]`` matrix, or one per feature."""
    categories: dict[str, list[str]] = Field(default_factory=dict)
    """Per categorical feature, the categories seen in training (others are unseen at serving)."""
    task: TaskKind = "classification"
    """What the version answers: a class with probabilities (``label``, ``probabilities``) or,
    for a regressor, a number (``prediction``); ``label_values`` is empty for a regressor."""

    @property
    def feature_types(self) -> list[str]:
        """Each feature's type, ``numeric`` for cards written before features had types."""
        return list(self.types) if self.types else ["numeric"] * len(self.features)


class ModelCard(_Frozen):
    """A registered version: where it came from, how good it is, what it expects."""

    model: str
    version: int
    created_at: UtcDatetime = Field(default_factory=utc_now)
    dataset_version: int
    dataset_manifest_sha256: str
    window: dict[str, Any]
    """What rows were used, e.g. ``{"last_rows": 5000, "start_row": 0, "rows": 5000, "since_change": false}``."""
    code: CodeVersion
    estimator: str
    params: dict[str, Any]
    seed: int
    training_rows: int
    holdout_rows: int
    metrics: dict[str, float]
    """The candidate on the holdout."""
    champion_version: int | None = None
    champion_metrics: dict[str, float] | None = None
    """The champion on the same holdout, when there was one."""
    gate: GateVerdict
    onnx_opset: int
    input_schema: InputSchema
    output_names: list[str]
    artifact_key: str
    artifact_sha256: str
    artifact_bytes: int
    training_seconds: float
    reference: Reference
    trigger: str
    trigger_event_id: str | None = None
    reused_from: int | None = None
    """Set when a run registered an earlier version's graph again (a regime seen before came
    back): the graph, estimator, params and ``training_rows`` are that version's, see its card
    for the training lineage; ``metrics``, ``reference`` and ``window`` are this run's."""


def headline(metrics: dict[str, float], digits: int = 4) -> str:
    """A version's holdout figure in one phrase, for listings: accuracy, or a regressor's MAE.

    >>> headline({"accuracy": 0.91234, "f1_macro": 0.9}), headline({"mae": 2.5, "r2": 0.8}), headline({})
    ('accuracy 0.9123', 'mae 2.5000', '-')
    """
    for name in ("accuracy", "mae"):
        if name in metrics:
            return f"{name} {metrics[name]:.{digits}f}"
    return "-"


class AliasChange(_Frozen):
    """One move of an alias; the history keeps every one and the pointer file holds the latest."""

    model: str
    alias: Alias
    version: int | None
    """The version the alias points to after the change; None when it was cleared."""
    previous_version: int | None
    seq: int
    changed_at: UtcDatetime = Field(default_factory=utc_now)
    actor: str
    reason: str


def _versions_prefix(model: str) -> str:
    return f"registry/{model}/versions/"


def claim_key(model: str, version: int) -> str:
    """Key whose conditional create claims version number ``version``."""
    return f"{_versions_prefix(model)}{version}/claim.json"


def onnx_key(model: str, version: int) -> str:
    """Key of a version's ONNX artifact."""
    return f"{_versions_prefix(model)}{version}/model.onnx"


def card_key(model: str, version: int) -> str:
    """Key of a version's card; the version exists once this key does."""
    return f"{_versions_prefix(model)}{version}/card.json"


def alias_key(model: str, alias: str) -> str:
    """Key of an alias's pointer file."""
    return f"registry/{model}/aliases/{alias}.json"


def _history_prefix(model: str) -> str:
    return f"registry/{model}/aliases/history/"


def history_key(model: str, seq: int) -> str:
    """Key of alias change number ``seq`` (zero-padded, so keys sort like numbers)."""
    return f"{_history_prefix(model)}{seq:08d}.json"


def _check_model(model: str) -> str:
    if not isinstance(model, str) or not _MODEL_NAME.match(model):
        raise InvalidInput(
            f"invalid model name {model!r}: use 1-128 letters, digits, '_', '.' or '-', starting with a letter or digit"
        )
    return model


def _check_alias(alias: str) -> Alias:
    for known in ALIASES:
        if alias == known:
            return known
    raise InvalidInput(f"unknown alias {alias!r}; use one of {', '.join(ALIASES)}")


_Record = TypeVar("_Record", bound=BaseModel)


def _parse(kind: type[_Record], data: bytes, key: str) -> _Record:
    try:
        return kind.model_validate_json(data)
    except ValidationError as exc:
        raise CorruptArtifact(f"{key!r} is corrupt: not a valid {kind.__name__} ({exc.error_count()} errors)") from exc


def _seq_of(key: str) -> int | None:
    stem = key.rsplit("/", 1)[-1].removesuffix(".json")
    return int(stem) if stem.isdigit() else None


class Registry:
    """Registers versions, reads cards and verified artifacts, moves aliases.

    Parameters
    ----------
    store
        The object store holding ``registry/``; any number of ``Registry`` instances, in any
        number of processes, may share it.
    """

    def __init__(self, store: ObjectStore) -> None:
        self.store = store

    # --- versions ---------------------------------------------------------------------------

    def _numbers(self, model: str, file_name: str | None) -> list[int]:
        """Version numbers that have ``file_name`` (any file when None), ascending."""
        numbers: set[int] = set()
        for key in self.store.list(_versions_prefix(model)):
            parts = key.split("/")
            if len(parts) == 5 and parts[3].isdigit() and (file_name is None or parts[4] == file_name):
                numbers.add(int(parts[3]))
        return sorted(numbers)

    def versions(self, model: str) -> list[int]:
        """Registered versions, ascending; a claimed number without a card is not one."""
        return self._numbers(_check_model(model), "card.json")

    def latest_version(self, model: str) -> int | None:
        """The newest registered version, or None when the model has none."""
        versions = self.versions(model)
        return versions[-1] if versions else None

    def models(self) -> list[str]:
        """Models with at least one registered version, sorted."""
        names = set()
        for key in self.store.list("registry/"):
            parts = key.split("/")
            if len(parts) == 5 and parts[2] == "versions" and parts[3].isdigit() and parts[4] == "card.json":
                names.add(parts[1])
        return sorted(names)

    def _claim(self, model: str, sha256: str) -> int:
        """Claim the next free version number with a conditional create of its ``claim.json``."""
        claimed = self._numbers(model, None)
        version = (claimed[-1] if claimed else 0) + 1
        for _ in range(MAX_ATTEMPTS):
            claim = {"model": model, "version": version, "claimed_at": utc_now().isoformat(), "artifact_sha256": sha256}
            try:
                self.store.put_if_absent(claim_key(model, version), json.dumps(claim).encode())
            except AlreadyExists:
                log.info("%s: version %d was claimed by another writer; trying %d", model, version, version + 1)
                version += 1
                continue
            return version
        raise AlreadyExists(
            f"{model}: could not claim a version number after {MAX_ATTEMPTS} attempts "
            f"(numbers up to {version - 1} are taken)"
        )

    def register(self, model: str, onnx: bytes, build_card: Callable[[int, str, str], ModelCard]) -> ModelCard:
        """Register an ONNX artifact as the model's next version and return its card.

        The number is claimed first (``claim.json``, put-if-absent; on a lost race the next
        number is tried), then ``build_card`` makes the card, then the artifact is written and
        the card last. Until the card is written the version is invisible, so a crash leaves a
        gap in the numbering and never a half-registered version.

        Parameters
        ----------
        model
            The model name (one key segment, as :data:`shared.events.ModelName`).
        onnx
            The serialised ONNX model.
        build_card
            ``build_card(version, artifact_key, artifact_sha256) -> ModelCard``: the caller fills
            in lineage and metrics once the number and the artifact's key and digest are known.
            The card must carry exactly these values, ``model`` and ``artifact_bytes=len(onnx)``.

        Raises
        ------
        InvalidInput
            The model name is invalid, ``onnx`` is empty, or the card does not describe the
            claimed version (the number then stays claimed but unused).
        AlreadyExists
            No number could be claimed after :data:`MAX_ATTEMPTS` tries.
        """
        _check_model(model)
        if not onnx:
            raise InvalidInput(f"{model}: refusing to register an empty ONNX artifact")
        sha256 = hashlib.sha256(onnx).hexdigest()
        version = self._claim(model, sha256)
        artifact = onnx_key(model, version)
        card = build_card(version, artifact, sha256)
        expected: dict[str, Any] = {
            "model": model,
            "version": version,
            "artifact_key": artifact,
            "artifact_sha256": sha256,
            "artifact_bytes": len(onnx),
        }
        wrong = [
            f"{field}={getattr(card, field)!r} (expected {value!r})"
            for field, value in expected.items()
            if getattr(card, field) != value
        ]
        if wrong:
            raise InvalidInput(
                f"{model}: the card does not describe claimed version {version}: {'; '.join(wrong)}; "
                f"version {version} stays unused"
            )
        self.store.put(artifact, onnx)
        self.store.put(card_key(model, version), card.model_dump_json(indent=2).encode())
        log.info("%s: registered version %d (%d bytes, sha256 %s)", model, version, len(onnx), sha256[:12])
        return card

    def register_built(
        self,
        model: str,
        onnx: bytes,
        input_schema: InputSchema,
        reference: Reference,
        estimator: str,
        source: str,
        **card: Any,
    ) -> ModelCard:
        """Register a graph built outside the trainer (a benchmark's, a test's, an imported one).

        The card carries what serving and monitoring read -- ``input_schema``, ``reference``,
        ``estimator`` -- and no dataset lineage (dataset version 1, a zero manifest digest,
        ``source`` as the code package and the trigger); ``card`` overrides any other field
        (``metrics``, ``training_rows``, ``window``, ...).
        """

        def build(version: int, artifact_key: str, sha256: str) -> ModelCard:
            fields: dict[str, Any] = {
                "dataset_version": 1,
                "dataset_manifest_sha256": "0" * 64,
                "window": {},
                "code": CodeVersion(package=source),
                "params": {},
                "seed": 0,
                "training_rows": 0,
                "holdout_rows": 0,
                "metrics": {},
                "gate": GateVerdict(passed=True, reasons=[f"registered by {source}"]),
                "onnx_opset": 17,
                "output_names": list(GRAPH_OUTPUTS),
                "training_seconds": 0.0,
                "trigger": source,
                **card,
            }
            return ModelCard(
                model=model,
                version=version,
                estimator=estimator,
                input_schema=input_schema,
                reference=reference,
                artifact_key=artifact_key,
                artifact_sha256=sha256,
                artifact_bytes=len(onnx),
                **fields,
            )

        return self.register(model, onnx, build)

    def card(self, model: str, version: int) -> ModelCard:
        """A version's card.

        Raises
        ------
        ModelNotFound
            The model has no registered version, or not this one; the message names both.
        CorruptArtifact
            The stored card does not parse or describes another version.
        """
        key = card_key(_check_model(model), version)
        try:
            data = self.store.get(key)
        except KeyNotFound:
            known = self.versions(model)
            if not known:
                raise ModelNotFound(
                    f"model {model!r} has no registered version (asked for version {version})"
                ) from None
            listed = ", ".join(str(v) for v in known)
            raise ModelNotFound(f"model {model!r} has no version {version} (registered: {listed})") from None
        card = _parse(ModelCard, data, key)
        if card.model != model or card.version != version:
            raise CorruptArtifact(f"{key!r} is corrupt: it describes {card.model!r} version {card.version}")
        return card

    def load_onnx(self, model: str, version: int) -> bytes:
        """A version's ONNX bytes, verified against the card's sha256 and size.

        Raises
        ------
        ModelNotFound
            As :meth:`card`.
        CorruptArtifact
            The artifact is missing or its bytes are not the ones the card describes; bad
            bytes are never returned.
        """
        card = self.card(model, version)
        try:
            data = self.store.get(card.artifact_key)
        except KeyNotFound:
            raise CorruptArtifact(
                f"{model} v{version}: the artifact {card.artifact_key!r} named by the card is missing"
            ) from None
        digest = hashlib.sha256(data).hexdigest()
        if digest != card.artifact_sha256 or len(data) != card.artifact_bytes:
            raise CorruptArtifact(
                f"{model} v{version}: the artifact is corrupt ({len(data)} bytes, sha256 {digest[:12]}…; the card "
                f"says {card.artifact_bytes} bytes, sha256 {card.artifact_sha256[:12]}…); refusing to load it"
            )
        return data

    # --- aliases ----------------------------------------------------------------------------

    def _pointer(self, model: str, alias: Alias) -> AliasChange | None:
        key = alias_key(model, alias)
        try:
            data = self.store.get(key)
        except KeyNotFound:
            return None
        return _parse(AliasChange, data, key)

    def alias(self, model: str, alias: str) -> int | None:
        """The version ``alias`` points to, or None when it is not set (or the model is unknown)."""
        change = self._pointer(_check_model(model), _check_alias(alias))
        return change.version if change is not None else None

    def aliases(self, model: str) -> dict[str, int]:
        """Every set alias of a model and its version."""
        _check_model(model)
        found: dict[str, int] = {}
        for alias in ALIASES:
            change = self._pointer(model, alias)
            if change is not None and change.version is not None:
                found[alias] = change.version
        return found

    def history(self, model: str, alias: str | None = None) -> list[AliasChange]:
        """Alias changes, oldest first: of one alias, or of every alias when ``alias`` is None."""
        _check_model(model)
        wanted = _check_alias(alias) if alias is not None else None
        changes = []
        for key in self.store.list(_history_prefix(model)):
            if _seq_of(key) is None:
                continue
            change = _parse(AliasChange, self.store.get(key), key)
            if wanted is None or change.alias == wanted:
                changes.append(change)
        changes.sort(key=lambda c: c.seq)
        return changes

    def _append(self, model: str, alias: Alias, version: int | None, actor: str, reason: str) -> AliasChange:
        """Append one change to the history under the next free sequence number."""
        previous = self._pointer(model, alias)
        seqs = [seq for key in self.store.list(_history_prefix(model)) if (seq := _seq_of(key)) is not None]
        seq = max(seqs, default=0) + 1
        for _ in range(MAX_ATTEMPTS):
            change = AliasChange(
                model=model,
                alias=alias,
                version=version,
                previous_version=previous.version if previous is not None else None,
                seq=seq,
                actor=actor,
                reason=reason,
            )
            try:
                self.store.put_if_absent(history_key(model, seq), change.model_dump_json().encode())
            except AlreadyExists:
                seq += 1
                continue
            return change
        raise AlreadyExists(f"{model}: could not record a change of {alias} after {MAX_ATTEMPTS} attempts")

    def _newer_change(self, model: str, alias: Alias, seq: int) -> AliasChange | None:
        """The newest history entry of ``alias`` after change ``seq``, or None (reads only those entries)."""
        newest: AliasChange | None = None
        for key in self.store.list(_history_prefix(model)):
            found = _seq_of(key)
            if found is not None and found > seq:
                change = _parse(AliasChange, self.store.get(key), key)
                if change.alias == alias and (newest is None or change.seq > newest.seq):
                    newest = change
        return newest

    def _move_pointer(self, model: str, alias: Alias, change: AliasChange) -> None:
        """Write the pointer, then make sure it ends on the newest history entry of the alias.

        Every writer re-checks the history after each pointer write and writes again while a
        newer entry exists. So the last pointer write of all is followed by a check that found
        nothing newer: the pointer ends on the highest sequence number, whatever the
        interleaving, with no lock (a stale pointer from a slow writer is always overwritten).
        """
        for _ in range(MAX_ATTEMPTS):
            self.store.put(alias_key(model, alias), change.model_dump_json().encode())
            newer = self._newer_change(model, alias, change.seq)
            if newer is None:
                return
            change = newer
        raise StoreError(f"{model}: the {alias} pointer kept moving for {MAX_ATTEMPTS} rounds; try again")

    def set_alias(self, model: str, alias: Alias, version: int | None, actor: str, reason: str) -> AliasChange:
        """Point ``alias`` at ``version`` (None clears it) and return the recorded change.

        The change is appended to the history first, then the pointer is overwritten. When
        changes of one alias race, each gets its own sequence number and the pointer ends on
        the one with the highest (see :meth:`_move_pointer`); ``previous_version`` is the
        pointer as this change found it.

        Raises
        ------
        InvalidInput
            Unknown alias, invalid model name, or an empty actor or reason.
        ModelNotFound
            ``version`` is not a registered version (or the model has none at all).
        """
        _check_model(model)
        alias = _check_alias(alias)
        if not actor.strip() or not reason.strip():
            raise InvalidInput(f"{model}: an alias change needs an actor and a reason")
        if version is not None:
            self.card(model, version)
        elif not self.versions(model):
            raise ModelNotFound(f"model {model!r} has no registered version")
        change = self._append(model, alias, version, actor, reason)
        self._move_pointer(model, alias, change)
        log.info(
            "%s: %s v%s -> v%s (change %d) by %s: %s",
            model,
            alias,
            change.previous_version,
            version,
            change.seq,
            actor,
            reason,
        )
        return change

    def rollback(self, model: str, alias: Alias, actor: str, reason: str) -> AliasChange:
        """Point ``alias`` back at the version it pointed to before its current one.

        The history of the alias is read newest first, skipping entries that set the current
        version again; the first other entry is the target. A rollback is an ordinary change
        in the history, so rolling back twice returns to where it started (an undo of the undo).

        Raises
        ------
        InvalidInput
            The alias is not set, or before its current version it was unset or never set.
        """
        _check_model(model)
        alias = _check_alias(alias)
        current = self.alias(model, alias)
        if current is None:
            raise InvalidInput(f"{model}: {alias} is not set, so there is nothing to roll back")
        target: int | None = None
        for change in reversed(self.history(model, alias)):
            if change.version != current:
                target = change.version
                break
        if target is None:
            raise InvalidInput(
                f"{model}: {alias} pointed to no other version before v{current}; nothing to roll back to"
            )
        return self.set_alias(model, alias, target, actor, f"rollback of v{current} to v{target}: {reason}")
