package e2e

import (
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/imagespec/imagespec-controller/pkg/apis/primehub/v1alpha1"
	"github.com/imagespec/imagespec-controller/pkg/app"
	"github.com/imagespec/imagespec-controller/pkg/backend"
	"github.com/imagespec/imagespec-controller/pkg/backend/inprocess"
)

// With Reproducible, two stores that share nothing build the same pip spec
// into the same image: epoch timestamps, hash-based .pyc files, same layer
// and manifest digests. (An apt step stays irreproducible: dpkg and apt
// write wall-clock times into their logs.)
func TestInprocessReproducible(t *testing.T) {
	env := SharedEnv(t)
	spec := v1alpha1.ImageSpecSpec{BaseImage: env.BaseImage, Packages: v1alpha1.Packages{Pip: []string{"e2e-extra"}}}
	var infos []ImageInfo
	var created [][]string
	for i := 0; i < 2; i++ {
		ns := NewNamespace(t)
		appOpts := env.DefaultOptions(ns, env.Settings)
		opts := env.InprocessOptions()
		opts.StorageDir = filepath.Join(t.TempDir(), "storage")
		opts.Reproducible = true
		opts.Pulls = appOpts.Controller.PullScope()
		c := StartController(t, appOpts, func(clients *app.Clients) (backend.Backend, func(), error) {
			be, err := inprocess.New(opts, clients.Kube)
			if err != nil {
				return nil, nil, err
			}
			return be, func() { _ = be.Close() }, nil
		})
		createSpec(t, c, ns, "same", spec)
		job := WaitJob(t, c, ns, "same", "", buildTimeout)
		requirePhase(t, job, v1alpha1.JobSucceeded, v1alpha1.ReasonSucceeded)
		infos = append(infos, env.Inspect(t, env.Registry, job.Status.Image))
		created = append(created, configTimes(t, env, job.Status.Image))
	}
	base := env.Inspect(t, env.Registry, env.BaseImage)
	n := len(base.Layers)
	for _, ts := range created {
		// The image and the history entries of its own steps carry the
		// epoch; the base image's history keeps its times.
		if len(ts) < 2 || ts[0] != "1970-01-01T00:00:00Z" || ts[len(ts)-1] != "1970-01-01T00:00:00Z" {
			t.Errorf("created times %v: want the image and its steps at the epoch", ts)
		}
	}
	if len(infos[0].Layers) != n+1 || len(infos[1].Layers) != n+1 {
		t.Fatalf("want the base's %d layers and a pip layer: %v, %v", n, infos[0].Layers, infos[1].Layers)
	}
	if infos[0].Layers[n] != infos[1].Layers[n] {
		t.Errorf("pip layers differ: %s, %s", infos[0].Layers[n], infos[1].Layers[n])
	}
	if infos[0].Digest != infos[1].Digest {
		t.Errorf("manifests differ: %s, %s", infos[0].Digest, infos[1].Digest)
	}
}

// configTimes returns the image's created time followed by its history's.
func configTimes(t *testing.T, env *Env, ref string) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := env.Skopeo(ctx, env.Registry, "", "inspect", "--config", "docker://"+ref)
	if err != nil {
		t.Fatal(err)
	}
	var cfg struct {
		Created time.Time
		Config  struct{ Env []string }
		History []struct{ Created time.Time }
	}
	if err := json.Unmarshal(out, &cfg); err != nil {
		t.Fatal(err)
	}
	for _, e := range cfg.Config.Env {
		if strings.HasPrefix(e, "SOURCE_DATE_EPOCH=") {
			t.Errorf("%s keeps the build-time %s", ref, e)
		}
	}
	ts := []string{cfg.Created.UTC().Format(time.RFC3339)}
	for _, h := range cfg.History {
		ts = append(ts, h.Created.UTC().Format(time.RFC3339))
	}
	return ts
}
