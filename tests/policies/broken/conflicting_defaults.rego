# broken: conflicting defaults - a second `default allow` at line 5, column 1 with a different value
package authz

default allow := false
default allow := true

allow if input.user.role == "admin"
