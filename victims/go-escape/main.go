// go-escape is a victim program for idagent: it knows nothing about the sandbox it runs in.
// It writes one file inside /tmp/workspace (the guest's only writable directory) and then
// tries to write outside it in several ways, printing one line per attempt.
//
// Exit code: 0 when the inside write worked and every outside write was refused, 1 otherwise,
// so that an escape (or a broken workspace) is visible to whoever runs it.
package main

import (
	"fmt"
	"os"
	"syscall"
	"time"
)

const inside = "/tmp/workspace/go-escape.txt"

// Paths outside the workspace that a sealed guest must not be able to write.
var outside = []string{
	"/etc/idagent-escape",
	"/usr/local/bin/idagent-escape",
	"/idagent-escape",
	"/tmp/idagent-escape",
}

// report prints the outcome of one attempt and returns true when the write succeeded.
func report(what string, err error) bool {
	if err != nil {
		fmt.Printf("denied %s: %v\n", what, err)
		return false
	}
	fmt.Printf("ok %s\n", what)
	return true
}

func main() {
	good := true

	line := fmt.Sprintf("go-escape was here at %s\n", time.Now().UTC().Format(time.RFC3339Nano))
	if !report(inside, os.WriteFile(inside, []byte(line), 0o644)) {
		good = false // the workspace must be writable
	}

	for _, p := range outside {
		if report(p, os.WriteFile(p, []byte(line), 0o644)) {
			good = false
		}
	}

	if report("/idagent-escape-dir", os.Mkdir("/idagent-escape-dir", 0o755)) {
		good = false
	}

	// The same attempt without the os package: a raw open(2) with O_CREAT|O_WRONLY.
	raw := "/etc/idagent-escape-raw"
	fd, err := syscall.Open(raw, syscall.O_CREAT|syscall.O_WRONLY|syscall.O_CLOEXEC, 0o644)
	if err == nil {
		_, err = syscall.Write(fd, []byte(line))
		syscall.Close(fd)
		err = nil // the open itself is the escape, whatever the write did
	}
	if report("syscall.Open "+raw, err) {
		good = false
	}

	if !good {
		fmt.Println("result: FAIL (an outside write succeeded or the workspace write failed)")
		os.Exit(1)
	}
	fmt.Println("result: PASS (sealed)")
}
