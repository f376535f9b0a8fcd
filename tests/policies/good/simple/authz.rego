package authz

allow if "admin" in input.user.roles
