// Command launcher runs one TES executor in an image that may have no shell.
//
// An init container copies this static binary into a shared emptyDir; each executor container then
// runs it as its entrypoint:
//
//	launcher [--stdin F] [--stdout F] [--stderr F] [--ignore-error] [--status PREFIX]
//	         [--failed-mark M] -- cmd args...
//
// stdin is read from F; stdout and stderr go both to the container's own streams (so the container
// log holds them) and to F when given. The real exit code (128+n for signal n) is written to the
// container's termination message as "exit_code=N started=T finished=T" (the launcher's own start
// and end, RFC 3339 in UTC to the microsecond: the container status has whole seconds), and
// PREFIX.stdout / PREFIX.stderr receive the
// last 64 KiB of each stream. The launcher exits with the real code, or 0 with --ignore-error so that
// the Pod goes on to the next executor. A command that cannot be started exits 127.
//
// With --failed-mark, a failure (a non-zero code without --ignore-error) writes M and exits 0 too,
// so that the Pod goes on to upload the outputs that exist; a launcher that finds M already there
// runs nothing, writes "skipped: ..." as its termination message and exits 0.
//
// After an OOM kill in its container the launcher always exits non-zero (the code, or 137 if the
// code was 0), --ignore-error and --failed-mark notwithstanding: the kubelet fails an init container
// the runtime reports OOMKilled whatever its exit code, and a Pod whose launcher exited 0 then stays
// Pending for ever. Where the container's cgroup cannot be read, a SIGKILL counts as one.
package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

const tailBytes = 64 * 1024

type tail struct {
	mu   sync.Mutex
	data []byte
}

func (t *tail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.data = append(t.data, p...)
	if len(t.data) > 2*tailBytes {
		t.data = append([]byte(nil), t.data[len(t.data)-tailBytes:]...)
	}
	return len(p), nil
}

func (t *tail) bytes() []byte {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.data) > tailBytes {
		return t.data[len(t.data)-tailBytes:]
	}
	return t.data
}

type options struct {
	stdin, stdout, stderr, status, termination, failedMark string
	ignoreError                                            bool
	command                                                []string
}

func parse(args []string) (options, error) {
	o := options{termination: "/dev/termination-log"}
	for i := 0; i < len(args); i++ {
		value := func() (string, error) {
			if i+1 >= len(args) {
				return "", fmt.Errorf("%s needs a value", args[i])
			}
			i++
			return args[i], nil
		}
		var err error
		switch args[i] {
		case "--stdin":
			o.stdin, err = value()
		case "--stdout":
			o.stdout, err = value()
		case "--stderr":
			o.stderr, err = value()
		case "--status":
			o.status, err = value()
		case "--termination-log":
			o.termination, err = value()
		case "--failed-mark":
			o.failedMark, err = value()
		case "--ignore-error":
			o.ignoreError = true
		case "--":
			o.command = args[i+1:]
			i = len(args)
		default:
			return o, fmt.Errorf("unknown argument %q (the command follows --)", args[i])
		}
		if err != nil {
			return o, err
		}
	}
	if len(o.command) == 0 {
		return o, errors.New("no command after --")
	}
	return o, nil
}

func output(own *os.File, path string, t *tail) (io.Writer, *os.File, error) {
	if path == "" {
		return io.MultiWriter(own, t), nil, nil
	}
	f, err := os.Create(path)
	if err != nil {
		return nil, nil, err
	}
	return io.MultiWriter(own, f, t), f, nil
}

var started = time.Now()

// oomKills is how many processes the kernel's OOM killer has killed in this container's memory
// cgroup (v2: memory.events, v1: memory.oom_control), or -1 when neither can be read.
func oomKills() int {
	for _, path := range []string{"/sys/fs/cgroup/memory.events", "/sys/fs/cgroup/memory/memory.oom_control"} {
		data, err := os.ReadFile(path)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(data), "\n") {
			fields := strings.Fields(line)
			if len(fields) == 2 && fields[0] == "oom_kill" {
				if n, err := strconv.Atoi(fields[1]); err == nil {
					return n
				}
			}
		}
	}
	return -1
}

var oomAtStart = oomKills()

// oomKilled tells whether the OOM killer struck in this container while the command ran: true,
// false, or unknown (the cgroup cannot be read).
func oomKilled() (killed, known bool) {
	now := oomKills()
	if now < 0 || oomAtStart < 0 {
		return false, false
	}
	return now > oomAtStart, true
}

const micro = "2006-01-02T15:04:05.000000Z07:00"

func finish(o options, code int, stdout, stderr *tail) {
	if o.termination != "" {
		message := fmt.Sprintf("exit_code=%d started=%s finished=%s", code,
			started.UTC().Format(micro), time.Now().UTC().Format(micro))
		_ = os.WriteFile(o.termination, []byte(message), 0o644)
	}
	if o.status != "" {
		_ = os.WriteFile(o.status+".stdout", stdout.bytes(), 0o644)
		_ = os.WriteFile(o.status+".stderr", stderr.bytes(), 0o644)
	}
	killed, known := oomKilled()
	if killed {
		// The kubelet fails this container whatever it exits with: make the exit say so.
		if code == 0 {
			code = 128 + int(syscall.SIGKILL)
		}
		os.Exit(code)
	}
	if o.ignoreError {
		os.Exit(0)
	}
	sigkilled := code == 128+int(syscall.SIGKILL)
	if code != 0 && o.failedMark != "" && (known || !sigkilled) {
		if err := os.WriteFile(o.failedMark, []byte(fmt.Sprintf("%d\n", code)), 0o644); err == nil {
			os.Exit(0)
		}
	}
	os.Exit(code)
}

func main() {
	o, err := parse(os.Args[1:])
	if err != nil {
		fmt.Fprintf(os.Stderr, "launcher: %v\n", err)
		os.Exit(2)
	}
	if o.failedMark != "" {
		if _, err := os.Lstat(o.failedMark); err == nil {
			if o.termination != "" {
				_ = os.WriteFile(o.termination, []byte("skipped: an earlier executor failed"), 0o644)
			}
			os.Exit(0)
		}
	}
	stdoutTail, stderrTail := &tail{}, &tail{}
	fail := func(format string, args ...any) {
		message := fmt.Sprintf("launcher: "+format+"\n", args...)
		fmt.Fprint(os.Stderr, message)
		_, _ = stderrTail.Write([]byte(message))
		finish(o, 127, stdoutTail, stderrTail)
	}

	cmd := exec.Command(o.command[0], o.command[1:]...)
	if o.stdin != "" {
		in, err := os.Open(o.stdin)
		if err != nil {
			fail("cannot open stdin: %v", err)
		}
		defer in.Close()
		cmd.Stdin = in
	}
	var files []*os.File
	var f *os.File
	if cmd.Stdout, f, err = output(os.Stdout, o.stdout, stdoutTail); err != nil {
		fail("cannot open stdout: %v", err)
	}
	files = append(files, f)
	if cmd.Stderr, f, err = output(os.Stderr, o.stderr, stderrTail); err != nil {
		fail("cannot open stderr: %v", err)
	}
	files = append(files, f)

	if err := cmd.Start(); err != nil {
		fail("cannot run %s: %v", o.command[0], err)
	}
	signals := make(chan os.Signal, 4)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	go func() {
		for s := range signals {
			_ = cmd.Process.Signal(s)
		}
	}()
	code := 0
	if err := cmd.Wait(); err != nil {
		var exit *exec.ExitError
		if !errors.As(err, &exit) {
			fail("waiting for %s: %v", o.command[0], err)
		}
		if status, ok := exit.Sys().(syscall.WaitStatus); ok && status.Signaled() {
			code = 128 + int(status.Signal())
		} else {
			code = exit.ExitCode()
		}
	}
	for _, f := range files {
		if f != nil {
			_ = f.Close()
		}
	}
	finish(o, code, stdoutTail, stderrTail)
}
