package node

import (
	"os/exec"
	"path/filepath"

	"github.com/imagespec/imagespec-controller/test/framework/proc"
)

type process = proc.Process

func startProcess(name, logPath string, env []string, bin string, args ...string) (*process, error) {
	cmd := exec.Command(bin, args...)
	cmd.Env = env
	// The log's directory (the work dir): the kubelet looks for a docker
	// config.json in its working directory.
	cmd.Dir = filepath.Dir(logPath)
	return proc.StartLogged(name, logPath, cmd)
}
