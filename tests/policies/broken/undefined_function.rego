# broken: undefined function - `no_such_function` at line 4, column 10 does not exist
package authz

allow if no_such_function(input.user)
