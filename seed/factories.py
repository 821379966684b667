"""Builders of realistic rows (Faker), shared by the seeder and the tests.

Every builder takes a seeded ``Faker`` and a ``random.Random``, so the same seed yields the same
rows whatever else ran before.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from faker import Faker

from latency_lab.service.models import LeadStatus

REGIONS = ("emea", "na-east", "na-west", "latam", "apac")
SOURCES = ("webinar", "ads", "referral", "organic", "event", "partner", "cold-outreach")
METADATA_KEYS = ("source", "campaign", "region", "utm_medium", "landing_page", "first_touch")
TAG_WORDS = (
    "enterprise",
    "smb",
    "mid-market",
    "hot",
    "cold",
    "warm",
    "fintech",
    "healthcare",
    "retail",
    "saas",
    "manufacturing",
    "education",
    "public-sector",
    "expansion",
    "renewal",
    "trial",
    "demo-booked",
    "champion",
    "budget-approved",
    "competitor",
    "partner-led",
    "inbound",
    "outbound",
    "priority",
    "nurture",
    "event-lead",
    "webinar",
    "referral",
    "churn-risk",
    "vip",
)
# Funnel shape: most leads are new, few are won.
STATUS_WEIGHTS = {
    LeadStatus.NEW: 40,
    LeadStatus.CONTACTED: 25,
    LeadStatus.QUALIFIED: 15,
    LeadStatus.PROPOSAL: 8,
    LeadStatus.WON: 5,
    LeadStatus.LOST: 7,
}
EPOCH = datetime(2025, 1, 15)


@dataclass(frozen=True)
class UserRow:
    id: int
    name: str
    email: str
    region: str


@dataclass(frozen=True)
class LeadRow:
    id: int
    owner_id: int
    company: str
    contact_name: str
    email: str
    status: str
    score: int
    created_at: datetime
    tag_ids: tuple[int, ...] = ()
    metadata: dict[str, str] = field(default_factory=dict)


def seeded(seed: int) -> tuple[Faker, random.Random]:
    fake = Faker("en_US")
    fake.seed_instance(seed)
    return fake, random.Random(seed)


def build_users(fake: Faker, rng: random.Random, count: int) -> list[UserRow]:
    users = []
    for user_id in range(1, count + 1):
        name = fake.name()
        local = name.lower().replace(" ", ".").replace("'", "")
        users.append(
            UserRow(user_id, name, f"{local}.{user_id}@latencylab.example", rng.choice(REGIONS))
        )
    return users


def build_tag_names(count: int) -> list[str]:
    if count <= len(TAG_WORDS):
        return list(TAG_WORDS[:count])
    return list(TAG_WORDS) + [f"segment-{i}" for i in range(count - len(TAG_WORDS))]


def build_lead(fake: Faker, rng: random.Random, lead_id: int, *, users: int, tags: int) -> LeadRow:
    statuses = list(STATUS_WEIGHTS)
    first, last = fake.first_name(), fake.last_name()
    company = fake.company()
    domain = "".join(ch for ch in company.lower() if ch.isalnum())[:20] or "example"
    metadata_keys = rng.sample(METADATA_KEYS, rng.randint(3, 6))
    return LeadRow(
        id=lead_id,
        owner_id=rng.randint(1, users),
        company=company,
        contact_name=f"{first} {last}",
        email=f"{first.lower()}.{last.lower()}@{domain}.example",
        status=rng.choices(statuses, weights=[STATUS_WEIGHTS[s] for s in statuses])[0].value,
        score=rng.randint(0, 100),
        created_at=EPOCH + timedelta(minutes=rng.randint(0, 60 * 24 * 300)),
        tag_ids=tuple(sorted(rng.sample(range(1, tags + 1), min(tags, rng.randint(1, 4))))),
        metadata={key: _metadata_value(fake, rng, key) for key in sorted(metadata_keys)},
    )


def _metadata_value(fake: Faker, rng: random.Random, key: str) -> str:
    if key == "source":
        return rng.choice(SOURCES)
    if key == "region":
        return rng.choice(REGIONS)
    if key == "campaign":
        return f"{fake.word()}-{fake.year()}-q{rng.randint(1, 4)}"
    if key == "landing_page":
        return "/" + fake.uri_path(deep=2)
    if key == "first_touch":
        return fake.date_between_dates(EPOCH - timedelta(days=120), EPOCH).isoformat()
    return rng.choice(("email", "cpc", "social", "display"))
