// Command control-plane is one multi-call binary holding a real Kubernetes
// control plane for integration-operator's tests: `etcd`, `kube-apiserver`,
// `kube-controller-manager` run the upstream commands unchanged, and
// `cluster` starts all three on 127.0.0.1 (see cluster.go). One binary means
// one link step; the orchestrator re-executes itself for each component.
package main

import (
	"fmt"
	"os"
	"path/filepath"

	"go.etcd.io/etcd/server/v3/etcdmain"
	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"
	_ "k8s.io/component-base/metrics/prometheus/clientgo"
	_ "k8s.io/component-base/metrics/prometheus/version"
	apiserver "k8s.io/kubernetes/cmd/kube-apiserver/app"
	controllermanager "k8s.io/kubernetes/cmd/kube-controller-manager/app"
)

const usage = `usage: control-plane COMMAND [flags]

commands:
  cluster run|start|stop    the orchestrator: etcd + kube-apiserver + kube-controller-manager
  etcd                      upstream etcd (etcdmain)
  kube-apiserver            upstream kube-apiserver
  kube-controller-manager   upstream kube-controller-manager
  version                   the pinned versions
`

func main() {
	// Called through a symlink named after a component, behave as that component.
	cmd := filepath.Base(os.Args[0])
	args := os.Args[1:]
	if cmd == "control-plane" {
		if len(args) == 0 {
			fmt.Fprint(os.Stderr, usage)
			os.Exit(2)
		}
		cmd, args = args[0], args[1:]
	}
	switch cmd {
	case "etcd":
		etcdmain.Main(append([]string{"etcd"}, args...))
	case "kube-apiserver":
		c := apiserver.NewAPIServerCommand()
		c.SetArgs(args)
		os.Exit(cli.Run(c))
	case "kube-controller-manager":
		c := controllermanager.NewControllerManagerCommand()
		c.SetArgs(args)
		os.Exit(cli.Run(c))
	case "cluster":
		os.Exit(clusterMain(args))
	case "version":
		printVersions()
	default:
		fmt.Fprintf(os.Stderr, "control-plane: unknown command %q\n\n%s", cmd, usage)
		os.Exit(2)
	}
}
