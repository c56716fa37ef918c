package integration

import (
	"context"
	"testing"
	"time"

	"github.com/imagespec/imagespec-controller/test/framework/controlplane"
)

// BenchmarkControlPlaneStart measures a full Start (etcd, kube-apiserver,
// CRDs) and Stop with warm binaries. Run with:
//
//	go test ./test/integration -run '^$' -bench ControlPlaneStart -benchtime 5x
func BenchmarkControlPlaneStart(b *testing.B) {
	binDir := SharedControlPlane(b).BinDir
	var etcd, api, crds, stop time.Duration
	var runs int
	for b.Loop() {
		runs++
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		cp, err := controlplane.Start(ctx, controlplane.Options{BinDir: binDir})
		cancel()
		if err != nil {
			b.Fatal(err)
		}
		t0 := time.Now()
		if err := cp.Stop(); err != nil {
			b.Fatal(err)
		}
		stop += time.Since(t0)
		etcd += cp.Timings.EtcdReady
		api += cp.Timings.APIServerReady
		crds += cp.Timings.CRDsEstablished
	}
	n := float64(runs)
	b.ReportMetric(float64(etcd.Milliseconds())/n, "ms-etcd-ready/op")
	b.ReportMetric(float64(api.Milliseconds())/n, "ms-apiserver-ready/op")
	b.ReportMetric(float64(crds.Milliseconds())/n, "ms-crds-established/op")
	b.ReportMetric(float64(stop.Milliseconds())/n, "ms-stop/op")
}
