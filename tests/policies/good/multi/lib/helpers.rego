package lib.helpers

admin_roles := {"admin", "superuser"}

is_admin(user) if {
	some role in user.roles
	role in admin_roles
}

same_team(user, owner) if {
	data.settings.teams[user.id] == data.settings.teams[owner]
}
