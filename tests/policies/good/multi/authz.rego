package authz

import data.lib.helpers
import data.routes

default allow := false

allow if helpers.is_admin(input.user)

allow if {
	input.method == "GET"
	input.path in routes.public
}

allow if {
	input.method in data.settings.read_methods
	helpers.same_team(input.user, input.owner)
}
