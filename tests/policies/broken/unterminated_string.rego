# broken: unterminated string - the string opened by `"` at line 4, column 27 is never closed
package authz

allow if input.user.id == "alice

deny if input.user.id == "mallory"
