package integration

import (
	"context"
	"testing"
	"time"

	"github.com/imagespec/imagespec-controller/test/framework/controlplane"
)

// BenchmarkControlPlaneStart measures a full Start (etcd, kube-apiserver,
// CRDs, and kube-controller-manager in the WithControllerManager case) and
// Stop with warm binaries; both cases run in one go, so their difference
// is the controller-manager's cost on this machine now. Run with:
//
//	go test ./test/integration -run '^$' -bench ControlPlaneStart -benchtime 5x
func BenchmarkControlPlaneStart(b *testing.B) {
	for _, tc := range []struct {
		name string
		kcm  bool
	}{{"APIServerOnly", false}, {"WithControllerManager", true}} {
		b.Run(tc.name, func(b *testing.B) { benchControlPlaneStart(b, tc.kcm) })
	}
}

func benchControlPlaneStart(b *testing.B, kcm bool) {
	binDir := SharedControlPlane(b).BinDir
	var etcd, api, crds, ready, stop time.Duration
	var runs int
	for b.Loop() {
		runs++
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		begin := time.Now()
		cp, err := controlplane.Start(ctx, controlplane.Options{BinDir: binDir, ControllerManager: kcm})
		cancel()
		if err != nil {
			b.Fatal(err)
		}
		ready += time.Since(begin)
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
	b.ReportMetric(float64(ready.Milliseconds())/n, "ms-ready/op")
	b.ReportMetric(float64(stop.Milliseconds())/n, "ms-stop/op")
}
