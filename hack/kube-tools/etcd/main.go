// Command etcd is the etcd server at the version pinned in this module's
// go.mod, built from the module proxy so tests do not depend on a host etcd.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
