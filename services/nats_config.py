"""NATS users and permissions, generated from an app's declarations.

Each service gets its own NATS user (an nkey) that may publish and subscribe
only where its work is: a tool reads only its own calls and writes results,
audit and its declared events; an agent reads only its own tasks and results and
writes calls of its declared tools and tasks of its declared delegates. Replies
arrive on a per-service inbox prefix, so no service can read another's replies
(JetStream deliveries of a pull consumer are replies). Two more users: ``admin``
(operators' CLI: everything) and ``client`` (applications: publish tasks, read
task events).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from contracts.subjects import PREFIX, Stream, dlq_subject, task_subject, tool_subject
from services.approvals import BUCKET as APPROVALS
from services.breakers import BUCKET as BREAKERS
from services.identity import SigningKey
from services.presence import BUCKET as SERVICES
from services.rate_limits import BUCKET as RATE_LIMITS
from services.registry import BUCKET as REGISTRY
from services.specs import AgentSpec, ServiceSpec, ToolSpec

_API = "$JS.API"
_BALLAST_STREAMS = [s.value for s in Stream]


@dataclass
class User:
    """One NATS user: its key and what it may do."""

    name: str
    key: SigningKey
    publish: list[str] = field(default_factory=list)
    subscribe: list[str] = field(default_factory=list)

    @property
    def inbox(self) -> str:
        return f"_INBOX_{self.name.replace('-', '_')}"


def _stream_admin() -> list[str]:
    # Every service declares the streams it needs at start-up (create or update);
    # deleting or purging them is left to the admin user.
    return [
        f"{_API}.INFO",
        *(
            f"{_API}.STREAM.{verb}.{stream}"
            for verb in ("INFO", "CREATE", "UPDATE")
            for stream in _BALLAST_STREAMS
        ),
    ]


def _kv(bucket: str, keys: str) -> list[str]:
    """Read a bucket, write ``keys`` of it, and watch it."""
    stream = f"KV_{bucket}"
    return [
        f"{_API}.STREAM.INFO.{stream}",
        f"{_API}.STREAM.CREATE.{stream}",
        f"{_API}.DIRECT.GET.{stream}.>",
        f"{_API}.DIRECT.GET.{stream}",
        f"{_API}.STREAM.MSG.GET.{stream}",
        f"{_API}.CONSUMER.CREATE.{stream}",
        f"{_API}.CONSUMER.CREATE.{stream}.>",
        f"{_API}.CONSUMER.DELETE.{stream}.>",
        f"{_API}.CONSUMER.INFO.{stream}.>",
        f"$KV.{bucket}.{keys}",
    ]


def _durable(stream: Stream, consumer: str) -> list[str]:
    """Create, read and pull from one's own durable consumer, and ack its messages."""
    return [
        f"{_API}.CONSUMER.CREATE.{stream.value}.{consumer}",
        f"{_API}.CONSUMER.CREATE.{stream.value}.{consumer}.>",
        f"{_API}.CONSUMER.DURABLE.CREATE.{stream.value}.{consumer}",
        f"{_API}.CONSUMER.INFO.{stream.value}.{consumer}",
        f"{_API}.CONSUMER.MSG.NEXT.{stream.value}.{consumer}",
        f"$JS.ACK.{stream.value}.{consumer}.>",
    ]


def _common(user: User, service: str) -> None:
    user.publish += [
        *_stream_admin(),
        *_kv(BREAKERS, ">"),
        *_kv(SERVICES, f"{service}.*"),
        dlq_subject(service),
        f"{PREFIX}.event.breaker.>",
        "$JS.FC.>",  # flow-control replies of the ordered consumers that watch KV buckets
    ]
    user.subscribe += [f"{user.inbox}.>"]


def tool_user(spec: ToolSpec) -> User:
    user = User(spec.service, SigningKey.generate())
    _common(user, spec.service)
    user.publish += [
        *_durable(Stream.TOOLS, spec.service),
        *_kv(REGISTRY, "_none_"),  # reads who may call it; writes nothing there
        f"{PREFIX}.result.*.*",
        f"{PREFIX}.event.auth.>",
        *(f"{PREFIX}.event.{event}" for event in spec.events),
    ]
    return user


def agent_user(spec: AgentSpec, parents: Iterable[str]) -> User:
    user = User(spec.service, SigningKey.generate())
    _common(user, spec.service)
    user.publish += [
        *_durable(Stream.TASKS, spec.service),
        *_kv(REGISTRY, spec.name),  # declares its own allow-list only
        *_kv(APPROVALS, f"{spec.name}.>"),
        *_kv(RATE_LIMITS, ">"),  # model calls of every agent share the providers' limits
        f"{_API}.DIRECT.GET.{Stream.RESULTS.value}",
        *(tool_subject(tool) for tool in spec.tools),
        *(task_subject(child) for child in spec.delegates),
        task_subject(spec.name),  # resuming its own suspended tasks
        *(f"{PREFIX}.result.{parent}.*" for parent in parents),
        f"{PREFIX}.event.task.>",
        f"{PREFIX}.event.budget.>",
        f"{PREFIX}.event.approval.>",
        f"{PREFIX}.event.auth.unauthenticated",
    ]
    user.subscribe += [f"{PREFIX}.result.{spec.name}.>"]
    return user


def users_for(specs: Sequence[ServiceSpec]) -> list[User]:
    """A user per service, plus ``admin`` and ``client``."""
    agents = [s for s in specs if isinstance(s, AgentSpec)]
    users: list[User] = []
    for spec in specs:
        if isinstance(spec, AgentSpec):
            parents = [a.name for a in agents if spec.name in a.delegates]
            users.append(agent_user(spec, parents))
        else:
            users.append(tool_user(spec))
    admin = User("admin", SigningKey.generate(), publish=[">"], subscribe=[">"])
    client = User("client", SigningKey.generate())
    client.publish += [
        f"{PREFIX}.task.>",
        f"{_API}.INFO",
        f"{_API}.STREAM.INFO.{Stream.EVENTS.value}",
        f"{_API}.DIRECT.GET.{Stream.EVENTS.value}",
        f"{_API}.CONSUMER.CREATE.{Stream.EVENTS.value}",
        f"{_API}.CONSUMER.CREATE.{Stream.EVENTS.value}.>",
        f"{_API}.CONSUMER.DELETE.{Stream.EVENTS.value}.>",
        f"{_API}.CONSUMER.INFO.{Stream.EVENTS.value}.>",
        "$JS.FC.>",
    ]
    client.subscribe += [f"{client.inbox}.>"]
    return [*users, admin, client]


def render_config(users: Sequence[User]) -> str:
    """The authorization part of a nats-server configuration (JSON is valid nats-server
    syntax); JetStream is switched on from the command line (``-js -sd <dir>``)."""
    entries = [
        {
            "nkey": user.key.public_key,
            "permissions": {
                "publish": {"allow": sorted(set(user.publish))},
                "subscribe": {"allow": sorted(set(user.subscribe))},
            },
        }
        for user in users
    ]
    names = ", ".join(u.name for u in users)
    body = json.dumps({"authorization": {"users": entries}}, indent=2)
    return f"# Generated by 'ballast nats-config' for: {names}\n{body}\n"


def render_credentials(user: User) -> str:
    """The environment a service (or client) needs to connect as ``user``."""
    return (
        f"# NATS user {user.name}: keep secret\n"
        f"BALLAST_NATS_NKEY_SEED={user.key.seed}\n"
        f"BALLAST_NATS_INBOX_PREFIX={user.inbox}\n"
    )
