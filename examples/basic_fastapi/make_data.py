"""Writes data.json, the example's users and projects (seeded, so the file is reproducible).

    python examples/basic_fastapi/make_data.py

- 2,000 users ``u1``..``u2000``; ``u1``..``u5`` are admins, ``u6``..``u10`` are the finance team,
  everyone else has the role ``user``.
- 200 projects ``p1``..``p200``; every user belongs to 1 to 3 of them, popular projects (by a
  Zipf law) are bigger; each project has one or two owners, the rest are members.

The same document is the policies' ``data`` and the app's stand-in database.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

USERS = 2000
PROJECTS = 200
ADMINS = 5
FINANCE = 5
SEED = 2024

FIRST = ["Ada", "Alan", "Barbara", "Claude", "Dennis", "Edsger", "Frances", "Grace", "Ken"]
LAST = ["Hopper", "Kay", "Knuth", "Lamport", "Liskov", "Lovelace", "Ritchie", "Turing", "Wirth"]


def build(seed: int = SEED) -> dict[str, object]:
    rng = random.Random(seed)
    users: dict[str, dict[str, object]] = {}
    for i in range(1, USERS + 1):
        if i <= ADMINS:
            roles = ["admin"]
        elif i <= ADMINS + FINANCE:
            roles = ["finance"]
        else:
            roles = ["user"]
        name = f"{rng.choice(FIRST)} {rng.choice(LAST)}"
        users[f"u{i}"] = {"name": name, "roles": roles}

    ids = [f"p{i}" for i in range(1, PROJECTS + 1)]
    popularity = [1 / rank**1.1 for rank in range(1, PROJECTS + 1)]
    members: dict[str, dict[str, str]] = {p: {} for p in ids}
    for i in range(ADMINS + 1, USERS + 1):
        for project in set(rng.choices(ids, weights=popularity, k=rng.randint(1, 3))):
            members[project][f"u{i}"] = "member"
    ordinary = [f"u{i}" for i in range(ADMINS + FINANCE + 1, USERS + 1)]
    for project in ids:
        while len(members[project]) < 3:  # even the least popular project has a team
            members[project][rng.choice(ordinary)] = "member"
        team = sorted(members[project], key=lambda u: int(u[1:]))
        for owner in rng.sample(team, k=1 if len(team) < 10 else 2):
            members[project][owner] = "owner"
        members[project] = {u: members[project][u] for u in team}

    projects = {p: {"name": f"project {p[1:]}", "members": members[p]} for p in ids}
    return {"users": users, "projects": projects}


def main() -> None:
    path = Path(__file__).with_name("data.json")
    doc = build()
    # One user or project per line: readable, and small diffs when the generator changes.
    lines = ["{"]
    for section in ("users", "projects"):
        lines.append(f'  "{section}": {{')
        items = list(doc[section].items())  # type: ignore[attr-defined]
        for n, (key, value) in enumerate(items):
            comma = "," if n < len(items) - 1 else ""
            lines.append(f"    {json.dumps(key)}: {json.dumps(value)}{comma}")
        lines.append("  }," if section == "users" else "  }")
    lines.append("}")
    path.write_text("\n".join(lines) + "\n")
    print(f"wrote {path} ({path.stat().st_size:,} bytes)")


if __name__ == "__main__":
    main()
