"""N+1 detection: the same statement shape (or the same provider) repeated within one request.

An N+1 shows up in a trace as one query for a list followed by N queries that differ only in
their parameters: ``SELECT ... FROM users WHERE users.id = ?`` once per lead. The detector
normalizes every statement to its *shape* (literals, bind parameters and ``IN`` lists collapsed,
whitespace squeezed), groups a request's statements by shape, and reports every shape repeated
at least ``threshold`` times. No minimum duration: on a laptop each lazy load takes 0.1 ms, on
a networked database 1 ms, and the problem is the count, not the speed of one round trip.

Each :class:`Finding` says how to fix it. When the statements carry the ORM relationship that
caused them (``lab.orm.relationship``, set by :mod:`latency_lab.telemetry.orm`), the fix names the
loader:

* many-to-one (``Lead.owner``): ``joinedload(Lead.owner)``, one ``JOIN`` in the list query;
* collection (``Lead.tags``): ``selectinload(Lead.tags)``, one extra ``SELECT ... IN (...)``.

Which of the two a relationship is comes, in order, from the ``relationship_kinds`` mapping the
caller passes (see :func:`relationship_kinds`, which builds it from a declarative registry), then
from the statements themselves (``StatementRecord.collection``, known when the statement watcher
saw the load), then from a name guess: plural-looking attribute names (``tags``, ``items``,
``metadata``) are taken for collections. Third-party providers called inline over and over in
one request are the API flavour of the same problem (``n_plus_one_api``).

Usage::

    findings = detect_n_plus_one(records, threshold=5, calls=["email", "email", ...])
    header_value = Finding.dumps(findings)
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

FindingKind = Literal["n_plus_one_query", "n_plus_one_api"]

API_FIX = "batch the calls or move them to a background job (async_offload)"
GENERIC_QUERY_FIX = (
    "load the related rows up front: joinedload(...) for a many-to-one relationship, "
    "selectinload(...) for a collection, or one query with WHERE ... IN (...)"
)
WRITE_FIX = (
    "batch the writes: session.add_all() then one flush (SQLAlchemy sends one multi-row "
    "INSERT), or insert()/update() with a list of parameter sets"
)
_WRITE_VERBS = ("INSERT", "UPDATE", "DELETE")
_COLLECTION_WORDS = ("metadata", "items", "data", "children", "people", "history")


@dataclass(frozen=True)
class StatementRecord:
    """One database statement of a request, as the detector sees it."""

    statement: str
    duration_ms: float
    relationship: str | None = None
    collection: bool | None = None  # the relationship is a list (known from the mapper)
    origin: str | None = None  # the caller's line that ran it: "app.py:41 in books"
    started_ns: int = 0  # wall clock, for ordering statements from several sources


@dataclass(frozen=True)
class Finding:
    """A repeated statement shape (or provider) within one request, with the fix."""

    kind: FindingKind
    shape: str
    example: str
    count: int
    total_ms: float
    relationship: str | None = None
    fix: str = field(default=GENERIC_QUERY_FIX)
    origin: str | None = None  # where the repeated statements came from, when known
    threshold: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        """One line for a test failure or a log: what repeats, how often, where, and the fix.

        ``Book.author: 10 statements (threshold 5, 2.1 ms in total) from app.py:41 in books;
        fix: joinedload(Book.author) or selectinload(Book.author)``
        """
        what = self.relationship or self.shape
        unit = "calls" if self.kind == "n_plus_one_api" else "statements"
        against = f"threshold {self.threshold}, " if self.threshold else ""
        where = f" from {self.origin}" if self.origin else ""
        return (
            f"{what}: {self.count} {unit} ({against}{self.total_ms:.1f} ms in total){where}; "
            f"fix: {self.fix}{_alternative(self.fix)}"
        )

    @staticmethod
    def dumps(findings: Iterable[Finding]) -> str:
        return json.dumps([finding.to_dict() for finding in findings])

    @staticmethod
    def loads(text: str) -> list[Finding]:
        known = {f.name for f in fields(Finding)}
        return [
            Finding(**{key: value for key, value in item.items() if key in known})
            for item in json.loads(text)
        ]


# --- statement shapes --------------------------------------------------------------------------
_COMMENTS = re.compile(r"/\*.*?\*/|--[^\n]*", re.DOTALL)
_STRINGS = re.compile(r"'(?:[^']|'')*'")
_PARAMS = re.compile(
    r"%\(\w+\)s"  # pyformat: %(name)s
    r"|%s"  # format: %s
    r"|\$\d+"  # numeric: $1
    r"|(?<![:\w]):[A-Za-z_]\w*"  # named: :name (not a PostgreSQL ::cast)
    r"|__\[POSTCOMPILE_\w+\]"  # SQLAlchemy expanding IN before compilation
)
_NUMBERS = re.compile(r"(?<![\w.])[-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?(?![\w.])")
_IN_LISTS = re.compile(r"\bIN\s*\(\s*\?(?:\s*,\s*\?)*\s*\)", re.IGNORECASE)
_VALUES_ROWS = re.compile(r"\(\s*\?(?:\s*,\s*\?)*\s*\)(?:\s*,\s*\(\s*\?(?:\s*,\s*\?)*\s*\))+")
_SPACE = re.compile(r"\s+")


def normalize_statement(sql: str) -> str:
    """The shape of a statement: literals and parameters as ``?``, lists collapsed, one space.

    ``SELECT * FROM t WHERE id = 7`` and ``SELECT * FROM t WHERE id = %(id_1)s`` both become
    ``SELECT * FROM t WHERE id = ?``; ``IN (1, 2, 3)`` becomes ``IN (?)`` and a multi-row
    ``VALUES (?, ?), (?, ?)`` keeps one row.
    """
    shape = _COMMENTS.sub(" ", sql)
    shape = _STRINGS.sub("?", shape)
    shape = _PARAMS.sub("?", shape)
    shape = _NUMBERS.sub("?", shape)
    shape = _IN_LISTS.sub("IN (?)", shape)
    shape = _VALUES_ROWS.sub(lambda match: match.group(0).split(")")[0] + ")", shape)
    return _SPACE.sub(" ", shape).strip().rstrip(";").strip()


# --- detection ---------------------------------------------------------------------------------
def detect_n_plus_one(
    statements: Iterable[StatementRecord],
    *,
    threshold: int = 5,
    calls: Iterable[str] = (),
    relationship_kinds: Mapping[str, bool] | None = None,
) -> list[Finding]:
    """Shapes repeated ``threshold`` times or more, and providers called that often inline.

    ``relationship_kinds`` maps ``"Class.attribute"`` to ``True`` for a collection; names it
    does not hold are guessed from the attribute name. Findings come slowest first.
    """
    groups: dict[str, list[StatementRecord]] = {}
    for record in statements:
        groups.setdefault(normalize_statement(record.statement), []).append(record)
    findings = [
        _query_finding(shape, records, relationship_kinds or {}, threshold)
        for shape, records in groups.items()
        if len(records) >= threshold
    ]
    findings.extend(_api_findings(calls, threshold))
    return sorted(findings, key=lambda finding: (finding.total_ms, finding.count), reverse=True)


def _query_finding(
    shape: str, records: list[StatementRecord], kinds: Mapping[str, bool], threshold: int
) -> Finding:
    relationship = _most_common(record.relationship for record in records)
    known = {
        r.relationship: r.collection for r in records if r.relationship and r.collection is not None
    }
    return Finding(
        kind="n_plus_one_query",
        shape=shape,
        example=records[0].statement,
        count=len(records),
        total_ms=round(sum(record.duration_ms for record in records), 3),
        relationship=relationship,
        fix=WRITE_FIX
        if shape.upper().startswith(_WRITE_VERBS)
        else loader_fix(relationship, {**known, **kinds}),
        origin=_most_common(record.origin for record in records),
        threshold=threshold,
    )


def _most_common(values: Iterable[str | None]) -> str | None:
    counted = Counter(value for value in values if value)
    return counted.most_common(1)[0][0] if counted else None


def _alternative(fix: str) -> str:
    """A many-to-one is fixed by either loader: say so (``selectinload`` keeps rows narrow)."""
    if fix.startswith("joinedload(") and fix.endswith(")"):
        return f" or selectin{fix[len('joined') :]}"
    return ""


def _api_findings(calls: Iterable[str], threshold: int) -> list[Finding]:
    counted = Counter(str(provider) for provider in calls)
    return [
        Finding(
            kind="n_plus_one_api",
            shape=provider,
            example=provider,
            count=count,
            total_ms=0.0,
            fix=API_FIX,
            threshold=threshold,
        )
        for provider, count in counted.items()
        if count >= threshold
    ]


def loader_fix(relationship: str | None, kinds: Mapping[str, bool] | None = None) -> str:
    """``joinedload(X.y)`` for a many-to-one, ``selectinload(X.y)`` for a collection."""
    if not relationship:
        return GENERIC_QUERY_FIX
    known = (kinds or {}).get(relationship)
    is_collection = known if known is not None else looks_like_collection(relationship)
    loader = "selectinload" if is_collection else "joinedload"
    return f"{loader}({relationship})"


def looks_like_collection(relationship: str) -> bool:
    """The name guess used when the mapper is unknown: ``Lead.tags`` yes, ``Lead.owner`` no."""
    attribute = relationship.rsplit(".", 1)[-1].lower()
    if attribute.endswith(_COLLECTION_WORDS) or attribute.endswith(("_list", "_set")):
        return True
    return attribute.endswith("s") and not attribute.endswith(("ss", "us", "is"))


def relationship_kinds(registry: Any) -> dict[str, bool]:
    """``{"Lead.tags": True, "Lead.owner": False, ...}`` from a declarative registry.

    Pass ``Base.registry`` (SQLAlchemy 2.0 ``DeclarativeBase``) so findings need no guessing.
    """
    kinds: dict[str, bool] = {}
    for mapper in registry.mappers:
        for prop in mapper.relationships:
            kinds[f"{mapper.class_.__name__}.{prop.key}"] = bool(prop.uselist)
    return kinds
