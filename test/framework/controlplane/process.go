package controlplane

import (
	"bytes"
	"os"
	"os/exec"

	"github.com/imagespec/imagespec-controller/test/framework/proc"
)

type process = proc.Process

func startProcess(name, logPath, bin string, args ...string) (*process, error) {
	cmd := exec.Command(bin, args...)
	// Children do not inherit the test's environment wholesale: proxies or
	// KUBECONFIG from the host must not leak into the control plane.
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}
	return proc.StartLogged(name, logPath, cmd)
}

func logContains(path, s string) bool {
	data, err := os.ReadFile(path)
	return err == nil && bytes.Contains(data, []byte(s))
}
