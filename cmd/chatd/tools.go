package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/chatd/chatd/auth"
	"github.com/chatd/chatd/chat"
)

// runToken prints a client token: chatd token -user 23 -ttl 24h.
func runToken(args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("chatd token", flag.ContinueOnError)
	fs.SetOutput(stderr)
	user := fs.String("user", "", "user `id` the token is for (required)")
	ttl := fs.Duration("ttl", 24*time.Hour, "how long the token is valid")
	// Read from the environment after parsing: -h must not print it.
	secret := fs.String("secret", "", "HS256 `secret`, the server's (env CHAT_SECRET, which keeps it out of the process list)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if !flagSet(fs, "secret") {
		*secret = getenv("CHAT_SECRET")
	}
	if err := chat.ValidateUser(*user); err != nil {
		return fmt.Errorf("-user: invalid user id: %w", err)
	}
	if *secret == "" {
		return errors.New("no secret: pass -secret or set CHAT_SECRET (the server's)")
	}
	if err := auth.CheckSecret(*secret); err != nil {
		return fmt.Errorf("-secret (or CHAT_SECRET): %w", err)
	}
	if *ttl <= 0 {
		return errors.New("-ttl must be positive")
	}
	tok, err := auth.Mint(*secret, *user, *ttl)
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, tok)
	return nil
}

// runHealth exits 0 when the replica answers 200 on /readyz; it is the
// container health check, which needs no shell.
func runHealth(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("chatd health", flag.ContinueOnError)
	fs.SetOutput(stderr)
	url := fs.String("url", "http://127.0.0.1:8080/readyz", "`URL` to check")
	if err := fs.Parse(args); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, *url, nil)
	if err != nil {
		return fmt.Errorf("health: %w", err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("health: %w", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("health: %s: %s", resp.Status, body)
	}
	fmt.Fprintf(stdout, "%s", body)
	return nil
}
