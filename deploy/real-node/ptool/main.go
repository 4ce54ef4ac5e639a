// Command ptool is the whole of the test node's shell-less image: one static program and nothing
// else (no /bin/sh, no libc), as in a distroless or scratch image.
//
//	ptool echo ARGS...      print ARGS on stdout, "err:"ARGS on stderr
//	ptool cat               copy stdin to stdout
//	ptool exit N            exit with N
//	ptool sleep SECONDS     sleep
//	ptool alloc MIB         touch MIB MiB of memory, then hold it for a minute
package main

import (
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: ptool echo|cat|exit|sleep|alloc ...")
		os.Exit(2)
	}
	args := os.Args[2:]
	switch os.Args[1] {
	case "echo":
		fmt.Println(strings.Join(args, " "))
		fmt.Fprintln(os.Stderr, "err:"+strings.Join(args, " "))
	case "cat":
		if _, err := io.Copy(os.Stdout, os.Stdin); err != nil {
			os.Exit(1)
		}
	case "exit":
		code, _ := strconv.Atoi(args[0])
		os.Exit(code)
	case "sleep":
		seconds, _ := strconv.ParseFloat(args[0], 64)
		time.Sleep(time.Duration(seconds * float64(time.Second)))
	case "alloc":
		mib, _ := strconv.Atoi(args[0])
		held := make([][]byte, 0, mib)
		for i := 0; i < mib; i++ {
			block := make([]byte, 1<<20)
			for j := range block {
				block[j] = 1
			}
			held = append(held, block)
		}
		time.Sleep(time.Minute)
		fmt.Println(len(held))
	default:
		fmt.Fprintln(os.Stderr, "ptool: unknown command "+os.Args[1])
		os.Exit(2)
	}
}
