package projects

# The route policy of PUT /projects/{project_id}, asked by the Authorize dependency, which adds
# the route template (input.route) and the path parameters (input.path_params) to the input.
# The middleware already let only members through; changing a project takes an owner (or an
# admin). Decisions are tagged with the project, for authz.invalidate(tags=[...]).

default allow := {"allow": false, "reason": "only the project's owners may change it"}

allow := {
	"allow": false,
	"status": 401,
	"reason": "login required",
	"headers": {"WWW-Authenticate": "Bearer"},
} if {
	input.user == null
} else := {"allow": true, "reason": "admin", "tags": [tag]} if {
	"admin" in data.users[input.user.id].roles
} else := {"allow": true, "reason": "owner", "tags": [tag]} if {
	input.route == "/projects/{project_id}"
	input.method == "PUT"
	data.projects[project].members[input.user.id] == "owner"
}

project := input.path_params.project_id

tag := sprintf("project:%s", [project])
