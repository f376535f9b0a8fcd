package routes

public contains "/health"

public contains path if {
	some name in data.settings.docs
	path := concat("/", ["", "docs", name])
}
