package node

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// The pod network: pods get an address on the node's bridge, whose host
// side (the subnet's .1) is their default gateway. From there they reach
// the host's own addresses (test/framework/hostaddr, where the test
// servers listen), the Services kube-proxy serves, and, masqueraded, what
// the host reaches (the Debian mirror). Each change to the host is
// recorded in hostState and undone by Stop, or by a later Start when this
// process died.

// masqueradeRule is the iptables rule (nat table, POSTROUTING) that hides
// pod addresses behind the host's for traffic leaving the subnet, tagged
// with the node's work dir so only this node's rule is ever removed.
func masqueradeRule(subnet, workDir string) []string {
	return []string{"POSTROUTING", "-s", subnet, "!", "-d", subnet,
		"-m", "comment", "--comment", "imagespec-node " + filepath.Base(workDir), "-j", "MASQUERADE"}
}

func iptables(args ...string) error {
	// -w: kube-proxy and the CNI plugins take the xtables lock too.
	out, err := exec.Command("iptables", append([]string{"-w", "5"}, args...)...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("iptables %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// enableForwarding turns on IPv4 forwarding (tracked, so restored on
// Stop) and adds the masquerade rule.
func (n *Node) enableForwarding() error {
	if err := os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1"), 0o644); err != nil {
		return fmt.Errorf("enable IPv4 forwarding: %w", err)
	}
	n.state.Masquerade = n.PodSubnet
	if err := n.state.save(); err != nil {
		return err
	}
	return iptables(append([]string{"-t", "nat", "-A"}, masqueradeRule(n.PodSubnet, n.WorkDir)...)...)
}

func removeMasquerade(subnet, workDir string) error {
	rule := masqueradeRule(subnet, workDir)
	if exec.Command("iptables", append([]string{"-w", "5", "-t", "nat", "-C"}, rule...)...).Run() != nil {
		return nil // not there
	}
	return iptables(append([]string{"-t", "nat", "-D"}, rule...)...)
}

// startKubeProxy runs the pinned kube-proxy in iptables mode and returns
// once it reports healthy, i.e. has written the Service rules once.
func (n *Node) startKubeProxy(ctx context.Context) error {
	bin := filepath.Join(n.cp.BinDir, "kube-proxy")
	if _, err := os.Stat(bin); err != nil {
		return fmt.Errorf("kube-proxy binary: %w", err)
	}
	kubeconfig := n.path("kube-proxy.kubeconfig")
	// The apiserver's RBAC binds system:node-proxier to this user.
	if err := n.cp.WriteKubeconfig(kubeconfig, "system:kube-proxy", nil); err != nil {
		return err
	}
	healthz, err := freePort()
	if err != nil {
		return err
	}
	metrics, err := freePort()
	if err != nil {
		return err
	}
	cfg := map[string]any{
		"Kubeconfig": kubeconfig, "NodeName": Name, "PodSubnet": n.PodSubnet,
		"HealthzPort": healthz, "MetricsPort": metrics,
		// NodePorts only on the host's own framework address range, never
		// on the VM's interfaces.
		"NodePortCIDR": "127.0.0.0/8",
	}
	if err := renderTemplate("kube-proxy.yaml.tmpl", n.path("kube-proxy.yaml"), cfg); err != nil {
		return err
	}
	n.state.KubeProxyBin = bin
	if err := n.state.save(); err != nil {
		return err
	}
	p, err := startProcess("kube-proxy", n.path("kube-proxy.log"), n.childEnv(), bin,
		"--config="+n.path("kube-proxy.yaml"), "--v=2")
	if err != nil {
		return err
	}
	n.kubeProxy = p
	return p.WaitHTTP(ctx, &http.Client{Timeout: time.Second}, fmt.Sprintf("http://127.0.0.1:%d/healthz", healthz), 60*time.Second)
}

// cleanupKubeProxy removes the iptables chains and rules kube-proxy wrote.
func cleanupKubeProxy(bin string) error {
	if _, err := os.Stat(bin); err != nil {
		return nil
	}
	out, err := exec.Command(bin, "--cleanup", "--v=0").CombinedOutput()
	if err != nil {
		return fmt.Errorf("kube-proxy --cleanup: %v: %s", err, strings.TrimSpace(string(out)))
	}
	return nil
}
