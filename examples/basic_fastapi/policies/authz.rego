package authz

# The middleware's policy, asked for every request except /health and /metrics.
#
# Input (regoguard's request document): method, path, path_segments, query, user.
# input.user is {"id", "name", "scopes"} for a request with a valid bearer token, else null.
# Data (data.json): users[id].roles, projects[id].members[user id] = "owner" | "member".
#
#   - anyone, even without a token, may GET /public/*;
#   - without a token, everything else is 401 with a WWW-Authenticate challenge;
#   - admins may do anything;
#   - members of a project may GET /projects/{id} and anything under it, and may send
#     PUT /projects/{id}: the route checks that one again (data.projects.allow, owners only);
#   - the finance team may GET /projects/{id}/billing of every project: the route asks the
#     billing service who may see a bill (owners and finance), this policy only lets them by;
#   - everything else is 403 with a reason.

default allow := {"allow": false, "reason": "forbidden"}

allow := {"allow": true, "reason": "public"} if {
	public
} else := {
	"allow": false,
	"status": 401,
	"reason": "login required",
	"headers": {"WWW-Authenticate": "Bearer"},
} if {
	input.user == null
} else := {"allow": false, "reason": "unknown user"} if {
	not user
} else := {"allow": true, "reason": "admin"} if {
	"admin" in user.roles
} else := {"allow": true, "reason": sprintf("%s of project %s", [role, project_id])} if {
	member_may
} else := {"allow": true, "reason": "finance"} if {
	finance_may
} else := {"allow": false, "reason": sprintf("%s may not %s this project", [role, input.method])} if {
	role
} else := {"allow": false, "reason": sprintf("not a member of project %s", [project_id])} if {
	project_id
}

public if {
	input.method in {"GET", "HEAD"}
	count(input.path_segments) > 1
	input.path_segments[0] == "public"
}

user := data.users[input.user.id]

# The project of /projects/{id} and of every path under it; undefined elsewhere.
project_id := input.path_segments[1] if {
	count(input.path_segments) > 1
	input.path_segments[0] == "projects"
}

role := data.projects[project_id].members[input.user.id]

member_may if {
	input.method in {"GET", "HEAD"}
	role
}

member_may if {
	input.method == "PUT"
	count(input.path_segments) == 2
	role
}

finance_may if {
	"finance" in user.roles
	input.method in {"GET", "HEAD"}
	count(input.path_segments) == 3
	input.path_segments[2] == "billing"
	data.projects[project_id]
}
