package integration

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/imagespec/imagespec-controller/test/framework/controlplane"
)

// orphanHelperEnv makes the test binary start a control plane, report it
// and hang, so a test can kill it the way -timeout or a CI cancel would.
const (
	orphanHelperEnv = "IMAGESPEC_CONTROLPLANE_ORPHAN_HELPER"
	// The test owns the helper's (empty) CRD dir: the helper gets killed
	// and could not remove one of its own.
	orphanCRDDirEnv = "IMAGESPEC_CONTROLPLANE_ORPHAN_CRD_DIR"
)

func orphanHelper() int {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	cp, err := controlplane.Start(ctx, controlplane.Options{BinDir: os.Getenv(controlplane.BinDirEnv), CRDDir: os.Getenv(orphanCRDDirEnv)})
	cancel()
	if err != nil {
		fmt.Println("ERROR", strings.ReplaceAll(err.Error(), "\n", " | "))
		return 1
	}
	var pids []string
	for _, pid := range cp.PIDs() {
		pids = append(pids, strconv.Itoa(pid))
	}
	fmt.Println("WORKDIR", cp.WorkDir)
	fmt.Println("PIDS", strings.Join(pids, " "))
	// Should the test die first, the helper follows (stopping its control
	// plane) instead of lingering.
	parent := os.Getppid()
	for os.Getppid() == parent {
		time.Sleep(200 * time.Millisecond)
	}
	_ = cp.Stop()
	return 1
}

func TestControlPlaneChildrenDieWithTheirParent(t *testing.T) {
	shared := SharedControlPlane(t)
	ctx := testContext(t, 3*time.Minute)

	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), orphanHelperEnv+"=1", orphanCRDDirEnv+"="+t.TempDir(), controlplane.BinDirEnv+"="+shared.BinDir, controlplane.KeepWorkDirEnv+"=")
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})

	var workDir string
	var pids []int
	scanner := bufio.NewScanner(stdout)
	for pids == nil && scanner.Scan() {
		fields := strings.Fields(scanner.Text())
		if len(fields) == 0 {
			continue
		}
		switch fields[0] {
		case "ERROR":
			t.Fatalf("helper: %s", scanner.Text())
		case "WORKDIR":
			workDir = fields[1]
		case "PIDS":
			pids = []int{}
			for _, f := range fields[1:] {
				pid, err := strconv.Atoi(f)
				if err != nil {
					t.Fatal(err)
				}
				pids = append(pids, pid)
			}
		}
	}
	if len(pids) != 2 || workDir == "" {
		t.Fatalf("helper reported pids %v, work dir %q", pids, workDir)
	}
	for _, pid := range pids {
		if !processAlive(pid) {
			t.Fatalf("pid %d not running while the helper lives", pid)
		}
	}

	// SIGKILL: no deferred Stop runs, only the kernel's Pdeathsig.
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	err = wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, 15*time.Second, true, func(context.Context) (bool, error) {
		for _, pid := range pids {
			if processAlive(pid) {
				return false, nil
			}
		}
		return true, nil
	})
	if err != nil {
		t.Fatalf("control plane processes %v outlived their parent", pids)
	}

	// The files stay behind; the next Start (here called directly) removes them.
	if _, err := os.Stat(workDir); err != nil {
		t.Fatalf("work dir of the killed helper: %v", err)
	}
	controlplane.RemoveStaleWorkDirs(t.Logf)
	if _, err := os.Stat(workDir); !os.IsNotExist(err) {
		_ = os.RemoveAll(workDir)
		t.Errorf("stale work dir %s not removed (stat: %v)", workDir, err)
	}
}

// processAlive reports whether pid exists and is not a zombie.
func processAlive(pid int) bool {
	if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
		return false
	}
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	// The state follows the parenthesised command name.
	s := string(stat)
	if i := strings.LastIndexByte(s, ')'); i >= 0 && i+2 < len(s) {
		return s[i+2] != 'Z'
	}
	return true
}

func processGroupAlive(pgid int) bool {
	return !errors.Is(syscall.Kill(-pgid, 0), syscall.ESRCH)
}
