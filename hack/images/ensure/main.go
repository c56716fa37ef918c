// Command ensure makes the test base images (cached by recipe hash) and
// prints their OCI archive paths. With -serve it also starts a registry
// holding them and a local PyPI index, prints how to reach both, and runs
// until interrupted: the package sources of a local development setup.
//
//	go run ./hack/images/ensure [name...]
//	go run ./hack/images/ensure -serve -env-file /tmp/imagespec-dev.env
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/imagespec/imagespec-controller/test/framework/images"
	"github.com/imagespec/imagespec-controller/test/framework/pypi"
	"github.com/imagespec/imagespec-controller/test/framework/registry"
)

func main() {
	serve := flag.Bool("serve", false, "start a registry with the images and a PyPI index, and wait for SIGINT/SIGTERM")
	port := flag.Int("registry-port", 0, "registry port with -serve (0: a free one)")
	pypiAddr := flag.String("pypi-addr", "127.0.0.1:0", "PyPI index address with -serve")
	envFile := flag.String("env-file", "", "with -serve, also write the settings to this file")
	flag.Usage = func() {
		fmt.Fprintf(os.Stderr, "usage: ensure [flags] [image...]\nimages: %s\n", strings.Join(images.Names(), " "))
		flag.PrintDefaults()
	}
	flag.Parse()
	names := flag.Args()
	if len(names) == 0 {
		names = images.Names()
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, names, *serve, *port, *pypiAddr, *envFile); err != nil {
		log.Fatal(err)
	}
}

func run(ctx context.Context, names []string, serve bool, port int, pypiAddr, envFile string) error {
	paths := map[string]string{}
	for _, n := range names {
		p, err := images.Ensure(ctx, n)
		if err != nil {
			return err
		}
		paths[n] = p
		if !serve {
			fmt.Printf("%s\t%s\n", n, p)
		}
	}
	if !serve {
		return nil
	}

	reg, err := registry.Start(ctx, registry.Options{
		WorkDir: filepath.Join(images.CacheDir(), "dev"),
		Port:    port,
	})
	if err != nil {
		return err
	}
	defer reg.Stop()
	ix, err := pypi.Listen(pypiAddr,
		pypi.Package{Name: "imagespec-hello", Version: "1.0"},
		pypi.Package{Name: "imagespec-hello", Version: "2.0", Requires: []string{"imagespec-util>=1"}},
		pypi.Package{Name: "imagespec-util", Version: "1.0"},
	)
	if err != nil {
		return err
	}
	defer ix.Close()

	// Credentials stay in the auth file; only its path is printed.
	env := []string{
		"IMAGESPEC_REGISTRY=" + reg.Host,
		"IMAGESPEC_REGISTRY_CERTS_DIR=" + reg.CertsDir,
		"IMAGESPEC_REGISTRY_CA=" + reg.CACertPath,
		"IMAGESPEC_REGISTRY_AUTHFILE=" + reg.AuthFile,
		"IMAGESPEC_REGISTRY_USER=" + reg.Username,
		"IMAGESPEC_PYPI_INDEX=" + ix.URL(),
	}
	for _, n := range names {
		ref, digest, err := images.Push(ctx, n, reg, "base/"+n)
		if err != nil {
			return err
		}
		key := "IMAGESPEC_IMAGE_" + strings.ToUpper(strings.ReplaceAll(n, "-", "_"))
		env = append(env, key+"="+ref, key+"_DIGEST="+digest)
	}
	out := strings.Join(env, "\n") + "\n"
	fmt.Print(out)
	if envFile != "" {
		if err := os.WriteFile(envFile, []byte(out), 0o600); err != nil {
			return err
		}
		defer os.Remove(envFile)
	}
	fmt.Fprintln(os.Stderr, "serving; interrupt to stop")
	<-ctx.Done()
	return nil
}
