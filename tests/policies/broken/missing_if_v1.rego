# broken: Rego v0 syntax loaded as v1 - the rule body at line 4, column 7 has no `if`
package authz

allow {
	input.user.role == "admin"
}
