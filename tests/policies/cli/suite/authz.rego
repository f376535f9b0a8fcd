package authz

default allow := false

allow if input.user.role == "admin"

allow if {
	input.method == "GET"
	input.path == "/public"
}

is_admin if input.user.role == "admin"

limit := data.limits.max
