package main

import (
	"fmt"
	"runtime"
	"runtime/debug"
)

// Filled from the module graph at start, so they cannot drift from go.mod.
var kubernetesVersion, etcdVersion = moduleVersion("k8s.io/kubernetes"), moduleVersion("go.etcd.io/etcd/server/v3")

func moduleVersion(path string) string {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	for _, m := range info.Deps {
		if m.Path == path {
			if m.Replace != nil {
				return m.Replace.Version
			}
			return m.Version
		}
	}
	return "unknown"
}

func printVersions() {
	fmt.Printf("kubernetes %s\netcd %s\ngo %s\n", kubernetesVersion, etcdVersion, runtime.Version())
}
