# broken: unexpected token - the `}` at line 4, column 21 closes nothing and no value follows `==`
package authz

allow if input.x == }
