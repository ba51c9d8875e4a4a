// Command chatd is a real-time chat server: WebSockets in front, Redis
// behind, in the layout of the seed's chat scheme. Several replicas on one
// Redis act as one server.
//
//	chatd [flags]            serve (chatd -h lists the flags)
//	chatd token -user 23     print a token for a client (needs the secret)
//	chatd migrate -from URL -to URL
//	                         copy a single Redis's data into a Redis Cluster
//	chatd health             exit 0 when a local replica is ready
//	chatd version            print the version
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		// The first signal starts the drain; a second one stops at once.
		<-ctx.Done()
		stop()
	}()
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
	default:
		fmt.Fprintln(os.Stderr, "chatd:", err)
		os.Exit(1)
	}
}

// run is the whole program: main only adds the process's signals, arguments,
// environment and output. Cancelling ctx drains and stops the server.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) > 0 {
		switch args[0] {
		case "token":
			return runToken(args[1:], getenv, stdout, stderr)
		case "migrate":
			return runMigrate(ctx, args[1:], getenv, stdout, stderr)
		case "health":
			return runHealth(ctx, args[1:], stdout, stderr)
		case "version":
			fmt.Fprintln(stdout, "chatd", version)
			return nil
		}
	}
	cfg, err := parseConfig(args, getenv, stdout, stderr)
	if err != nil {
		return err
	}
	if cfg.showVersion {
		fmt.Fprintln(stdout, "chatd", version)
		return nil
	}
	return serve(ctx, cfg, stderr)
}
