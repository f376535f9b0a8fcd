package authz

# The benchmark policy (a copy lives in tests/cases/realistic.yaml).
#   - admins (input.user.roles contains "admin") may do anything;
#   - anyone may GET /health and anything under /public/;
#   - users may GET /api/v1/projects/{id} when data.projects[id].members lists input.user.id;
#   - everything else is denied, with a reason.
# Matching uses input.path_segments, which the caller derives from the path.

default allow := {"allow": false, "reason": "no rule matches this request"}

allow := {"allow": true, "reason": "admin"} if {
	is_admin
} else := {"allow": true, "reason": "public"} if {
	input.method == "GET"
	is_public
} else := {"allow": false, "reason": "method not allowed"} if {
	input.method != "GET"
} else := {"allow": true, "reason": "member"} if {
	input.method == "GET"
	is_member
} else := {"allow": false, "reason": sprintf("not a member of project %s", [project_id])} if {
	project_id
}

is_admin if "admin" in input.user.roles

is_public if input.path_segments == ["health"]

is_public if {
	count(input.path_segments) > 1
	input.path_segments[0] == "public"
}

# The project id of a path /api/v1/projects/{id}; undefined for any other path.
project_id := input.path_segments[3] if {
	count(input.path_segments) == 4
	input.path_segments[0] == "api"
	input.path_segments[1] == "v1"
	input.path_segments[2] == "projects"
}

is_member if input.user.id in data.projects[project_id].members
