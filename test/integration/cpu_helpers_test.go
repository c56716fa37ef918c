package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// cpuTimes is the CPU time (user + system) used so far by the API server,
// etcd and this test process, which runs the controller and the clients.
type cpuTimes struct{ apiserver, etcd, test time.Duration }

// clockTicks is USER_HZ, the unit of /proc/<pid>/stat's times on Linux.
const clockTicks = 100

func readCPUTimes() cpuTimes {
	var t cpuTimes
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, path := range stats {
		b, err := os.ReadFile(path)
		if err != nil {
			continue
		}
		s := string(b)
		open, closing := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
		if open < 0 || closing < open {
			continue
		}
		// Fields after the command: state is field 3, utime 14, stime 15.
		fields := strings.Fields(s[closing+1:])
		if len(fields) < 13 {
			continue
		}
		utime, _ := strconv.ParseInt(fields[11], 10, 64)
		stime, _ := strconv.ParseInt(fields[12], 10, 64)
		used := time.Duration(utime+stime) * time.Second / clockTicks
		switch s[open+1 : closing] {
		case "kube-apiserver":
			t.apiserver += used
		case "etcd":
			t.etcd += used
		}
	}
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) == nil {
		t.test = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	return t
}

func (t cpuTimes) since(before cpuTimes) cpuTimes {
	return cpuTimes{t.apiserver - before.apiserver, t.etcd - before.etcd, t.test - before.test}
}

// perSpec is t shared over n specs, in milliseconds.
func (t cpuTimes) perSpec(n int) string {
	ms := func(d time.Duration) float64 { return d.Seconds() * 1000 / float64(n) }
	return fmt.Sprintf("%.1f / %.1f / %.1f ms", ms(t.apiserver), ms(t.etcd), ms(t.test))
}
