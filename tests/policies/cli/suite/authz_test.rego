package authz_test

import data.authz

test_admin_allowed if {
	authz.allow with input as {"user": {"role": "admin"}}
}

test_public_get if {
	authz.allow with input as {"method": "GET", "path": "/public"}
}

test_guest_denied if {
	not authz.allow with input as {"user": {"role": "guest"}}
}

test_limit_from_data if {
	authz.limit == 10
}

todo_test_later if {
	false
}
