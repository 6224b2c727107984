# Shared by the benchmark scripts (sourced): CPU time of processes from /proc.

# CPU ticks (utime + stime) summed over the given pids (or threads, as PID/task/TID);
# pids that are gone count 0. The
# fields are read after the command name, which may contain spaces.
ticks() {
	local sum=0 p
	for p in "$@"; do
		[ -r "/proc/$p/stat" ] || continue
		sum=$((sum + $(awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$p/stat" 2>/dev/null || echo 0)))
	done
	echo "$sum"
}
