package p

f(x) := 1 if x

f(x) := 2 if x

test_ok if {
	true
}

test_wrong if {
	x := 2
	print("x is", x)
	x == 3
	true
}

test_undefined if {
	input.nothing
}

test_conflict if {
	f(true) == 1
}
