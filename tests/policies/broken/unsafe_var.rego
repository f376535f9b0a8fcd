# broken: unsafe variable - `x` at line 4, column 28 appears only inside a negated expression
package authz

allow if not input.blocked[x]
